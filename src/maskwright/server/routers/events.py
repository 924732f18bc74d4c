"""The interaction log: every prompt and choice while annotating (input of a later quality model)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException
from sqlalchemy.orm import Session

from maskwright.server.deps import AuthUser, current_user, get_db
from maskwright.server.routers.images import get_image
from maskwright.server.schemas import EventIn, Stored
from maskwright.store.models import InteractionEvent

router = APIRouter(tags=["events"])
MAX_EVENTS = 1000


@router.post("/images/{iid}/events", response_model=Stored)
def add_events(
    iid: int,
    events: list[EventIn] = Body(...),
    user: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
) -> Stored:
    get_image(db, iid)
    if len(events) > MAX_EVENTS:
        raise HTTPException(413, f"at most {MAX_EVENTS} events per request")
    db.add_all(InteractionEvent(image_id=iid, user_id=user.id, **e.model_dump()) for e in events)
    db.commit()
    return Stored(stored=len(events))
