"""The click path over HTTP: predict on a GrabCut photo, mask handles, the embedding worker, real uvicorn."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from scipy import ndimage

from conftest import load_grabcut_sample
from maskwright.masks import rle_decode

from .conftest import ADMIN_PASSWORD, free_port, make_settings, png_bytes, start_server, synthetic_photo


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the object pixel farthest from the boundary."""
    dist = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(x), int(y)


def test_predict_on_a_grabcut_photo_covers_the_click(server, grabcut):
    c, h = server.client, server.admin
    pid = server.project()["id"]
    image_path, _ = grabcut[0]
    rgb, gt, _ = load_grabcut_sample(grabcut[0])
    (img,) = server.upload(pid, [(image_path.name, image_path.read_bytes())]).json()
    assert (img["height"], img["width"]) == gt.shape
    x, y = interior_point(gt)

    r = c.post(f"/api/images/{img['id']}/predict", json={"points": [[x, y]], "labels": [1]}, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["engine"] == "classic" and len(out["candidates"]) == 3
    best = max(out["candidates"], key=lambda cand: cand["score"])
    mask = rle_decode(best["rle"])
    assert mask.shape == gt.shape and mask[y, x]
    assert best["area"] == int(mask.sum()) and best["polygons"]
    bx, by, bw, bh = best["bbox"]
    assert bx <= x < bx + bw and by <= y < by + bh

    # Second click: a negative point far from the object, with the chosen candidate fed back.
    ys, xs = np.nonzero(~ndimage.binary_dilation(gt, iterations=15))
    neg = [int(xs[0]), int(ys[0])]
    body = {
        "points": [[x, y], neg],
        "labels": [1, 0],
        "mask_handle": f"{out['handle']}:{best['index']}",
        "multimask": False,
    }
    r2 = c.post(f"/api/images/{img['id']}/predict", json=body, headers=h)
    assert r2.status_code == 200, r2.text
    (single,) = r2.json()["candidates"]
    mask2 = rle_decode(single["rle"])
    assert mask2[y, x] and not mask2[neg[1], neg[0]]
    assert r2.json()["embed_ms"] < r.json()["embed_ms"] or r2.json()["embed_ms"] < 5  # embedding reused

    # Box prompt, and every kind of bad prompt -> 422 with a sentence.
    ys, xs = np.nonzero(gt)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert c.post(f"/api/images/{img['id']}/predict", json={"box": box}, headers=h).status_code == 200
    bad = [
        {"points": [[img["width"] + 5, 3]], "labels": [1]},
        {"points": [[3, 3]], "labels": []},
        {"points": [[3, 3, 3]], "labels": [1]},
        {"points": [[3, 3], [4]], "labels": [1, 1]},
        {"points": [[3, 3]], "labels": [1], "mask_handle": "nope:0"},
        {"points": [[3, 3]], "labels": [1], "mask_handle": f"{out['handle']}:7"},
        {},
    ]
    for body in bad:
        r = c.post(f"/api/images/{img['id']}/predict", json=body, headers=h)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str), (body, r.text)
    assert c.post("/api/images/9999/predict", json={"points": [[1, 1]], "labels": [1]}, headers=h).status_code == 404

    from sqlalchemy import select

    from maskwright.store import InteractionEvent

    deadline = time.time() + 5
    while time.time() < deadline:  # the prompt log is written after the response
        with server.state.sessions() as db:
            logged = db.execute(select(InteractionEvent).where(InteractionEvent.kind == "predict")).scalars().all()
        if len(logged) >= 3:
            break
        time.sleep(0.05)
    assert len(logged) == 3 and logged[1].mask_change is not None and logged[0].x == x


def test_worker_precomputes_embeddings_in_order(server):
    c, h = server.client, server.admin
    pid = server.project()["id"]
    ids = [i["id"] for i in server.upload(pid, [(f"{k}.png", png_bytes(synthetic_photo(k))) for k in range(3)]).json()]
    c.get(f"/api/projects/{pid}/images", headers=h)  # opening the project starts the worker on it
    deadline = time.time() + 30
    while time.time() < deadline:
        statuses = [i["embedding_status"] for i in c.get(f"/api/projects/{pid}/images", headers=h).json()["items"]]
        if statuses == ["ready"] * 3:
            break
        time.sleep(0.05)
    assert statuses == ["ready"] * 3
    emb = server.state.embeddings
    assert emb.computed == 3
    r = c.post(f"/api/images/{ids[2]}/predict", json={"points": [[64, 48]], "labels": [1]}, headers=h)
    assert r.status_code == 200 and r.json()["embed_ms"] < 50  # served from the cache
    assert emb.computed == 3
    assert c.post(f"/api/images/{ids[0]}/embed", headers=h).json()["embedding_status"] == "ready"


