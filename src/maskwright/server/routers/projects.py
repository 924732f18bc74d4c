"""Projects and their labels."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from maskwright.server.deps import AuthUser, current_user, get_db, not_found, require_role
from maskwright.server.schemas import LabelIn, LabelOut, LabelPatch, ProjectIn, ProjectOut, ProjectPatch
from maskwright.store.models import Image, Label, Project

router = APIRouter(tags=["projects"])
EDITORS = ("admin", "annotator")


def label_out(lab: Label) -> LabelOut:
    return LabelOut(id=lab.id, name=lab.name, color=lab.color.lower())


def project_out(db: Session, p: Project) -> ProjectOut:
    count = db.execute(select(func.count(Image.id)).where(Image.project_id == p.id)).scalar_one()
    return ProjectOut(
        id=p.id, name=p.name, labels=[label_out(lab) for lab in p.labels], image_count=count, created_at=p.created_at
    )


def get_project(db: Session, pid: int) -> Project:
    p = db.get(Project, pid)
    if p is None:
        raise not_found("project", pid)
    return p


def commit_or_conflict(db: Session, what: str) -> None:
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"{what} already exists") from None


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(_: AuthUser = Depends(current_user), db: Session = Depends(get_db)) -> list[ProjectOut]:
    return [project_out(db, p) for p in db.execute(select(Project).order_by(Project.id)).scalars()]


@router.post("/projects", response_model=ProjectOut, status_code=201)
def create_project(
    body: ProjectIn, _: AuthUser = Depends(require_role(*EDITORS)), db: Session = Depends(get_db)
) -> ProjectOut:
    names = [lab.name for lab in body.labels]
    if len(set(names)) != len(names):
        raise HTTPException(422, f"label names must be unique within a project, got {names}")
    p = Project(name=body.name.strip(), labels=[Label(name=lab.name, color=lab.color) for lab in body.labels])
    db.add(p)
    commit_or_conflict(db, f"a project named {body.name!r}")
    return project_out(db, p)


@router.get("/projects/{pid}", response_model=ProjectOut)
def read_project(pid: int, _: AuthUser = Depends(current_user), db: Session = Depends(get_db)) -> ProjectOut:
    return project_out(db, get_project(db, pid))


@router.patch("/projects/{pid}", response_model=ProjectOut)
def update_project(
    pid: int, body: ProjectPatch, _: AuthUser = Depends(require_role(*EDITORS)), db: Session = Depends(get_db)
) -> ProjectOut:
    p = get_project(db, pid)
    if body.name is not None:
        p.name = body.name.strip()
    commit_or_conflict(db, f"a project named {body.name!r}")
    return project_out(db, p)


@router.delete("/projects/{pid}", status_code=204)
def delete_project(
    pid: int,
    _: AuthUser = Depends(require_role("admin")),
    db: Session = Depends(get_db),
) -> Response:
    p = get_project(db, pid)
    db.delete(p)  # images, annotations and events go with it; files stay (content-addressed, maybe shared)
    db.commit()
    return Response(status_code=204)


@router.post("/projects/{pid}/labels", response_model=LabelOut, status_code=201)
def add_label(
    pid: int, body: LabelIn, _: AuthUser = Depends(require_role(*EDITORS)), db: Session = Depends(get_db)
) -> LabelOut:
    p = get_project(db, pid)
    lab = Label(project_id=p.id, name=body.name, color=body.color)
    db.add(lab)
    commit_or_conflict(db, f"a label named {body.name!r} in project {pid}")
    return label_out(lab)


@router.patch("/labels/{lid}", response_model=LabelOut)
def update_label(
    lid: int, body: LabelPatch, _: AuthUser = Depends(require_role(*EDITORS)), db: Session = Depends(get_db)
) -> LabelOut:
    lab = db.get(Label, lid)
    if lab is None:
        raise not_found("label", lid)
    if body.name is not None:
        lab.name = body.name
    if body.color is not None:
        lab.color = body.color
    commit_or_conflict(db, f"a label named {body.name!r}")
    return label_out(lab)


@router.delete("/labels/{lid}", status_code=204)
def delete_label(lid: int, _: AuthUser = Depends(require_role("admin")), db: Session = Depends(get_db)) -> Response:
    """Admin only: deleting a label deletes its annotations."""
    lab = db.get(Label, lid)
    if lab is None:
        raise not_found("label", lid)
    db.delete(lab)
    db.commit()
    return Response(status_code=204)
