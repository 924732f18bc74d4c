"""HTTP API tests, each run against SQLite and a real PostgreSQL (see conftest)."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import numpy as np
from PIL import Image as PILImage

from maskwright.masks import rle_decode, rle_encode

from .conftest import ADMIN_PASSWORD, make_settings, png_bytes, start_server, synthetic_photo


def test_health_needs_no_token_and_everything_else_does(server):
    c = server.client
    health = c.get("/api/health").json()
    assert health["status"] == "ok" and health["engine"] == "classic"
    assert health["database"] in ("sqlite", "postgresql")
    assert c.get("/api/projects").status_code == 401
    assert c.get("/api/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/api/auth/login", json={"username": "admin", "password": "wrong-password"}).status_code == 401
    me = c.get("/api/auth/me", headers=server.admin).json()
    assert me["username"] == "admin" and me["role"] == "admin"

    body = {"current_password": "wrong-password", "new_password": "brand-new-pw"}
    assert c.post("/api/auth/password", json=body, headers=server.admin).status_code == 403
    body["current_password"] = ADMIN_PASSWORD
    assert c.post("/api/auth/password", json=body, headers=server.admin).status_code == 204
    assert c.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 401
    server.login("admin", "brand-new-pw")
    assert c.post("/api/auth/logout", headers=server.admin).status_code == 204
    assert c.get("/api/auth/me", headers=server.admin).status_code == 401  # revoked at once, despite the cache


def test_roles_are_enforced(server):
    c = server.client
    pid = server.project()["id"]
    annotator = server.add_user("ann", "annotator")
    reviewer = server.add_user("rev", "reviewer")
    (img,) = server.upload(pid, [("a.png", png_bytes(synthetic_photo(1)))]).json()

    assert c.delete(f"/api/projects/{pid}", headers=annotator).status_code == 403
    assert (
        c.post(
            "/api/users", json={"username": "x", "password": "12345678", "role": "admin"}, headers=annotator
        ).status_code
        == 403
    )
    assert server.upload(pid, [("b.png", png_bytes(synthetic_photo(2)))], headers=reviewer).status_code == 403
    again = {"username": "ann", "password": "12345678", "role": "reviewer"}
    assert c.post("/api/users", json=again, headers=server.admin).status_code == 409
    assert [u["username"] for u in c.get("/api/users", headers=server.admin).json()] == ["admin", "ann", "rev"]
    # Annotators mark done; only reviewers (and admins) mark reviewed.
    assert c.patch(f"/api/images/{img['id']}", json={"status": "done"}, headers=annotator).status_code == 200
    assert c.patch(f"/api/images/{img['id']}", json={"status": "reviewed"}, headers=annotator).status_code == 403
    r = c.patch(f"/api/images/{img['id']}", json={"status": "reviewed"}, headers=reviewer)
    assert r.status_code == 200 and r.json()["status"] == "reviewed"
    assert c.patch(f"/api/images/{img['id']}", json={"status": "done"}, headers=annotator).status_code == 403
    assert c.delete(f"/api/projects/{pid}", headers=server.admin).status_code == 204
    assert c.get(f"/api/projects/{pid}", headers=server.admin).status_code == 404


def test_bad_uploads_store_nothing(server):
    c = server.client
    pid = server.project()["id"]
    good = ("good.png", png_bytes(synthetic_photo(1)))
    corrupt = ("broken.jpg", png_bytes(synthetic_photo(2), "JPEG")[:300])
    not_image = ("notes.png", b"this is text, not an image")
    for bad in (corrupt, not_image):
        r = server.upload(pid, [good, bad])
        assert r.status_code == 422, r.text
        assert bad[0] in r.json()["detail"]
    huge = np.zeros((2000, 3000, 3), np.uint8)  # 6 MP, over a 5 MP limit
    server.state.settings.max_pixels = 5_000_000
    r = server.upload(pid, [good, ("huge.png", png_bytes(huge))])
    assert r.status_code == 413 and "MP" in r.json()["detail"]
    assert c.get(f"/api/projects/{pid}/images", headers=server.admin).json()["total"] == 0
    images_dir = server.state.files.images_dir
    assert not images_dir.exists() or not any(p.is_file() for p in images_dir.rglob("*"))

    # Type comes from the content: a PNG named .jpg is a PNG; path components never reach the disk.
    r = server.upload(pid, [("../../../etc/evil.jpg", good[1])])
    assert r.status_code == 201, r.text
    (img,) = r.json()
    assert img["file_name"] == "evil.jpg" and (img["width"], img["height"]) == (128, 96)
    stored = [p for p in images_dir.rglob("*") if p.is_file()]
    assert len(stored) == 1 and stored[0].suffix == ".png" and "evil" not in stored[0].name
    got = c.get(f"/api/images/{img['id']}/file", headers=server.admin)
    assert got.status_code == 200 and got.content == good[1] and got.headers["content-type"] == "image/png"


def test_image_list_pagination_and_status_filter(server):
    c, h = server.client, server.admin
    pid = server.project()["id"]
    r = server.upload(pid, [(f"im{k}.png", png_bytes(synthetic_photo(k, 40, 50))) for k in range(5)])
    assert r.status_code == 201 and [i["file_name"] for i in r.json()] == [f"im{k}.png" for k in range(5)]
    ids = [i["id"] for i in r.json()]
    page = c.get(f"/api/projects/{pid}/images?offset=1&limit=2", headers=h).json()
    assert page["total"] == 5 and [i["id"] for i in page["items"]] == ids[1:3]
    c.patch(f"/api/images/{ids[3]}", json={"status": "done"}, headers=h)
    done = c.get(f"/api/projects/{pid}/images?status=done", headers=h).json()
    assert done["total"] == 1 and done["items"][0]["id"] == ids[3]
    assert c.get(f"/api/projects/{pid}/images?status=bogus", headers=h).status_code == 422
    assert c.get(f"/api/projects/{pid}", headers=h).json()["image_count"] == 5


def test_projects_and_labels_crud(server):
    c, h = server.client, server.admin
    p = server.project("crud")
    assert c.post("/api/projects", json={"name": "crud"}, headers=h).status_code == 409
    assert c.patch(f"/api/projects/{p['id']}", json={"name": "renamed"}, headers=h).json()["name"] == "renamed"
    lab = c.post(f"/api/projects/{p['id']}/labels", json={"name": "bird", "color": "#0000FF"}, headers=h).json()
    assert lab["color"] == "#0000ff"
    assert c.post(f"/api/projects/{p['id']}/labels", json={"name": "x", "color": "blue"}, headers=h).status_code == 422
    assert c.patch(f"/api/labels/{lab['id']}", json={"name": "heron"}, headers=h).json()["name"] == "heron"
    assert c.delete(f"/api/labels/{lab['id']}", headers=h).status_code == 204
    names = [lab["name"] for lab in c.get(f"/api/projects/{p['id']}", headers=h).json()["labels"]]
    assert names == ["cat", "dog"]


def _annotate(server, iid: int, label_id: int, mask: np.ndarray) -> dict:
    r = server.client.post(
        f"/api/images/{iid}/annotations",
        json={"label_id": label_id, "rle": rle_encode(mask), "source": "click", "score": 0.9},
        headers=server.admin,
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_concurrent_updates_give_one_200_and_one_409(server):
    c, h = server.client, server.admin
    p = server.project()
    (img,) = server.upload(p["id"], [("a.png", png_bytes(synthetic_photo(3)))]).json()
    mask = np.zeros((96, 128), bool)
    mask[10:40, 20:60] = True
    ann = _annotate(server, img["id"], p["labels"][0]["id"], mask)
    assert ann["version"] == 1 and ann["bbox"] == [20, 10, 40, 30] and ann["area"] == 1200
    assert ann["author"] == "admin" and ann["polygons"]

    other = server.add_user("ann", "annotator")
    writers = [(h, p["labels"][0]["id"]), (other, p["labels"][1]["id"])] * 3  # 6 writers of version 1
    barrier = threading.Barrier(len(writers))
    codes = []

    def update(headers, label_id):
        barrier.wait()
        r = c.patch(f"/api/annotations/{ann['id']}", json={"version": 1, "label_id": label_id}, headers=headers)
        codes.append(r.status_code)

    threads = [threading.Thread(target=update, args=w) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * (len(writers) - 1)
    (now,) = c.get(f"/api/images/{img['id']}/annotations", headers=h).json()
    assert now["version"] == 2

    moved = mask.copy()
    moved[50:60, 70:90] = True
    r = c.patch(f"/api/annotations/{ann['id']}", json={"version": 2, "rle": rle_encode(moved)}, headers=h)
    assert r.status_code == 200 and r.json()["version"] == 3 and r.json()["area"] == 1400
    assert c.delete(f"/api/annotations/{ann['id']}?version=2", headers=h).status_code == 409
    assert c.delete(f"/api/annotations/{ann['id']}?version=3", headers=h).status_code == 204
    assert c.delete(f"/api/annotations/{ann['id']}?version=3", headers=h).status_code == 404
    wrong = rle_encode(np.zeros((10, 10), bool))
    r = c.post(
        f"/api/images/{img['id']}/annotations",
        json={"label_id": p["labels"][0]["id"], "rle": wrong, "source": "click"},
        headers=h,
    )
    assert r.status_code == 422 and "size" in r.json()["detail"]


def _coco_fixture(images: list[dict]) -> dict:
    """COCO instances with two RLE masks (one with a hole) and one polygon per image."""
    anns = []
    for im in images:
        h, w = im["height"], im["width"]
        ring = np.zeros((h, w), bool)
        ring[10:60, 10:70] = True
        ring[25:45, 25:55] = False  # a hole: must survive as RLE
        blob = np.zeros((h, w), bool)
        blob[70:90, 80 + im["id"] : 120] = True
        anns.append({"image_id": im["id"], "category_id": 7, "segmentation": rle_encode(ring), "iscrowd": 0})
        anns.append({"image_id": im["id"], "category_id": 9, "segmentation": rle_encode(blob), "iscrowd": 0})
        anns.append({"image_id": im["id"], "category_id": 9, "segmentation": [[90, 5, 120, 5, 120, 30, 90, 30]]})
    for k, a in enumerate(anns):
        a["id"] = 100 + k
    return {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "ring"}, {"id": 9, "name": "blob"}]}


def test_coco_import_then_export_gives_the_same_instances(server):
    c, h = server.client, server.admin
    pid = server.project("coco", labels=[("blob", "#123456")])["id"]
    up = server.upload(pid, [(f"img{k}.png", png_bytes(synthetic_photo(k))) for k in range(2)]).json()
    coco_in = _coco_fixture(
        [{"id": 50 + k, "file_name": f"sub/img{k}.png", "width": 128, "height": 96} for k in range(2)]
        + [{"id": 99, "file_name": "absent.png", "width": 128, "height": 96}]
    )
    r = c.post(f"/api/projects/{pid}/import", files={"file": ("coco.json", json_bytes(coco_in))}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["annotations"] == 6 and r.json()["images_missing"] == ["absent.png"]
    assert r.json()["labels_created"] == ["ring"]

    out = c.get(f"/api/projects/{pid}/export?format=coco", headers=h)
    assert out.status_code == 200 and out.headers["content-type"].startswith("application/json")
    coco_out = out.json()
    names_in = {cat["id"]: cat["name"] for cat in coco_in["categories"]}
    names_out = {cat["id"]: cat["name"] for cat in coco_out["categories"]}
    file_in = {im["id"]: im["file_name"].split("/")[-1] for im in coco_in["images"]}
    file_out = {im["id"]: im["file_name"] for im in coco_out["images"]}

    def instances(coco, names, files):
        out = []
        for a in coco["annotations"]:
            if files[a["image_id"]] == "absent.png":
                continue
            seg = a["segmentation"]
            if isinstance(seg, list):  # polygons in: compare as the mask they rasterise to
                from maskwright.exchange.coco import segmentation_to_rle

                seg = segmentation_to_rle(seg, 96, 128)
            out.append((files[a["image_id"]], names[a["category_id"]], seg["counts"]))
        return sorted(out)

    assert instances(coco_in, names_in, file_in) == instances(coco_out, names_out, file_out)
    ring = next(a for a in coco_out["annotations"] if names_out[a["category_id"]] == "ring")
    assert ring["area"] == 50 * 60 - 20 * 30 and ring["bbox"] == [10.0, 10.0, 60.0, 50.0]
    assert [im["file_name"] for im in coco_out["images"]] == [u["file_name"] for u in up]

    bad = dict(coco_in, annotations=[{"id": 1, "image_id": 50, "category_id": 7, "segmentation": "x"}])
    r = c.post(f"/api/projects/{pid}/import", files={"file": ("c.json", json_bytes(bad))}, headers=h)
    assert r.status_code == 422
    assert len(c.get(f"/api/images/{up[0]['id']}/annotations", headers=h).json()) == 3  # unchanged


def json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()


def test_export_formats_parse(server):
    c, h = server.client, server.admin
    p = server.project("formats")
    cat, dog = (lab["id"] for lab in p["labels"])
    imgs = server.upload(
        p["id"], [("a.png", png_bytes(synthetic_photo(1))), ("b.jpg", png_bytes(synthetic_photo(2), "JPEG"))]
    ).json()
    m1 = np.zeros((96, 128), bool)
    m1[10:30, 10:50] = True
    m2 = np.zeros((96, 128), bool)
    m2[40:90, 60:120] = True
    m2[50:60, 70:80] = False
    _annotate(server, imgs[0]["id"], cat, m1)
    _annotate(server, imgs[0]["id"], dog, m2)

    r = c.get(f"/api/projects/{p['id']}/export?format=yolo", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        assert {"data.yaml", "labels/a.txt", "labels/b.txt", "images/a.png", "images/b.jpg"} <= names
        lines = zf.read("labels/a.txt").decode().splitlines()
        assert zf.read("labels/b.txt").decode().strip() == ""
        assert "cat" in zf.read("data.yaml").decode()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    for line in lines:
        values = np.array(line.split()[1:], float)
        assert len(values) >= 6 and len(values) % 2 == 0 and values.min() >= 0 and values.max() <= 1
    xs = np.array(lines[0].split()[1:], float)[0::2] * 128
    assert abs(xs.min() - 10) <= 1 and abs(xs.max() - 49) <= 1

    r = c.get(f"/api/projects/{p['id']}/export?format=png-instance", headers=h)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        inst = np.asarray(PILImage.open(io.BytesIO(zf.read("instance/a.png"))))
        index = json.loads(zf.read("index.json"))
    assert inst.shape == (96, 128) and set(np.unique(inst).tolist()) == {0, 1, 2}
    assert np.array_equal(inst == 1, m1) and np.array_equal(inst == 2, m2)
    assert [i["value"] for i in index["images"][0]["instances"]] == [1, 2]

    r = c.get(f"/api/projects/{p['id']}/export?format=png-semantic", headers=h)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        sem = np.asarray(PILImage.open(io.BytesIO(zf.read("semantic/a.png"))))
        empty = np.asarray(PILImage.open(io.BytesIO(zf.read("semantic/b.png"))))
    assert np.array_equal(sem == 1, m1) and np.array_equal(sem == 2, m2) and not empty.any()

    r = c.get(f"/api/projects/{p['id']}/export?format=coco-polygons", headers=h)
    segs = [a["segmentation"] for a in r.json()["annotations"]]
    assert all(isinstance(s, list) and len(s[0]) >= 6 for s in segs)
    assert c.get(f"/api/projects/{p['id']}/export?format=voc", headers=h).status_code == 422


def test_events_are_stored(server):
    c, h = server.client, server.admin
    p = server.project()
    (img,) = server.upload(p["id"], [("a.png", png_bytes(synthetic_photo(1)))]).json()
    events = [
        {"kind": "click", "t": 1.5, "x": 10, "y": 20, "label": 1},
        {"kind": "choose_candidate", "t": 2.0, "candidate": 2, "score": 0.8, "mask_change": 0.1},
    ]
    r = c.post(f"/api/images/{img['id']}/events", json=events, headers=h)
    assert r.status_code == 200 and r.json() == {"stored": 2}
    assert c.post(f"/api/images/{img['id']}/events", json=[{"kind": "drop table"}], headers=h).status_code == 422
    from sqlalchemy import select

    from maskwright.store import InteractionEvent

    with server.state.sessions() as db:
        rows = db.execute(select(InteractionEvent).order_by(InteractionEvent.id)).scalars().all()
    assert [(e.kind, e.candidate, e.user_id is not None) for e in rows] == [
        ("click", None, True),
        ("choose_candidate", 2, True),
    ]
    log = c.get(f"/api/projects/{p['id']}/export?format=events", headers=h).json()
    assert [(e["kind"], e["file_name"], e["user"], e["x"]) for e in log["events"]] == [
        ("click", "a.png", "admin", 10.0),
        ("choose_candidate", "a.png", "admin", None),
    ]


def test_restart_loses_nothing(tmp_path, database_url):
    settings = make_settings(tmp_path / "data", database_url)
    srv = start_server(settings)
    try:
        p = srv.project("kept")
        (img,) = srv.upload(p["id"], [("a.png", png_bytes(synthetic_photo(4)))]).json()
        mask = np.zeros((96, 128), bool)
        mask[5:25, 5:45] = True
        ann = _annotate(srv, img["id"], p["labels"][1]["id"], mask)
        r = srv.client.post(
            f"/api/images/{img['id']}/predict", json={"points": [[64, 48]], "labels": [1]}, headers=srv.admin
        )
        assert r.status_code == 200
        token = srv.admin
    finally:
        srv.client.__exit__(None, None, None)

    again = start_server(make_settings(tmp_path / "data", database_url))
    try:
        c = again.client
        assert c.get("/api/auth/me", headers=token).status_code == 200  # tokens survive a restart
        assert [q["name"] for q in c.get("/api/projects", headers=token).json()] == ["kept"]
        (img2,) = c.get(f"/api/projects/{p['id']}/images", headers=token).json()["items"]
        assert img2["embedding_status"] == "ready"  # from the disk cache, not recomputed
        (ann2,) = c.get(f"/api/images/{img['id']}/annotations", headers=token).json()
        assert ann2["rle"] == ann["rle"] and ann2["version"] == 1 and ann2["label_id"] == p["labels"][1]["id"]
        assert np.array_equal(rle_decode(ann2["rle"]), mask)
        assert c.get(f"/api/images/{img['id']}/file", headers=token).content == png_bytes(synthetic_photo(4))
        assert again.state.embeddings.computed == 0
    finally:
        again.client.__exit__(None, None, None)
