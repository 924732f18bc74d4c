"""Image upload (multi-file, all or nothing), listing, bytes, status and embedding requests."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from maskwright.exchange.images import add_images, check_image
from maskwright.imageio import ImageTooLargeError
from maskwright.server.deps import AuthUser, current_user, get_db, get_state, not_found, require_role
from maskwright.server.embeddings import ImageRef
from maskwright.server.schemas import ImageOut, ImagePage, ImagePatch, ImageStatus
from maskwright.server.state import ServerState
from maskwright.store.files import MEDIA_TYPES
from maskwright.store.models import Annotation, Image, Project

router = APIRouter(tags=["images"])
PREFETCH = 3  # images after the open one whose embeddings are computed ahead of the annotator


def image_ref(img: Image) -> ImageRef:
    return ImageRef(img.id, img.sha256, img.format)


def annotation_counts(db: Session, image_ids: list[int]) -> dict[int, int]:
    if not image_ids:
        return {}
    rows = db.execute(
        select(Annotation.image_id, func.count(Annotation.id))
        .where(Annotation.image_id.in_(image_ids))
        .group_by(Annotation.image_id)
    )
    return {iid: n for iid, n in rows}


def image_out(state: ServerState, img: Image, annotation_count: int) -> ImageOut:
    return ImageOut(
        id=img.id,
        project_id=img.project_id,
        file_name=img.file_name,
        width=img.width,
        height=img.height,
        status=img.status,
        embedding_status=state.embeddings.status(img.sha256),
        annotation_count=annotation_count,
    )


def images_out(state: ServerState, db: Session, images: list[Image]) -> list[ImageOut]:
    counts = annotation_counts(db, [img.id for img in images])
    return [image_out(state, img, counts.get(img.id, 0)) for img in images]


def get_image(db: Session, iid: int) -> Image:
    img = db.get(Image, iid)
    if img is None:
        raise not_found("image", iid)
    return img


def open_project(state: ServerState, db: Session, pid: int) -> None:
    """Point the embedding worker at a project's images (once per project switch)."""
    if state.embeddings.project_id == pid:
        return
    rows = db.execute(select(Image).where(Image.project_id == pid).order_by(Image.id)).scalars().all()
    state.embeddings.open_project([image_ref(img) for img in rows], project_id=pid)


@router.post("/projects/{pid}/images", response_model=list[ImageOut], status_code=201)
def upload_images(
    pid: int,
    files: list[UploadFile] = File(..., description="image files (repeat the field for several)"),
    _: AuthUser = Depends(require_role("admin", "annotator")),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> list[ImageOut]:
    project = db.get(Project, pid)
    if project is None:
        raise not_found("project", pid)
    limit = state.settings.max_upload_bytes
    checked = []
    for up in files:  # check every file before storing any
        data = up.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(
                413,
                f"{up.filename or 'file'} is over the upload limit of {limit // 2**20} MiB; nothing was stored",
            )
        try:
            checked.append(check_image(data, up.filename, max_pixels=state.settings.max_pixels))
        except ImageTooLargeError as exc:
            raise HTTPException(413, f"{exc}; nothing was stored") from None
        except ValueError as exc:
            raise HTTPException(422, f"{exc}; nothing was stored") from None
    try:
        images = add_images(db, state.files, project, checked)
        db.commit()
    except IntegrityError:  # the same bytes uploaded to this project by a concurrent request
        db.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, "an image of this request was uploaded at the same time by another request; retry"
        ) from None
    if state.embeddings.project_id == pid:
        state.embeddings.enqueue([image_ref(img) for img in images])
    return images_out(state, db, images)


@router.get("/projects/{pid}/images", response_model=ImagePage)
def list_images(
    pid: int,
    status_filter: ImageStatus | None = Query(None, alias="status"),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> ImagePage:
    if db.get(Project, pid) is None:
        raise not_found("project", pid)
    where = [Image.project_id == pid]
    if status_filter is not None:
        where.append(Image.status == status_filter)
    total = db.execute(select(func.count(Image.id)).where(*where)).scalar_one()
    rows = db.execute(select(Image).where(*where).order_by(Image.id).offset(offset).limit(limit)).scalars().all()
    open_project(state, db, pid)
    return ImagePage(items=images_out(state, db, rows), total=total)


@router.get("/images/{iid}", response_model=ImageOut)
def read_image(
    iid: int,
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> ImageOut:
    return images_out(state, db, [get_image(db, iid)])[0]


@router.get("/images/{iid}/file")
def image_file(
    iid: int,
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> FileResponse:
    img = get_image(db, iid)
    path = state.files.image_path(img.sha256, img.format)
    if not path.exists():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"file of image {iid} is missing from the data directory")
    return FileResponse(
        path, media_type=MEDIA_TYPES.get(img.format, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=86400"},
    )  # fmt: skip


@router.patch("/images/{iid}", response_model=ImageOut)
def update_image(
    iid: int,
    body: ImagePatch,
    user: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> ImageOut:
    img = get_image(db, iid)
    if (body.status == "reviewed" or img.status == "reviewed") and user.role not in ("admin", "reviewer"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {user.role!r} may not set or undo 'reviewed'; needs reviewer or admin"
        )
    img.status = body.status
    db.commit()
    return images_out(state, db, [img])[0]


@router.post("/images/{iid}/embed", response_model=ImageOut)
def request_embedding(
    iid: int,
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> ImageOut:
    """Queue this image first, then the next few of its project, ahead of everything else."""
    img = get_image(db, iid)
    open_project(state, db, img.project_id)
    following = db.execute(
        select(Image).where(Image.project_id == img.project_id, Image.id > img.id).order_by(Image.id).limit(PREFETCH)
    ).scalars()
    state.embeddings.enqueue([image_ref(img)] + [image_ref(i) for i in following], front=True)
    return images_out(state, db, [img])[0]
