"""Pydantic models of the HTTP API (see docs/api.md). Coordinates: original-image pixels; boxes out XYWH."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Role = Literal["admin", "annotator", "reviewer"]
ImageStatus = Literal["new", "in_progress", "done", "reviewed"]
EmbeddingStatus = Literal["none", "queued", "computing", "ready", "failed"]
Source = Literal["click", "box", "auto", "import"]
HEX_COLOR = r"^#[0-9a-fA-F]{6}$"


class RLE(BaseModel):
    """COCO compressed RLE of a mask at the image size."""

    size: list[int] = Field(min_length=2, max_length=2, description="[H, W]")
    counts: str


class PolygonPart(BaseModel):
    exterior: list[float]
    holes: list[list[float]] = []


# --- auth ----------------------------------------------------------------------------------------
class LoginIn(BaseModel):
    username: str
    password: str


class UserOut(BaseModel):
    id: int
    username: str
    role: Role


class LoginOut(BaseModel):
    token: str
    user: UserOut


class PasswordIn(BaseModel):
    current_password: str
    new_password: str = Field(min_length=8)


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8)
    role: Role


class Health(BaseModel):
    status: str
    version: str
    engine: str
    engine_is_fallback: bool
    engine_note: str
    database: str


# --- projects ------------------------------------------------------------------------------------
class LabelIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    color: str = Field(pattern=HEX_COLOR, description="#rrggbb")


class LabelPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    color: str | None = Field(default=None, pattern=HEX_COLOR)


class LabelOut(BaseModel):
    id: int
    name: str
    color: str


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    labels: list[LabelIn] = []


class ProjectPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class ProjectOut(BaseModel):
    id: int
    name: str
    labels: list[LabelOut]
    image_count: int
    created_at: datetime


# --- images --------------------------------------------------------------------------------------
class ImageOut(BaseModel):
    id: int
    project_id: int
    file_name: str
    width: int
    height: int
    status: ImageStatus
    embedding_status: EmbeddingStatus
    annotation_count: int


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int


class ImagePatch(BaseModel):
    status: ImageStatus


# --- predict -------------------------------------------------------------------------------------
class PredictIn(BaseModel):
    points: list[list[float]] = Field(default=[], description="[[x, y], ...] pixels of the original image")
    labels: list[int] = Field(default=[], description="1 positive, 0 negative; one per point")
    box: list[float] | None = Field(default=None, description="XYXY pixels")
    mask_handle: str | None = Field(default=None, description="'<handle>:<candidate index>' of a previous response")
    multimask: bool = True


class Candidate(BaseModel):
    index: int
    score: float
    rle: RLE
    polygons: list[PolygonPart]
    bbox: list[int] = Field(description="XYWH pixels")
    area: int


class PredictOut(BaseModel):
    handle: str
    candidates: list[Candidate]
    engine: str
    decode_ms: float
    embed_ms: float = Field(0.0, description="time spent computing the embedding on demand (0 when cached)")


# --- annotations ---------------------------------------------------------------------------------
class AnnotationIn(BaseModel):
    label_id: int
    rle: RLE
    source: Source
    score: float | None = None
    polygons: list[PolygonPart] | None = None


class AnnotationPatch(BaseModel):
    version: int
    label_id: int | None = None
    rle: RLE | None = None
    polygons: list[PolygonPart] | None = None


class AnnotationOut(BaseModel):
    id: int
    image_id: int
    label_id: int
    rle: RLE
    polygons: list[PolygonPart]
    bbox: list[float]
    area: int
    source: Source
    score: float | None
    author: str | None
    version: int
    created_at: datetime
    updated_at: datetime


# --- events --------------------------------------------------------------------------------------
class EventIn(BaseModel):
    kind: str = Field(min_length=1, max_length=32)
    t: float | None = None
    x: float | None = None
    y: float | None = None
    label: int | None = None
    candidate: int | None = None
    score: float | None = None
    mask_change: float | None = None
    data: dict | None = None

    @field_validator("kind")
    @classmethod
    def _kind_is_word(cls, v: str) -> str:
        if not v.replace("_", "").isalnum():
            raise ValueError("kind must be a word like 'click' or 'accept'")
        return v


class Stored(BaseModel):
    stored: int


# --- automask / import ---------------------------------------------------------------------------
class AutomaskIn(BaseModel):
    image_id: int


class Proposal(BaseModel):
    rle: RLE
    polygons: list[PolygonPart]
    bbox: list[int]
    area: int
    predicted_iou: float
    stability_score: float


class AutomaskOut(BaseModel):
    proposals: list[Proposal]


class ImportOut(BaseModel):
    annotations: int
    images_matched: int = 0
    images_missing: list[str] = []
    labels_created: list[str] = []
