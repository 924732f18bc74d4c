"""Click-path overhead of the annotation server: HTTP ``predict`` vs a direct ``Predictor.predict``.

Starts ``maskwright serve`` (classic engine, temp data folder, SQLite) as a subprocess on a free port,
uploads GrabCut photos, then for the same clicks on the same image alternates a direct
``Predictor.predict`` in this process with ``POST /api/images/{id}/predict`` over HTTP (keep-alive).
Prints medians and the overhead = HTTP round trip - engine decode (the server reports its decode time in
the ``Server-Timing`` header, so each request's overhead is measured against its own decode, which keeps
the number stable on a shared, noisy CPU). Goal: overhead <= 15 ms.

    .venv/bin/python benchmarks/bench_server.py --images 3 --clicks 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRABCUT = Path(os.environ.get("MASKWRIGHT_GRABCUT", REPO.parent / "shared" / "datasets" / "grabcut"))
PASSWORD = "bench-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def clicks_for(gt: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    ys, xs = np.nonzero(gt)
    idx = rng.choice(len(xs), size=n, replace=len(xs) < n)
    return [(int(xs[i]), int(ys[i])) for i in idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3, help="GrabCut photos to use")
    ap.add_argument("--clicks", type=int, default=20, help="clicks per photo (each timed both ways)")
    ap.add_argument("--multimask", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--busy-images",
        type=int,
        default=45,
        help="then time the same clicks again while the worker encodes this many other photos (0: skip)",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import grabcut_pairs, load_grabcut_sample
    from maskwright import Predictor

    pairs = grabcut_pairs()[: args.images]
    if not pairs:
        sys.exit(f"GrabCut dataset not found at {GRABCUT}")
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    env = dict(os.environ, MASKWRIGHT_ADMIN_PASSWORD=PASSWORD)
    env.pop("MASKWRIGHT_DATABASE_URL", None)
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "maskwright"), "serve", "--engine", "classic", "--port", str(port),
         "--data", str(data)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    direct_ms, http_ms, overhead_ms, encode_ms, server_decode_ms, handler_ms = [], [], [], [], [], []
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                sys.exit("server did not start")
            time.sleep(0.1)
        token = client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        pid = client.post("/api/projects", json={"name": "bench", "labels": []}).json()["id"]
        predictor = Predictor("classic")
        for pair in pairs:
            rgb, gt, _ = load_grabcut_sample(pair)
            (img,) = client.post(f"/api/projects/{pid}/images", files=[("files", (pair[0].name,
                                 pair[0].read_bytes()))]).json()  # fmt: skip
            predictor.set_image(rgb)
            url = f"/api/images/{img['id']}/predict"
            first = client.post(url, json={"points": [[5, 5]], "labels": [1]})  # embeds on demand (untimed)
            assert first.status_code == 200, first.text
            clicks = clicks_for(gt, args.clicks, rng)
            quiet_ms = []
            for x, y in clicks:
                t0 = time.perf_counter()
                predictor.predict(np.array([[x, y]], np.float32), np.array([1]), multimask_output=args.multimask)
                direct_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                r = client.post(url, json={"points": [[x, y]], "labels": [1], "multimask": args.multimask})
                rtt = (time.perf_counter() - t0) * 1000
                assert r.status_code == 200, r.text
                timing = server_timing(r.headers["server-timing"])
                http_ms.append(rtt)
                server_decode_ms.append(timing["decode"])
                encode_ms.append(timing["encode"])
                handler_ms.append(timing["handler"] - timing["decode"])
                overhead_ms.append(rtt - timing["decode"])
                quiet_ms.append(rtt)
        busy_ms, encoded_meanwhile = [], 0
        if args.busy_images:
            # The same clicks on the same (ready) image while the worker encodes another project's photos.
            others = grabcut_pairs()[len(pairs) : len(pairs) + args.busy_images]
            busy_pid = client.post("/api/projects", json={"name": "busy", "labels": []}).json()["id"]
            client.post(f"/api/projects/{busy_pid}/images", files=[("files", (p[0].name, p[0].read_bytes()))
                        for p in others])  # fmt: skip
            client.get(f"/api/projects/{busy_pid}/images?limit=500")  # opens the project: the worker starts
            for x, y in clicks:
                t0 = time.perf_counter()
                r = client.post(url, json={"points": [[x, y]], "labels": [1], "multimask": args.multimask})
                busy_ms.append((time.perf_counter() - t0) * 1000)
            items = client.get(f"/api/projects/{busy_pid}/images?limit=500").json()["items"]
            encoded_meanwhile = sum(i["embedding_status"] == "ready" for i in items)
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)

    def med(v: list[float]) -> str:
        return f"{statistics.median(v):7.2f}"

    n = len(http_ms)
    h, w = rgb.shape[:2]
    print(f"predict, classic engine, {len(pairs)} GrabCut photos (~{w}x{h}), {n} clicks, multimask={args.multimask}")
    print(f"  direct Predictor.predict           median {med(direct_ms)} ms")
    print(f"  HTTP POST /predict round trip       median {med(http_ms)} ms")
    diff = statistics.median(http_ms) - statistics.median(direct_ms)
    print(f"  difference of medians                      {diff:7.2f} ms  (noisy: two decodes on a shared CPU)")
    print(f"  engine decode inside the server    median {med(server_decode_ms)} ms")
    print(f"  RLE + polygons of candidates       median {med(encode_ms)} ms")
    print(f"  endpoint body minus decode         median {med(handler_ms)} ms  (DB lookup, validation, encoding)")
    print(f"  overhead (round trip - decode)     median {med(overhead_ms)} ms  (p90 "
          f"{np.percentile(overhead_ms, 90):.2f} ms; goal <= 15 ms)")  # fmt: skip
    if busy_ms:
        print(f"same {len(busy_ms)} clicks on one photo, worker idle vs encoding {args.busy_images} other photos "
              f"({encoded_meanwhile} done meanwhile):")  # fmt: skip
        print(f"  HTTP round trip, worker idle        median {med(quiet_ms)} ms")
        print(f"  HTTP round trip, worker encoding    median {med(busy_ms)} ms")


if __name__ == "__main__":
    main()
