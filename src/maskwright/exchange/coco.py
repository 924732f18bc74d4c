"""COCO instances: export a project (RLE or polygons) and import annotations into one.

Conventions: ``bbox`` XYWH pixels; ``segmentation`` compressed RLE (``counts`` str) or COCO polygons;
category ids are the label ids; image ids are the store's image ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycocotools import mask as mask_utils
from sqlalchemy import select
from sqlalchemy.orm import Session

from maskwright.masks import coco_segmentation, mask_to_polygons, rle_decode, rle_encode
from maskwright.masks.rle import rle_area, rle_to_bbox
from maskwright.store.models import Annotation, Image, Label, Project, utcnow

DEFAULT_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"]


def project_annotations(db: Session, project_id: int) -> list[tuple[Image, list[Annotation]]]:
    """Images of a project (by id) with their annotations (by id)."""
    images = db.execute(select(Image).where(Image.project_id == project_id).order_by(Image.id)).scalars().all()
    anns = db.execute(
        select(Annotation).join(Image).where(Image.project_id == project_id).order_by(Annotation.id)
    ).scalars()
    by_image: dict[int, list[Annotation]] = {img.id: [] for img in images}
    for a in anns:
        by_image[a.image_id].append(a)
    return [(img, by_image[img.id]) for img in images]


def export_coco(db: Session, project_id: int, polygons: bool = False) -> dict:
    """COCO instances dict of a project; ``polygons`` writes COCO polygons (holes lost) instead of RLE."""
    project = db.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    out = {
        "info": {"description": f"maskwright project {project.name}", "date_created": utcnow().isoformat()},
        "licenses": [],
        "categories": [
            {"id": lab.id, "name": lab.name, "supercategory": "", "color": lab.color} for lab in project.labels
        ],
        "images": [],
        "annotations": [],
    }
    for img, anns in project_annotations(db, project_id):
        out["images"].append({"id": img.id, "file_name": img.file_name, "width": img.width, "height": img.height})
        for a in anns:
            if polygons:
                seg = coco_segmentation(a.polygons) or coco_segmentation(mask_to_polygons(rle_decode(a.rle)))
            else:
                seg = {"size": list(a.rle["size"]), "counts": a.rle["counts"]}
            out["annotations"].append(
                {
                    "id": a.id,
                    "image_id": img.id,
                    "category_id": a.label_id,
                    "segmentation": seg,
                    "area": int(a.area),
                    "bbox": [float(v) for v in a.bbox],
                    "iscrowd": 0,
                    "score": a.score,
                    "attributes": {"source": a.source, "version": a.version},
                }
            )
    return out


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as compressed RLE (str counts)."""
    if isinstance(segmentation, list):
        if not segmentation or not all(isinstance(p, list) and len(p) >= 6 for p in segmentation):
            raise ValueError("polygon segmentation must be a list of [x0, y0, x1, y1, x2, y2, ...] lists")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    if isinstance(segmentation, dict):
        size = [int(v) for v in segmentation.get("size", [])]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image size [H, W] = [{height}, {width}]")
        if isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
            return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        counts = segmentation.get("counts")
        if not isinstance(counts, str):
            raise ValueError("RLE counts must be a string (compressed) or a list of ints (uncompressed)")
        # Canonicalise through a decode/encode so stored RLEs compare equal to ones encoded here.
        return rle_encode(rle_decode({"size": size, "counts": counts}))
    raise ValueError(f"segmentation must be polygons or RLE, got {type(segmentation).__name__}")


@dataclass
class ImportResult:
    annotations: int = 0
    images_matched: int = 0
    images_missing: list[str] = field(default_factory=list)
    labels_created: list[str] = field(default_factory=list)


def annotation_from_rle(rle: dict, polygon_tolerance: float = 1.0) -> dict:
    """Derived columns of an annotation (polygons, XYWH bbox, area) from its RLE."""
    mask = rle_decode(rle)
    return {
        "rle": rle,
        "polygons": mask_to_polygons(mask, tolerance=polygon_tolerance),
        "bbox": [float(v) for v in rle_to_bbox(rle)],
        "area": int(rle_area(rle)),
    }