def test_encoder_thread_cap_is_lifted_after_each_encode():
    import cv2

    from maskwright.server.embeddings import encoder_thread_cap

    before = cv2.getNumThreads()
    with encoder_thread_cap(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before


def test_automask_proposals(server):
    c, h = server.client, server.admin
    pid = server.project()["id"]
    (img,) = server.upload(pid, [("a.png", png_bytes(synthetic_photo(7)))]).json()
    r = c.post(f"/api/projects/{pid}/automask", json={"image_id": img["id"]}, headers=h)
    try:
        import maskwright.automask  # noqa: F401  (built separately; the server must run without it)
    except ImportError:
        assert r.status_code == 503 and "segment-everything is not available" in r.json()["detail"]
        return
    assert r.status_code == 200, r.text
    proposals = r.json()["proposals"]
    assert proposals and all(0 <= p["predicted_iou"] <= 1 for p in proposals)
    for p in proposals[:5]:
        mask = rle_decode(p["rle"])
        assert mask.shape == (96, 128) and int(mask.sum()) == p["area"]
    # The bright disc in the middle of the photo is one of the proposals.
    yy, xx = np.mgrid[:96, :128]
    disc = (yy - 48) ** 2 + (xx - 64) ** 2 < 24**2
    best = max((rle_decode(p["rle"]) & disc).sum() / (rle_decode(p["rle"]) | disc).sum() for p in proposals)
    assert best > 0.6
    other = server.project("other")["id"]
    assert c.post(f"/api/projects/{other}/automask", json={"image_id": img["id"]}, headers=h).status_code == 422


def test_embedding_service_order_and_on_demand(tmp_path):
    from maskwright.engines.registry import create_engine
    from maskwright.server.embeddings import EmbeddingService, ImageRef
    from maskwright.store import FileStore

    files = FileStore(tmp_path)
    refs = []
    for k in range(4):
        sha, _ = files.put_image(png_bytes(synthetic_photo(k, 40, 60)), "PNG")
        refs.append(ImageRef(k + 1, sha, "PNG"))
    svc = EmbeddingService(create_engine("classic"), files, memory_items=2, encoder_threads=0)
    svc.open_project(refs, project_id=1)  # worker not started: nothing runs yet
    assert [svc.status(r.sha256) for r in refs] == ["queued"] * 4
    svc.move_on_after(refs[1].sha256)  # the annotator opened image 2
    assert svc.queued() == [3, 4, 1]
    assert [svc.status(r.sha256) for r in refs] == ["queued", "none", "queued", "queued"]
    emb = svc.get(refs[1])  # on demand, in this thread
    assert emb.original_size == (40, 60) and svc.status(refs[1].sha256) == "ready"
    assert files.has_embedding(refs[1].sha256, "classic", emb.engine_version)
    svc.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and any(svc.status(r.sha256) != "ready" for r in refs):
            time.sleep(0.02)
    finally:
        svc.stop()
    assert [svc.status(r.sha256) for r in refs] == ["ready"] * 4 and svc.computed == 4
    # Many requests for one image at once compute it once.
    fresh = EmbeddingService(create_engine("classic"), FileStore(tmp_path / "other"), memory_items=2, encoder_threads=0)
    fresh.files.put_image(png_bytes(synthetic_photo(0, 40, 60)), "PNG")
    got = []
    threads = [threading.Thread(target=lambda: got.append(fresh.get(refs[0]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and fresh.computed == 1 and all(g is got[0] for g in got)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_real_http_server(tmp_path, database_url):
    """One end-to-end run over a real socket: uvicorn in a thread on a free port."""
    import uvicorn

    from maskwright.server.app import create_app

    port = free_port()
    app = create_app(make_settings(tmp_path / "data", database_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        assert server.started
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/api/health").json()["status"] == "ok"
            assert c.get("/api/projects").status_code == 401
            tok = c.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["token"]
            h = {"Authorization": f"Bearer {tok}"}
            p = c.post(
                "/api/projects", json={"name": "http", "labels": [{"name": "a", "color": "#abcdef"}]}, headers=h
            ).json()
            (img,) = c.post(
                f"/api/projects/{p['id']}/images",
                files=[("files", ("x.png", png_bytes(synthetic_photo(5))))],
                headers=h,
            ).json()
            r = c.post(f"/api/images/{img['id']}/predict", json={"points": [[64, 48]], "labels": [1]}, headers=h)
            assert r.status_code == 200
            best = max(r.json()["candidates"], key=lambda cand: cand["score"])
            assert rle_decode(best["rle"])[48, 64]
            assert c.get("/docs").status_code == 200 and "/api/images/{iid}/predict" in c.get("/openapi.json").text
    finally:
        server.should_exit = True
        thread.join(10)


def test_web_ui_is_served_at_root(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>maskwright</title>")
    srv = start_server(make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", web_dir=web))
    try:
        r = srv.client.get("/")
        assert r.status_code == 200 and "maskwright" in r.text
        assert srv.client.get("/api/health").status_code == 200
    finally:
        srv.client.__exit__(None, None, None)
