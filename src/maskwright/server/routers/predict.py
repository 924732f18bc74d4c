"""The click path: prompts in, scored candidate masks (RLE + polygons) out, logits kept under a handle."""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Response, status
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from maskwright.masks import mask_to_polygons, rle_encode
from maskwright.predictor import check_prediction, validate_prompt
from maskwright.server.deps import AuthUser, current_user, get_db, get_state
from maskwright.server.routers.images import get_image, image_ref
from maskwright.server.schemas import Candidate, PredictIn, PredictOut
from maskwright.server.state import ServerState
from maskwright.store.models import InteractionEvent

log = logging.getLogger(__name__)
router = APIRouter(tags=["predict"])


def mask_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight XYXY window (exclusive end) of a bool HxW mask, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def polygons_of(mask: np.ndarray, window: tuple[int, int, int, int], tolerance: float) -> list[dict]:
    """``mask_to_polygons`` on the mask's window plus a 1-px margin (the same outlines, much less work
    for objects small against the image), shifted back to image coordinates."""
    h, w = mask.shape
    x0, y0 = max(window[0] - 1, 0), max(window[1] - 1, 0)
    x1, y1 = min(window[2] + 1, w), min(window[3] + 1, h)
    parts = mask_to_polygons(mask[y0:y1, x0:x1], tolerance=tolerance)
    if x0 == 0 and y0 == 0:
        return parts

    def shift(flat: list[float]) -> list[float]:
        return [v + (x0 if i % 2 == 0 else y0) for i, v in enumerate(flat)]

    return [{"exterior": shift(p["exterior"]), "holes": [shift(hole) for hole in p["holes"]]} for p in parts]


def candidates_of(masks: np.ndarray, scores: np.ndarray, tolerance: float) -> list[Candidate]:
    """Encode (K, H, W) bool masks as candidates: RLE, polygons (``tolerance`` px), XYWH bbox, area."""
    out = []
    for k in range(len(masks)):
        m = masks[k]
        window = mask_window(m)
        x0, y0, x1, y1 = window or (0, 0, 0, 0)
        out.append(
            Candidate(
                index=k,
                score=float(scores[k]),
                rle=rle_encode(m),
                polygons=polygons_of(m, window, tolerance) if window else [],
                bbox=[x0, y0, x1 - x0, y1 - y0],
                area=int(np.count_nonzero(m[y0:y1, x0:x1])),
            )
        )
    return out


def lowres_change(previous: np.ndarray, current: np.ndarray) -> float:
    """1 - IoU of two low-res logit maps thresholded at 0 (cheap proxy for how much a click changed)."""
    a, b = previous > 0, current > 0
    union = np.count_nonzero(a | b)
    return 0.0 if union == 0 else 1.0 - np.count_nonzero(a & b) / union


def log_prompt(state: ServerState, event: dict) -> None:
    """Store the prompt as an interaction event, after the response is sent (off the click path)."""
    try:
        with state.sessions() as db:
            db.add(InteractionEvent(**event))
            db.commit()
    except SQLAlchemyError as exc:  # e.g. the image was deleted meanwhile; the click itself succeeded
        log.warning("could not log a predict event of image %s: %s", event.get("image_id"), exc)


@router.post("/images/{iid}/predict", response_model=PredictOut)
def predict(
    iid: int,
    body: PredictIn,
    background: BackgroundTasks,
    response: Response,
    user: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> PredictOut:
    t_start = time.perf_counter()
    img = get_image(db, iid)
    ref = image_ref(img)
    db.close()  # release the connection before a possibly long on-demand encode
    try:
        mask_input = state.predictions.get(body.mask_handle, iid) if body.mask_handle else None
        if any(len(p) != 2 for p in body.points):
            raise ValueError(f"points must be [[x, y], ...] pixel pairs, got {body.points[:3]}")
        coords = np.asarray(body.points, np.float32).reshape(-1, 2) if body.points else None
        labels = np.asarray(body.labels, np.int32) if body.points or body.labels else None
        # Validate against the stored size before any encode, so bad prompts fail fast.
        validate_prompt((img.height, img.width), coords, labels, body.box, mask_input)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None

    t0 = time.perf_counter()
    was_ready = state.embeddings.status(ref.sha256) == "ready"
    state.embeddings.move_on_after(ref.sha256)
    try:
        emb = state.embeddings.get(ref)
    except (RuntimeError, ValueError, OSError) as exc:  # e.g. the stored file is missing or unreadable
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"could not compute the embedding of image {iid}: {exc}"
        ) from None
    t1 = time.perf_counter()
    try:
        prompt = validate_prompt(emb.original_size, coords, labels, body.box, mask_input)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    k = 3 if body.multimask else 1
    pred = state.engine.decode(emb, prompt, body.multimask)
    check_prediction(pred, emb.original_size, k)
    t_decoded = time.perf_counter()
    candidates = candidates_of(pred.masks, pred.scores, state.settings.polygon_tolerance)
    handle = state.predictions.put(iid, pred.logits)
    t2 = time.perf_counter()

    best = int(np.argmax(pred.scores))
    last = body.points[-1] if body.points else None
    background.add_task(
        log_prompt,
        state,
        {
            "image_id": iid,
            "user_id": user.id,
            "kind": "predict",
            "t": time.time(),
            "x": last[0] if last else None,
            "y": last[1] if last else None,
            "label": body.labels[-1] if body.labels else None,
            "candidate": best,
            "score": float(pred.scores[best]),
            "mask_change": lowres_change(mask_input[0], pred.logits[best]) if mask_input is not None else None,
            "data": {
                "points": body.points,
                "labels": body.labels,
                "box": body.box,
                "mask_handle": body.mask_handle,
                "handle": handle,
                "scores": [float(s) for s in pred.scores],
                "engine": state.engine.name,
                "embedding_was_ready": was_ready,
            },
        },
    )
    # Standard Server-Timing header: lets clients (and benchmarks/bench_server.py) split the round trip.
    response.headers["Server-Timing"] = (
        f"embed;dur={(t1 - t0) * 1000:.2f}, decode;dur={(t_decoded - t1) * 1000:.2f}, "
        f"encode;dur={(t2 - t_decoded) * 1000:.2f}, handler;dur={(time.perf_counter() - t_start) * 1000:.2f}"
    )
    return PredictOut(
        handle=handle,
        candidates=candidates,
        engine=state.engine.name,
        decode_ms=round((t2 - t1) * 1000, 2),
        embed_ms=round((t1 - t0) * 1000, 2),
    )