def import_coco(db: Session, project_id: int, coco: dict, author_id: int | None = None) -> ImportResult:
    """Add the annotations of a COCO instances dict to a project (flushes; the caller commits).

    Images are matched by ``file_name`` (last path component); categories by name, created as labels when
    missing. Raises ``ValueError`` naming the first bad entry; nothing is added then (caller rolls back).
    """
    project = db.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError("COCO file must be a JSON object with 'images', 'annotations' and 'categories' lists")
    cats = coco.get("categories") or []
    anns = coco.get("annotations") or []
    if not isinstance(cats, list) or not isinstance(anns, list):
        raise ValueError("COCO 'categories' and 'annotations' must be lists")
    result = ImportResult()

    labels = {lab.name: lab for lab in project.labels}
    cat_label: dict[int, Label] = {}
    for i, cat in enumerate(cats):
        try:
            cid, name = int(cat["id"]), str(cat["name"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"categories[{i}] must have an integer 'id' and a 'name'") from None
        if name not in labels:
            color = cat.get("color") if isinstance(cat.get("color"), str) else None
            if not color or len(color) != 7 or not color.startswith("#"):
                color = DEFAULT_COLORS[len(labels) % len(DEFAULT_COLORS)]
            labels[name] = Label(project_id=project.id, name=name, color=color)
            db.add(labels[name])
            result.labels_created.append(name)
        cat_label[cid] = labels[name]
    db.flush()

    by_name = {img.file_name: img for img in db.execute(select(Image).where(Image.project_id == project.id)).scalars()}
    coco_images: dict[int, Image | None] = {}
    for i, im in enumerate(coco["images"]):
        try:
            iid, fname = int(im["id"]), str(im["file_name"]).replace("\\", "/").split("/")[-1]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"images[{i}] must have an integer 'id' and a 'file_name'") from None
        img = by_name.get(fname)
        coco_images[iid] = img
        if img is None:
            result.images_missing.append(fname)
            continue
        result.images_matched += 1
        if "width" in im and "height" in im and (int(im["width"]), int(im["height"])) != (img.width, img.height):
            raise ValueError(
                f"images[{i}] {fname!r} is {im['width']}x{im['height']} in the COCO file "
                f"but {img.width}x{img.height} in the project"
            )

    now = utcnow()
    for i, a in enumerate(anns):
        try:
            img = coco_images[int(a["image_id"])]
            label = cat_label[int(a["category_id"])]
            seg = a["segmentation"]
        except KeyError as exc:
            raise ValueError(f"annotations[{i}] refers to a missing {exc.args[0]!r} (or unknown id)") from None
        except (TypeError, ValueError):
            raise ValueError(f"annotations[{i}] must have integer 'image_id' and 'category_id'") from None
        if img is None:
            continue
        try:
            rle = segmentation_to_rle(seg, img.height, img.width)
        except ValueError as exc:
            raise ValueError(f"annotations[{i}]: {exc}") from None
        score = a.get("score")
        db.add(
            Annotation(
                image_id=img.id,
                label_id=label.id,
                source="import",
                score=float(score) if isinstance(score, (int, float)) else None,
                author_id=author_id,
                version=1,
                created_at=now,
                updated_at=now,
                **annotation_from_rle(rle),
            )
        )
        result.annotations += 1
    db.flush()
    return result


def export_events(db: Session, project_id: int) -> dict:
    """The interaction log of a project (every prompt and choice, oldest first), for quality models.

    Each event: ``id, image_id, file_name, user, kind, t, x, y, label, candidate, score, mask_change, data,
    created_at``; ``x, y`` are pixels of the original image.
    """
    from maskwright.store.models import InteractionEvent, User

    project = db.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    rows = db.execute(
        select(InteractionEvent, Image.file_name, User.username)
        .join(Image, InteractionEvent.image_id == Image.id)
        .outerjoin(User, InteractionEvent.user_id == User.id)
        .where(Image.project_id == project_id)
        .order_by(InteractionEvent.id)
    ).all()
    events = [
        {
            "id": e.id,
            "image_id": e.image_id,
            "file_name": file_name,
            "user": username,
            "kind": e.kind,
            "t": e.t,
            "x": e.x,
            "y": e.y,
            "label": e.label,
            "candidate": e.candidate,
            "score": e.score,
            "mask_change": e.mask_change,
            "data": e.data,
            "created_at": e.created_at.isoformat(),
        }
        for e, file_name, username in rows
    ]
    return {"project": project.name, "events": events}
