"""Segment everything: mask proposals for one image of a project (``maskwright.automask``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy.orm import Session

from maskwright.imageio import decode_image
from maskwright.server.deps import AuthUser, current_user, get_db, get_state, not_found
from maskwright.server.routers.images import get_image, image_ref
from maskwright.server.routers.predict import candidates_of
from maskwright.server.schemas import AutomaskIn, AutomaskOut, Proposal
from maskwright.server.state import ServerState
from maskwright.store.models import Project

router = APIRouter(tags=["automask"])


@router.post("/projects/{pid}/automask", response_model=AutomaskOut)
def automask(
    pid: int,
    body: AutomaskIn,
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> AutomaskOut:
    if db.get(Project, pid) is None:
        raise not_found("project", pid)
    img = get_image(db, body.image_id)
    if img.project_id != pid:
        raise HTTPException(422, f"image {img.id} is not in project {pid}")
    try:  # built separately; the server must run without it
        from maskwright.automask import AutoMaskGenerator
        from maskwright.predictor import Predictor, image_key
    except ImportError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"segment-everything is not available in this install: {exc}"
        ) from None
    rgb = decode_image(state.files.read_image(img.sha256, img.format), max_pixels=2**62)
    predictor = Predictor(state.engine, cache_size=1)
    # Reuse the server's embedding of the whole image instead of encoding it again.
    emb = state.embeddings.get(image_ref(img))
    predictor._cache[image_key(rgb)] = emb
    records = AutoMaskGenerator(predictor, output_mode="binary_mask").generate(rgb)
    proposals = []
    for r in records:
        (cand,) = candidates_of(r["segmentation"][None], [r["predicted_iou"]], state.settings.polygon_tolerance)
        proposals.append(
            Proposal(
                rle=cand.rle,
                polygons=cand.polygons,
                bbox=cand.bbox,
                area=cand.area,
                predicted_iou=float(r["predicted_iou"]),
                stability_score=float(r["stability_score"]),
            )
        )
    return AutomaskOut(proposals=proposals)
