"""The click path: prompts in, scored candidate masks (RLE + polygons) out, logits kept under a handle."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status
from sqlalchemy.orm import Session

from maskwright.masks import bbox_xywh, mask_to_polygons, rle_encode
from maskwright.predictor import check_prediction, validate_prompt
from maskwright.server.deps import current_user, get_db, get_state
from maskwright.server.routers.images import get_image, image_ref
from maskwright.server.schemas import Candidate, PredictIn, PredictOut
from maskwright.server.state import ServerState
from maskwright.store.models import InteractionEvent, User

router = APIRouter(tags=["predict"])


def candidates_of(masks: np.ndarray, scores: np.ndarray, tolerance: float) -> list[Candidate]:
    """Encode (K, H, W) bool masks as candidates: RLE, polygons (``tolerance`` px), XYWH bbox, area."""
    out = []
    for k in range(len(masks)):
        m = masks[k]
        area = int(np.count_nonzero(m))
        out.append(
            Candidate(
                index=k,
                score=float(scores[k]),
                rle=rle_encode(m),
                polygons=mask_to_polygons(m, tolerance=tolerance) if area else [],
                bbox=bbox_xywh(m),
                area=area,
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
    with state.sessions() as db:
        db.add(InteractionEvent(**event))
        db.commit()


@router.post("/images/{iid}/predict", response_model=PredictOut)
def predict(
    iid: int,
    body: PredictIn,
    background: BackgroundTasks,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> PredictOut:
    img = get_image(db, iid)
    ref = image_ref(img)
    db.close()  # release the connection before a possibly long on-demand encode
    try:
        mask_input = state.predictions.get(body.mask_handle, iid) if body.mask_handle else None
        coords = np.asarray(body.points, np.float32).reshape(-1, 2) if body.points else None
        labels = np.asarray(body.labels, np.int32) if body.points or body.labels else None
        if coords is not None and any(len(p) != 2 for p in body.points):
            raise ValueError("points must be [[x, y], ...] pixel pairs")
        # Validate against the stored size before any encode, so bad prompts fail fast.
        validate_prompt((img.height, img.width), coords, labels, body.box, mask_input)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None

    t0 = time.perf_counter()
    was_ready = state.embeddings.status(ref.sha256) == "ready"
    state.embeddings.move_on_after(ref.sha256)
    try:
        emb = state.embeddings.get(ref)
    except RuntimeError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from None
    t1 = time.perf_counter()
    try:
        prompt = validate_prompt(emb.original_size, coords, labels, body.box, mask_input)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    k = 3 if body.multimask else 1
    pred = state.engine.decode(emb, prompt, body.multimask)
    check_prediction(pred, emb.original_size, k)
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
    return PredictOut(
        handle=handle,
        candidates=candidates,
        engine=state.engine.name,
        decode_ms=round((t2 - t1) * 1000, 2),
        embed_ms=round((t1 - t0) * 1000, 2),
    )
