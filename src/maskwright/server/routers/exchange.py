"""Project export (COCO, YOLO-seg, PNG masks) and COCO import."""

from __future__ import annotations

import json
import os
import re
import tempfile

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from maskwright.exchange import EXPORT_FORMATS, export_project, import_coco
from maskwright.server.deps import AuthUser, current_user, get_db, get_state, not_found, require_role
from maskwright.server.schemas import ImportOut
from maskwright.server.state import ServerState
from maskwright.store.models import Project

router = APIRouter(tags=["import/export"])
MAX_IMPORT_BYTES = 512 * 2**20


@router.get("/projects/{pid}/export", response_class=FileResponse)
def export(
    pid: int,
    format: str = Query("coco", description=" | ".join(EXPORT_FORMATS)),
    _: AuthUser = Depends(current_user),
    db=Depends(get_db),
    state: ServerState = Depends(get_state),
) -> FileResponse:
    project = db.get(Project, pid)
    if project is None:
        raise not_found("project", pid)
    if format not in EXPORT_FORMATS:
        raise HTTPException(422, f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    media_type, ext = EXPORT_FORMATS[format]
    fd, path = tempfile.mkstemp(prefix="maskwright-export-", suffix=f".{ext}")
    try:
        with os.fdopen(fd, "wb") as out:
            export_project(db, state.files, pid, format, out)
    except BaseException:
        os.unlink(path)
        raise
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", project.name).strip("._") or f"project_{pid}"
    return FileResponse(
        path, media_type=media_type, filename=f"{safe}-{format}.{ext}", background=BackgroundTask(os.unlink, path)
    )


@router.post("/projects/{pid}/import", response_model=ImportOut)
def import_annotations(
    pid: int,
    file: UploadFile = File(..., description="COCO instances JSON"),
    user: AuthUser = Depends(require_role("admin", "annotator")),
    db=Depends(get_db),
) -> ImportOut:
    if db.get(Project, pid) is None:
        raise not_found("project", pid)
    data = file.file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(413, "COCO file over 512 MiB")
    try:
        coco = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(422, f"file is not JSON: {exc}") from None
    try:
        result = import_coco(db, pid, coco, author_id=user.id)
        db.commit()
    except ValueError as exc:
        db.rollback()
        raise HTTPException(422, f"{exc}; nothing was imported") from None
    return ImportOut(**vars(result))
