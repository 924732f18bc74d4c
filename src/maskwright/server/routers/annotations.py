"""Annotations with optimistic concurrency: updates and deletes name the version they saw.

The version check and the write are one SQL statement (``UPDATE ... WHERE id = ? AND version = ?``),
so of two concurrent writers of the same version exactly one wins; the other gets 409.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from maskwright.exchange.coco import annotation_from_rle
from maskwright.masks import rle_decode
from maskwright.server.deps import AuthUser, current_user, get_db, get_state, not_found
from maskwright.server.routers.images import get_image
from maskwright.server.schemas import AnnotationIn, AnnotationOut, AnnotationPatch, PolygonPart
from maskwright.server.state import ServerState
from maskwright.store.models import Annotation, Image, Label, User, utcnow

router = APIRouter(tags=["annotations"])


def annotation_out(a: Annotation, author: str | None) -> AnnotationOut:
    return AnnotationOut(
        id=a.id,
        image_id=a.image_id,
        label_id=a.label_id,
        rle=a.rle,
        polygons=a.polygons,
        bbox=a.bbox,
        area=a.area,
        source=a.source,
        score=a.score,
        author=author,
        version=a.version,
        created_at=a.created_at,
        updated_at=a.updated_at,
    )


def author_names(db: Session, ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(db.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def check_label(db: Session, label_id: int, img: Image) -> None:
    lab = db.get(Label, label_id)
    if lab is None or lab.project_id != img.project_id:
        raise HTTPException(422, f"label {label_id} is not a label of project {img.project_id}")


def mask_fields(rle: dict, polygons: list[PolygonPart] | None, img: Image, tolerance: float) -> dict:
    """RLE checked against the image size, with derived polygons / bbox / area."""
    size = [int(v) for v in rle["size"]]
    if size != [img.height, img.width]:
        raise HTTPException(
            422,
            f"rle size {size} does not match image {img.id} of [H, W] = [{img.height}, {img.width}]",
        )
    try:
        rle_decode(rle)
        fields = annotation_from_rle({"size": size, "counts": rle["counts"]}, polygon_tolerance=tolerance)
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, f"rle is not a valid COCO RLE: {exc}") from None
    if polygons is not None:
        fields["polygons"] = [p.model_dump() for p in polygons]
    return fields


@router.get("/images/{iid}/annotations", response_model=list[AnnotationOut])
def list_annotations(
    iid: int, _: AuthUser = Depends(current_user), db: Session = Depends(get_db)
) -> list[AnnotationOut]:
    get_image(db, iid)
    rows = db.execute(select(Annotation).where(Annotation.image_id == iid).order_by(Annotation.id)).scalars().all()
    names = author_names(db, {a.author_id for a in rows})
    return [annotation_out(a, names.get(a.author_id)) for a in rows]


@router.post("/images/{iid}/annotations", response_model=AnnotationOut, status_code=201)
def create_annotation(
    iid: int,
    body: AnnotationIn,
    user: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> AnnotationOut:
    img = get_image(db, iid)
    check_label(db, body.label_id, img)
    fields = mask_fields(body.rle.model_dump(), body.polygons, img, state.settings.polygon_tolerance)
    now = utcnow()
    a = Annotation(
        image_id=iid,
        label_id=body.label_id,
        source=body.source,
        score=body.score,
        author_id=user.id,
        version=1,
        created_at=now,
        updated_at=now,
        **fields,
    )
    db.add(a)
    if img.status == "new":
        img.status = "in_progress"
    db.commit()
    return annotation_out(a, user.username)


def _conflict_or_missing(db: Session, aid: int, version: int) -> HTTPException:
    current = db.execute(select(Annotation.version).where(Annotation.id == aid)).scalar_one_or_none()
    if current is None:
        return not_found("annotation", aid)
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"annotation {aid} is at version {current}, not {version}: someone changed it; reload and retry",
    )


@router.patch("/annotations/{aid}", response_model=AnnotationOut)
def update_annotation(
    aid: int,
    body: AnnotationPatch,
    user: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
    state: ServerState = Depends(get_state),
) -> AnnotationOut:
    a = db.get(Annotation, aid)
    if a is None:
        raise not_found("annotation", aid)
    img = db.get(Image, a.image_id)
    values: dict = {}
    if body.label_id is not None:
        check_label(db, body.label_id, img)
        values["label_id"] = body.label_id
    if body.rle is not None:
        values.update(mask_fields(body.rle.model_dump(), body.polygons, img, state.settings.polygon_tolerance))
    elif body.polygons is not None:
        values["polygons"] = [p.model_dump() for p in body.polygons]
    result = db.execute(
        update(Annotation)
        .where(Annotation.id == aid, Annotation.version == body.version)
        .values(**values, version=Annotation.version + 1, updated_at=utcnow(), author_id=user.id)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.rollback()
        raise _conflict_or_missing(db, aid, body.version)
    db.commit()
    db.expire_all()
    a = db.get(Annotation, aid)
    return annotation_out(a, user.username)


@router.delete("/annotations/{aid}", status_code=204)
def delete_annotation(
    aid: int,
    version: int = Query(..., description="the version the client last saw"),
    _: AuthUser = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    result = db.execute(
        delete(Annotation)
        .where(Annotation.id == aid, Annotation.version == version)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.rollback()
        raise _conflict_or_missing(db, aid, version)
    db.commit()
    return Response(status_code=204)
