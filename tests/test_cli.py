import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from maskwright.masks import rle_decode

CLI = [sys.executable, "-m", "maskwright.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_segment_sample_writes_outputs(tmp_path: Path):
    out = tmp_path / "out"
    r = run("segment", "--sample", "coffee", "--point", "300,200", "--engine", "classic", "--out", str(out))
    assert r.returncode == 0, r.stderr
    mask = np.asarray(Image.open(out / "mask.png")) > 0
    record = json.loads((out / "mask.json").read_text())
    assert mask.shape == (400, 600) and mask[200, 300]
    assert np.array_equal(rle_decode(record["segmentation"]), mask)
    assert record["area"] == int(mask.sum())
    x, y, w, h = record["bbox"]
    assert 0 <= x < x + w <= 600 and 0 <= y < y + h <= 400
    assert np.asarray(Image.open(out / "overlay.png")).shape == (400, 600, 3)


def test_segment_bad_inputs_exit_2_without_traceback(tmp_path: Path):
    corrupt = tmp_path / "bad.jpg"
    corrupt.write_bytes(b"not an image at all")
    cases = [
        ("segment", str(tmp_path / "missing.jpg"), "--point", "1,1"),
        ("segment", str(corrupt), "--point", "1,1"),
        ("segment", "--sample", "coffee", "--point", "9999,1"),
        ("segment", "--sample", "coffee", "--point", "abc"),
        ("segment", "--sample", "coffee", "--box", "1,2,3"),
        ("segment", "--sample", "coffee", "--point", "1,1", "--engine", "nope"),
    ]
    for args in cases:
        r = run(*args, "--out", str(tmp_path / "o"))
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_engines_lists_classic():
    r = run("engines")
    assert r.returncode == 0 and "classic" in r.stdout
