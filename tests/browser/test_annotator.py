"""End to end in Chromium against a real ``maskwright serve``: log in, create a project, upload a GrabCut
photo, click / negative click / undo / redo, accept with a label, reload, export; saves that fail and
are retried from the persisted queue; a 409 conflict shown with the choice to reload.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import load_grabcut_sample
from maskwright.masks import rle_decode

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
READY = "window.maskwright.state.annotator && window.maskwright.state.annotator.ready"


def pick_sample(grabcut: list, stem: str = "grave") -> tuple[Path, Path]:
    """A photo whose first click over-segments (so a negative click has work to do); else the first one."""
    return next((p for p in grabcut if p[0].stem == stem), grabcut[0])


def deepest_point(mask: np.ndarray, away_from: tuple[int, int] | None = None, radius: float = 0) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border (optionally at least ``radius`` from a point)."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if away_from is not None:
        yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
        dist[np.hypot(xx - away_from[0], yy - away_from[1]) < radius] = 0
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def state(page) -> dict:
    return page.evaluate("window.maskwright.state.annotator")


def click_image(page, x: int, y: int, button: str = "left") -> None:
    sx, sy = page.evaluate(f"window.maskwright.app.annotator.clientPoint({x}, {y})")
    page.mouse.click(sx, sy, button=button)


def wait_mask(page, n_points: int) -> None:
    page.wait_for_function(
        f"(() => {{ const a = window.maskwright.state.annotator; return a && a.prompt.points.length === {n_points}"
        " && !a.pending && a.hasMask; })()"
    )


def covers(page, x: int, y: int) -> bool:
    return page.evaluate(f"window.maskwright.app.annotator.maskCovers({x}, {y})")


def current_mask(page) -> np.ndarray:
    return rle_decode(page.evaluate("window.maskwright.app.annotator.currentRle()"))


def login(page, server) -> None:
    page.goto(server.base_url + "/")
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Projects')")


def login_with_token(page, server) -> None:
    """Skip the login form: put a token where the UI keeps it."""
    page.goto(server.base_url + "/#/login")
    page.evaluate(f"localStorage.setItem('maskwright.token', {json.dumps(server.token())})")


def new_project_with_image(server, name: str, image: Path) -> tuple[dict, dict]:
    project = server.api(
        "POST",
        "/projects",
        json={"name": name, "labels": [{"name": "a", "color": "#e6194b"}, {"name": "b", "color": "#4363d8"}]},
    ).json()
    with image.open("rb") as f:
        r = server.api("POST", f"/projects/{project['id']}/images", files=[("files", (image.name, f.read()))])
    assert r.status_code == 201, r.text
    return project, r.json()[0]


def test_annotate_end_to_end(page, live_server, grabcut):
    pair = pick_sample(grabcut)
    rgb, gt, ignore = load_grabcut_sample(pair)
    login(page, live_server)

    # A project with two labels, through the form.
    page.fill("input[name=project-name]", "Browser e2e")
    page.fill(".label-row .label-name", "object")
    page.click("#add-label")
    page.locator(".label-row .label-name").nth(1).fill("other")
    page.click("#create-project")
    page.wait_for_selector("#dropzone")
    project_id = int(page.url.rsplit("/", 1)[1])
    labels = live_server.api("GET", f"/projects/{project_id}").json()["labels"]
    assert [lab["name"] for lab in labels] == ["object", "other"]

    # Upload with the file picker; the grid shows the image with its status.
    page.set_input_files("#file-picker", str(pair[0]))
    page.wait_for_selector(f".tile[title='{pair[0].name}']")
    assert "New" in page.inner_text(".tile .pill")
    page.click(".tile")
    page.wait_for_function(READY)
    s = state(page)
    assert (s["height"], s["width"]) == gt.shape
    assert page.evaluate("window.maskwright.state.engine") == "classic"
    assert "classic" in page.inner_text("#engine")
    assert page.is_hidden("#fallback-banner")  # classic was asked for by name: not a fallback

    # Positive click deep inside the object: a mask is drawn and covers the click.
    x, y = deepest_point(gt & ~ignore)
    click_image(page, x, y)
    wait_mask(page, 1)
    assert covers(page, x, y)
    mask = current_mask(page)
    assert mask[y, x]
    # The JS decoder of the compressed RLE agrees with pycocotools, pixel for pixel.
    assert page.evaluate("window.maskwright.app.annotator.decodedArea()") == int(mask.sum())
    js_mask = page.evaluate(
        "(rle) => import('/js/rle.js').then((m) => Array.from(m.decodeRle(rle).mask).join(''))",
        page.evaluate("window.maskwright.app.annotator.currentRle()"),
    )
    assert js_mask == "".join("1" if v else "0" for v in mask.ravel())
    # The canvas shows the mask: a pixel inside it, away from the click marker, is tinted with the label colour.
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    mx, my = deepest_point(mask, away_from=(x, y), radius=15)
    assert mask[my, mx]
    sx, sy = page.evaluate(f"window.maskwright.app.annotator.view.toScreen({mx} + 0.5, {my} + 0.5)")
    drawn = page.evaluate(
        f"Array.from(document.querySelector('.stage-canvas').getContext('2d')"
        f".getImageData(Math.floor({sx} * devicePixelRatio), Math.floor({sy} * devicePixelRatio), 1, 1).data)"
    )
    alpha = 130 / 255
    expected = np.array([0xE6, 0x19, 0x4B]) * alpha + rgb[my, mx].astype(float) * (1 - alpha)
    assert np.abs(np.array(drawn[:3]) - expected).max() < 40, (drawn, expected)

    # A negative click on a wrongly included region removes it. Of the candidates (keys 1/2/3), take the one
    # that includes the most background, so the test does not depend on how good the engine is.
    candidates = []
    for k in range(len(state(page)["candidates"])):
        page.keyboard.press(str(k + 1))
        candidates.append((int((current_mask(page) & ~gt & ~ignore).sum()), k))
    page.keyboard.press(str(max(candidates)[1] + 1))
    mask = current_mask(page)
    wrong = mask & ~gt & ~ignore
    nx, ny = deepest_point(wrong)
    assert wrong[ny, nx], "the first click should over-segment this photo"
    click_image(page, nx, ny, button="right")
    wait_mask(page, 2)
    assert not covers(page, nx, ny)
    assert covers(page, x, y)
    after = current_mask(page)
    assert (after & ~gt & ~ignore).sum() < wrong.sum()
    assert state(page)["prompt"]["points"][1]["label"] == 0

    # Undo brings the first mask back at once; redo the refined one.
    page.keyboard.press("Control+z")
    assert state(page)["prompt"]["points"] == [{"x": x, "y": y, "label": 1}]
    assert covers(page, nx, ny)
    page.keyboard.press("Control+Shift+z")
    assert len(state(page)["prompt"]["points"]) == 2
    assert not covers(page, nx, ny)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "annotator.png"))

    # Accept with label 2: saved at once, with that label, in the database.
    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "window.maskwright.state.annotator.instances.length === 1 && window.maskwright.state.saves.pending === 0"
    )
    image_id = s["imageId"]
    anns = live_server.api("GET", f"/images/{image_id}/annotations").json()
    assert len(anns) == 1
    assert anns[0]["label_id"] == labels[1]["id"]
    assert anns[0]["area"] == int(after.sum())
    assert not state(page)["hasMask"]

    # Reload: the instance is still there, with its label.
    page.reload()
    page.wait_for_function(READY + " && window.maskwright.state.annotator.instances.length === 1")
    assert state(page)["instances"][0]["label_id"] == labels[1]["id"]
    assert state(page)["instances"][0]["id"] == anns[0]["id"]

    # The export button downloads COCO with the annotation under category "other".
    page.select_option("select.export-format", "coco")
    with page.expect_download() as download:
        page.click("#export")
    coco = json.loads(Path(download.value.path()).read_text())
    (ann,) = [a for a in coco["annotations"] if a["id"] == anns[0]["id"] or a.get("area") == anns[0]["area"]]
    category = next(c for c in coco["categories"] if c["id"] == ann["category_id"])
    assert category["name"] == "other"

    # Every prompt and choice reached the interaction log.
    page.evaluate("window.maskwright.app.events.flush()")
    r = live_server.api("GET", f"/projects/{project_id}/export", params={"format": "events"})
    body = r.json()
    events = body["events"] if isinstance(body, dict) else body
    kinds = [e["kind"] for e in events]
    for kind in ("click", "undo", "redo", "accept"):
        assert kind in kinds, kinds
    clicks = [e for e in events if e["kind"] == "click"]
    assert (clicks[0]["x"], clicks[0]["y"], clicks[0]["label"]) == (x, y, 1)


def test_failed_save_is_retried_from_persisted_queue(page, live_server, grabcut):
    pair = pick_sample(grabcut, "flower")
    _, image = new_project_with_image(live_server, "Retry queue", pair[0])
    login_with_token(page, live_server)

    # The network drops every annotation POST: the save must stay queued, visible, and survive a reload.
    def drop_posts(route):
        if route.request.method == "POST":
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/api/images/*/annotations", drop_posts)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY)
    click_image(page, image["width"] // 2, image["height"] // 2)
    wait_mask(page, 1)
    page.keyboard.press("Enter")
    page.wait_for_function("window.maskwright.state.saves.lastError !== null")
    assert "unsaved" in page.inner_text("#save-status")
    queued = json.loads(page.evaluate("localStorage.getItem('maskwright.saveQueue.v1')"))
    assert [op["kind"] for op in queued["ops"]] == ["create"]

    page.reload()
    page.wait_for_function(READY + " && window.maskwright.state.annotator.instances.length === 1")
    assert state(page)["instances"][0]["id"] is None  # shown from the queue, not yet on the server
    assert live_server.api("GET", f"/images/{image['id']}/annotations").json() == []

    # The network is back: "Retry now" sends it, once.
    page.wait_for_selector("#save-status button")  # the attempt after the reload failed too
    page.unroute("**/api/images/*/annotations")
    # (clicked from JS: the backoff timer may have retried, and removed the button, a moment before)
    page.evaluate("document.querySelector('#save-status button')?.click()")
    page.wait_for_function(
        "window.maskwright.state.saves.pending === 0 && window.maskwright.state.annotator.instances[0].id"
    )
    anns = live_server.api("GET", f"/images/{image['id']}/annotations").json()
    assert len(anns) == 1
    assert anns[0]["source"] == "click"
    assert json.loads(page.evaluate("localStorage.getItem('maskwright.saveQueue.v1')"))["ops"] == []
    assert "All changes saved" in page.inner_text("#save-status")


def test_conflict_is_shown_with_reload(page, live_server, grabcut):
    pair = pick_sample(grabcut, "sheep")
    project, image = new_project_with_image(live_server, "Conflicts", pair[0])
    label_a, label_b = (lab["id"] for lab in project["labels"])
    pred = live_server.api(
        "POST",
        f"/images/{image['id']}/predict",
        json={
            "points": [[image["width"] // 2, image["height"] // 2]],
            "labels": [1],
            "box": None,
            "mask_handle": None,
            "multimask": False,
        },
    ).json()
    ann = live_server.api(
        "POST",
        f"/images/{image['id']}/annotations",
        json={"label_id": label_a, "rle": pred["candidates"][0]["rle"], "source": "click"},
    ).json()
    login_with_token(page, live_server)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY + " && window.maskwright.state.annotator.instances.length === 1")

    # Someone else relabels it behind the UI's back; our relabel is then stale.
    r = live_server.api("PATCH", f"/annotations/{ann['id']}", json={"version": ann["version"], "label_id": label_b})
    assert r.status_code == 200, r.text
    page.select_option(".instance select.relabel", str(label_b))
    page.wait_for_selector("#conflict:not([hidden])")
    assert "Conflict" in page.inner_text("#conflict")
    page.click("#conflict-reload")
    page.wait_for_function("window.maskwright.state.annotator.instances[0].version === 2")
    assert state(page)["instances"][0]["label_id"] == label_b
    assert page.is_hidden("#conflict")


def test_view_zoom_pan_box_and_help(page, live_server, grabcut):
    pair = pick_sample(grabcut, "sheep")
    project, image = new_project_with_image(live_server, "Views", pair[0])
    login_with_token(page, live_server)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY)

    # Wheel zoom keeps the image point under the cursor in place; Space+drag pans; F fits again.
    fitted = state(page)["view"]
    sx, sy = page.evaluate("window.maskwright.app.annotator.clientPoint(100, 80)")
    page.mouse.move(sx, sy)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"window.maskwright.app.annotator.view.scale > {fitted['scale']}")
    zoomed = page.evaluate("window.maskwright.app.annotator.view")
    assert zoomed["scale"] > fitted["scale"] * 1.5
    assert page.evaluate("window.maskwright.app.annotator.clientPoint(100, 80)") == pytest.approx([sx, sy], abs=1.0)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(sx + 60, sy + 30, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    panned = page.evaluate("window.maskwright.app.annotator.view")
    assert (panned["ox"] - zoomed["ox"], panned["oy"] - zoomed["oy"]) == pytest.approx((60, 30), abs=1.0)
    assert state(page)["prompt"]["points"] == []  # panning is not a click
    page.keyboard.press("f")
    assert page.evaluate("window.maskwright.app.annotator.view.scale") == pytest.approx(fitted["scale"])

    # A left drag is a box prompt (XYXY in image pixels), not a point.
    w, hgt = image["width"], image["height"]
    x0, y0 = page.evaluate(f"window.maskwright.app.annotator.clientPoint({w // 4}, {hgt // 4})")
    x1, y1 = page.evaluate(f"window.maskwright.app.annotator.clientPoint({3 * w // 4}, {3 * hgt // 4})")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()
    page.wait_for_function(
        "(() => { const a = window.maskwright.state.annotator; return a.prompt.box && !a.pending && a.hasMask; })()"
    )
    s = state(page)
    assert s["prompt"]["points"] == []
    bx0, by0, bx1, by1 = s["prompt"]["box"]
    assert abs(bx0 - w // 4) <= 1 and abs(by1 - 3 * hgt // 4) <= 1
    assert len(s["candidates"]) == 3
    page.keyboard.press("3")
    assert state(page)["chosen"] == 2
    page.keyboard.press("Escape")
    assert state(page)["prompt"] == {"points": [], "box": None} and not state(page)["hasMask"]

    # The help overlay lists the shortcuts.
    page.keyboard.press("?")
    assert page.is_visible("#help")
    assert "Ctrl+Z" in page.inner_text("#help")
    page.keyboard.press("Escape")
    assert page.is_hidden("#help")


def test_segment_everything_proposals(page, live_server, grabcut):
    pair = pick_sample(grabcut, "sheep")
    _, image = new_project_with_image(live_server, "Proposals", pair[0])
    login_with_token(page, live_server)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY)

    # Segment everything: accept one proposal, reject one, reject the rest at once.
    page.click("#segment-everything")
    page.wait_for_function(
        "window.maskwright.state.annotator.proposals > 0 || document.querySelector('#toast.error')", timeout=90000
    )
    assert not page.is_visible("#toast.error"), page.inner_text("#toast")
    assert state(page)["proposals"] > 2
    n = state(page)["proposals"]
    page.locator(".proposal .icon.ok").first.click()
    page.locator(".proposal .icon.danger").first.click()
    assert state(page)["proposals"] == n - 2
    page.click("text=Reject all")
    assert state(page)["proposals"] == 0
    page.wait_for_function(
        "window.maskwright.state.saves.pending === 0 && window.maskwright.state.annotator.instances[0].id"
    )
    anns = live_server.api("GET", f"/images/{image['id']}/annotations").json()
    assert [a["source"] for a in anns] == ["auto"]


def test_drop_upload_navigation_and_instance_list(page, live_server, grabcut):
    import base64

    photos = [pick_sample(grabcut, "teddy")[0], pick_sample(grabcut, "llama")[0]]  # a JPEG and a BMP
    project = live_server.api(
        "POST", "/projects", json={"name": "Drop", "labels": [{"name": "x", "color": "#3cb44b"}]}
    ).json()
    login_with_token(page, live_server)
    page.goto(f"{live_server.base_url}/#/projects/{project['id']}")
    page.wait_for_selector("#dropzone")

    # A label added to the existing project.
    page.click("#add-project-label")
    page.fill(".new-label-name", "y")
    page.click(".inline-form button[type=submit]")
    page.wait_for_selector(".chip:has-text('y')")
    assert [lab["name"] for lab in live_server.api("GET", f"/projects/{project['id']}").json()["labels"]] == ["x", "y"]

    # Drag and drop two photos onto the page.
    mime = {".jpg": "image/jpeg", ".bmp": "image/bmp"}
    files = [[p.name, base64.b64encode(p.read_bytes()).decode(), mime[p.suffix.lower()]] for p in photos]
    data_transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, b64, type] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, { type }));
            }
            return dt;
        }""",
        files,
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
    page.wait_for_function("document.querySelectorAll('.tile').length === 2")
    images = live_server.api("GET", f"/projects/{project['id']}/images").json()["items"]
    assert sorted(i["file_name"] for i in images) == sorted(p.name for p in photos)

    # Open the first; the next one is asked to embed ahead; N and P move between them.
    first, second = images
    page.click(f".tile[data-image-id='{first['id']}']")
    page.wait_for_function(READY + f" && window.maskwright.state.annotator.imageId === {first['id']}")
    for _ in range(50):
        if live_server.api("GET", f"/images/{second['id']}").json()["embedding_status"] != "none":
            break
        page.wait_for_timeout(200)
    assert live_server.api("GET", f"/images/{second['id']}").json()["embedding_status"] != "none"
    page.keyboard.press("n")
    page.wait_for_function(READY + f" && window.maskwright.state.annotator.imageId === {second['id']}")
    assert page.url.endswith(f"#/images/{second['id']}")
    assert (state(page)["width"], state(page)["height"]) == (second["width"], second["height"])
    page.keyboard.press("d")  # mark done
    page.wait_for_selector(".annotator-bar .pill.status-done")
    assert live_server.api("GET", f"/images/{second['id']}").json()["status"] == "done"
    page.keyboard.press("p")
    page.wait_for_function(READY + f" && window.maskwright.state.annotator.imageId === {first['id']}")

    # Instance list: accept two, hide one, delete the other (deleted on the server at once).
    for x, y in [(first["width"] // 2, first["height"] // 2), (5, 5)]:
        click_image(page, x, y)
        wait_mask(page, 1)
        page.keyboard.press("Enter")
    page.wait_for_function(
        "window.maskwright.state.annotator.instances.length === 2 && window.maskwright.state.saves.pending === 0"
        " && window.maskwright.state.annotator.instances.every(i => i.id)"
    )
    page.locator(".instance button[title='Hide']").first.click()
    assert [i["hidden"] for i in state(page)["instances"]] == [True, False]
    page.locator(".instance .inst-name").nth(1).click()
    page.keyboard.press("Delete")
    page.wait_for_function(
        "window.maskwright.state.annotator.instances.length === 1 && window.maskwright.state.saves.pending === 0"
    )
    kept = state(page)["instances"][0]["id"]
    assert [a["id"] for a in live_server.api("GET", f"/images/{first['id']}/annotations").json()] == [kept]


def test_newer_click_supersedes_a_slow_response(page, live_server, grabcut):
    pair = pick_sample(grabcut, "flower")
    _, image = new_project_with_image(live_server, "Stale", pair[0])
    # The fallback banner follows /api/health (here answered as if no SAM weights were found).
    page.route(
        "**/api/health",
        lambda route: route.fulfill(
            json={
                "status": "ok",
                "version": "t",
                "engine": "classic",
                "engine_is_fallback": True,
                "engine_note": "no weights",
            }
        ),
    )
    login_with_token(page, live_server)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY)
    page.wait_for_selector("#fallback-banner:not([hidden])")
    assert "classic" in page.inner_text("#fallback-banner")

    # The answer to the first click is held back 1.5 s by the network; the second click's answer comes first.
    page.evaluate(
        """() => {
            const realFetch = window.fetch;
            let predicts = 0;
            window.fetch = async (...args) => {
                const res = await realFetch(...args);
                const first = String(args[0]).endsWith('/predict') && predicts++ === 0;
                if (first) await new Promise((r) => setTimeout(r, 1500));
                return res;
            };
        }"""
    )
    w, hgt = image["width"], image["height"]
    click_image(page, w // 2, hgt // 2)
    click_image(page, w // 2 + 10, hgt // 2)
    wait_mask(page, 2)
    page.wait_for_timeout(2000)  # the late answer to the first click arrives meanwhile
    s = state(page)
    assert len(s["prompt"]["points"]) == 2
    assert len(s["candidates"]) == 1  # the two-point answer (single mask), not the first click's three
    assert len(page.evaluate("window.maskwright.metrics().clicks")) == 1  # the stale answer was never drawn
    # Undo shows the first click's answer, kept for it when it arrived late.
    page.keyboard.press("Control+z")
    assert len(state(page)["candidates"]) == 3

    # A mask handle the server no longer knows (restart, eviction): the click still gets its mask.
    page.keyboard.press("Escape")
    page.evaluate(
        """() => {
            const realFetch = window.fetch;
            window.fetch = (url, init) => {
                if (String(url).endsWith('/predict')) {
                    window.predictCalls = (window.predictCalls || 0) + 1;
                    const body = JSON.parse(init.body);
                    if (body.mask_handle) body.mask_handle = 'forgotten:0';
                    init = { ...init, body: JSON.stringify(body) };
                }
                return realFetch(url, init);
            };
        }"""
    )
    click_image(page, w // 2, hgt // 2)
    wait_mask(page, 1)
    click_image(page, w // 2 + 10, hgt // 2)
    wait_mask(page, 2)
    assert covers(page, w // 2 + 10, hgt // 2)
    assert page.evaluate("window.predictCalls") == 3  # two clicks, and the second sent again without the handle


def test_js_rle_decoder_matches_pycocotools(page, live_server):
    """Edge cases of the compressed-RLE decoder in web/js/rle.js against pycocotools' encoder."""
    from maskwright.masks import rle_encode

    rng = np.random.default_rng(1)
    cases = [
        np.zeros((7, 5), bool),
        np.ones((7, 5), bool),
        np.eye(6, 9, dtype=bool),
        np.pad(np.ones((40, 30), bool), ((3, 300), (200, 4))),  # long runs: multi-char counts
        rng.random((31, 17)) > 0.5,  # many short runs: negative deltas
        np.ones((1, 1), bool),
    ]
    page.goto(live_server.base_url + "/#/login")
    for mask in cases:
        rle = rle_encode(mask)
        got = page.evaluate(
            "(rle) => import('/js/rle.js').then((m) => { const d = m.decodeRle(rle);"
            " return [d.height, d.width, Array.from(d.mask).join('')]; })",
            rle,
        )
        assert got == [mask.shape[0], mask.shape[1], "".join("1" if v else "0" for v in mask.ravel())]
    with pytest.raises(Exception, match="RLE covers"):
        page.evaluate("import('/js/rle.js').then((m) => m.decodeRle({size: [4, 4], counts: '1'}))")


def test_save_whose_answer_was_lost_is_not_duplicated(page, live_server, grabcut):
    pair = pick_sample(grabcut, "flower")
    _, image = new_project_with_image(live_server, "Lost answer", pair[0])
    login_with_token(page, live_server)

    # The POST reaches the server and is stored, but its answer never comes back.
    def store_then_drop(route):
        if route.request.method == "POST":
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/images/*/annotations", store_then_drop)
    page.goto(f"{live_server.base_url}/#/images/{image['id']}")
    page.wait_for_function(READY)
    click_image(page, image["width"] // 2, image["height"] // 2)
    wait_mask(page, 1)
    page.keyboard.press("Enter")
    page.wait_for_function("window.maskwright.state.saves.lastError !== null")
    assert len(live_server.api("GET", f"/images/{image['id']}/annotations").json()) == 1

    page.unroute("**/api/images/*/annotations")
    # (clicked from JS: the backoff timer may have retried, and removed the button, a moment before)
    page.evaluate("document.querySelector('#save-status button')?.click()")
    page.wait_for_function(
        "window.maskwright.state.saves.pending === 0 && window.maskwright.state.annotator.instances[0].id"
    )
    anns = live_server.api("GET", f"/images/{image['id']}/annotations").json()
    assert len(anns) == 1  # found again, not created twice
    assert state(page)["instances"][0]["id"] == anns[0]["id"]
