"""Interactive evaluation: the RITM clicker, NoC metrics, datasets, the runner and ``maskwright eval``."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from maskwright import Predictor
from maskwright.engines.base import LOWRES, Embedding, Engine, MaskPrediction
from maskwright.evaluation import (
    Clicker,
    clicks_to_reach,
    decode_mask_values,
    evaluate_engine,
    evaluate_sample,
    load_dataset,
    never_reached,
    next_click,
    noc,
)
from maskwright.evaluation.metrics import noc_at_max, summarize
from maskwright.masks import rle_encode

CLI = [sys.executable, "-m", "maskwright.cli"]
# pycocotools' decode warns about numpy 2's copy keyword on every call (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def box_mask(shape, x0, y0, x1, y1):
    """Bool mask with True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# --- clicker -----------------------------------------------------------------------------------------


def test_first_click_is_the_interior_point_of_the_object():
    gt = box_mask((50, 60), 30, 10, 41, 21)  # 11x11 square centred at (35, 15)
    click = next_click(gt, np.zeros_like(gt))
    assert (click.x, click.y, click.is_positive) == (35, 15, True)


def test_image_border_counts_as_outside_and_first_maximum_is_row_major():
    # A strip along the top border: thanks to the one-pixel zero padding the deepest pixels are in rows
    # 4 and 5 (distance 5 from the padded border above and from row 10 below), and the first in
    # row-major order is column 4 (distance 5 from the padded left border too).
    gt = box_mask((30, 30), 0, 0, 30, 10)
    click = next_click(gt, np.zeros_like(gt))
    assert (click.x, click.y, click.is_positive) == (4, 4, True)


def test_false_positive_blob_gets_a_negative_click():
    gt = box_mask((60, 60), 5, 5, 12, 12)
    pred = gt | box_mask((60, 60), 30, 30, 51, 51)  # a 21x21 false blob centred at (40, 40)
    click = next_click(gt, pred)
    assert (click.x, click.y, click.is_positive) == (40, 40, False)


def test_missed_part_bigger_than_false_part_gets_a_positive_click():
    gt = box_mask((60, 60), 0, 0, 60, 30)
    pred = box_mask((60, 60), 0, 0, 60, 10) | box_mask((60, 60), 50, 40, 53, 43)  # misses rows 10..29
    click = next_click(gt, pred)
    assert click.is_positive and 10 <= click.y < 30


def test_tie_between_missed_and_false_regions_gives_a_negative_click():
    gt = box_mask((40, 60), 5, 5, 16, 16)
    pred = box_mask((40, 60), 35, 5, 46, 16)  # same shape: equal deepest distances
    click = next_click(gt, pred)
    assert (click.x, click.y, click.is_positive) == (40, 10, False)


def test_ignore_pixels_are_never_errors():
    gt = box_mask((40, 40), 0, 0, 40, 40)
    ignore = box_mask((40, 40), 0, 0, 30, 40)  # only columns 30..39 count
    click = next_click(gt, np.zeros_like(gt), ignore)
    assert click.is_positive and click.x >= 30


def test_clicked_pixels_are_never_clicked_again():
    gt = box_mask((20, 20), 5, 5, 8, 8)  # 3x3 object
    empty = np.zeros_like(gt)
    clicker = Clicker(gt)
    clicks = [clicker.make_next_click(empty) for _ in range(10)]
    assert (clicks[0].x, clicks[0].y) == (6, 6)  # the centre first
    positions = [(c.x, c.y) for c in clicks]
    assert len(set(positions)) == 10
    assert all(c.is_positive and gt[c.y, c.x] for c in clicks[:9])
    # every object pixel clicked: both maxima are 0, a tie, so a negative click at the first pixel
    assert (clicks[9].x, clicks[9].y, clicks[9].is_positive) == (0, 0, False)
    coords, labels = clicker.points()
    assert coords.shape == (10, 2) and coords.dtype == np.float32 and labels.tolist() == [1] * 9 + [0]


def test_clicker_matches_an_independent_edt_implementation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        gt = ndimage.binary_opening(rng.random((48, 64)) > 0.45, iterations=2)
        pred = ndimage.binary_opening(rng.random((48, 64)) > 0.45, iterations=2)
        fn = np.pad(gt & ~pred, 1)
        fp = np.pad(~gt & pred, 1)
        fn_d = ndimage.distance_transform_edt(fn)[1:-1, 1:-1]
        fp_d = ndimage.distance_transform_edt(fp)[1:-1, 1:-1]
        click = next_click(gt, pred)
        if abs(fn_d.max() - fp_d.max()) < 1e-4:
            continue  # float32 vs float64 near-tie: either answer is defensible
        assert click.is_positive == (fn_d.max() > fp_d.max())
        dist = fn_d if click.is_positive else fp_d
        assert dist[click.y, click.x] == pytest.approx(dist.max(), abs=1e-4)


def test_clicker_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="pred"):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="ignore"):
        Clicker(np.zeros((4, 4), bool), np.zeros((3, 3), bool))


# --- metrics -----------------------------------------------------------------------------------------


def test_clicks_to_reach_and_noc_on_hand_made_sequences():
    a = np.array([0.5, 0.86, 0.91, 0.95])
    assert clicks_to_reach(a, 0.85, 4) == 2
    assert clicks_to_reach(a, 0.90, 4) == 3
    assert clicks_to_reach([0.90], 0.90, 20) == 1  # reaching the threshold exactly counts
    assert clicks_to_reach([0.5] * 20, 0.85, 20) == 20  # never reached -> max_clicks
    assert clicks_to_reach([0.5] * 19 + [0.95], 0.85, 20) == 20  # reached only at the last click
    seqs = [[0.9] * 20, [0.86] + [0.5] * 19, [0.1] * 20, [0.1] * 19 + [0.92]]
    assert noc(seqs, 0.85) == pytest.approx((1 + 1 + 20 + 20) / 4)
    assert noc(seqs, 0.90) == pytest.approx((1 + 20 + 20 + 20) / 4)
    assert never_reached(seqs, 0.90) == 2
    assert noc_at_max(seqs, 0.90) == 3
    with pytest.raises(ValueError):
        noc([], 0.85)


def test_summarize_reports_curve_nocs_and_timings():
    ious = np.array([[0.5, 0.9, 0.95], [0.7, 0.8, 0.86]])
    s = summarize(ious, [0.1, 0.2, 0.3], [1.0, 3.0], max_clicks=3)
    assert s["noc85"] == pytest.approx(2.5) and s["noc90"] == pytest.approx(2.5)
    assert s["never_reached_90"] == 1 and s["n_samples"] == 2
    assert s["mean_iou_per_click"] == pytest.approx([0.6, 0.85, 0.905])
    assert s["miou@1"] == pytest.approx(0.6) and s["miou@3"] == pytest.approx(0.905) and "miou@5" not in s
    assert s["seconds_per_click"]["median"] == pytest.approx(0.2)
    assert s["set_image_seconds"]["mean"] == pytest.approx(2.0)
    json.dumps(s)


# --- datasets ----------------------------------------------------------------------------------------


def test_mask_conventions():
    grabcut = np.array([[0, 128], [255, 255]], np.uint8)
    gt, ignore = decode_mask_values(grabcut)
    assert gt.tolist() == [[False, False], [True, True]] and ignore.tolist() == [[False, True], [False, False]]
    binary01 = np.array([[0, 1], [1, 0]], np.uint8)
    gt, ignore = decode_mask_values(binary01)
    assert gt.tolist() == [[False, True], [True, False]] and not ignore.any()
    other = np.array([[0, 128], [3, 255]], np.uint8)  # not the GrabCut value set: every value > 0 is object
    gt, ignore = decode_mask_values(other)
    assert gt.tolist() == [[False, True], [True, True]] and not ignore.any()


def square_image(h=64, w=80, box=(20, 16, 50, 44), seed=0):
    """An RGB photo-like image (noise) with a bright square object, and its bool mask."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(20, 60, (h, w, 3)).astype(np.uint8)
    mask = box_mask((h, w), *box)
    rgb[mask] = rng.integers(190, 230, (int(mask.sum()), 3))
    return rgb, mask


def make_folder_dataset(root: Path, n: int = 2) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        rgb, mask = square_image(seed=i, box=(10 + 5 * i, 12, 45 + 5 * i, 50))
        Image.fromarray(rgb).save(root / "images" / f"img{i}.png")
        values = np.where(mask, 255, 0).astype(np.uint8)
        values[0:3, :] = 128  # an ignore band along the top
        Image.fromarray(values).save(root / "masks" / f"img{i}.bmp")
    return root


def test_folder_dataset_255_128_and_01_png_conventions(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", n=1)
    _, mask = square_image(seed=5)
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / "binary.png")  # a 0/1 PNG
    Image.fromarray(square_image(seed=5)[0]).save(root / "images" / "binary.jpg")
    Image.fromarray(square_image()[0]).save(root / "images" / "unpaired.png")
    samples = load_dataset(root)
    assert [s.name for s in samples] == ["binary", "img0"]
    rgb, gt, ignore = samples[0].load()
    assert rgb.shape == (64, 80, 3) and np.array_equal(gt, mask) and not ignore.any()
    rgb, gt, ignore = samples[1].load()
    assert ignore[:3].all() and not ignore[3:].any() and gt.sum() == 35 * 38


def test_coco_json_dataset(tmp_path: Path):
    rgb, _ = square_image()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    other = tmp_path / "imgs"
    other.mkdir()
    Image.fromarray(rgb).save(other / "a.png")
    rle_mask = box_mask((64, 80), 50, 5, 70, 25)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": 64, "width": 80}],
        "annotations": [
            {"id": 1, "image_id": 7, "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40]]},
            {"id": 2, "image_id": 7, "iscrowd": 0, "segmentation": rle_encode(rle_mask)},
            {"id": 3, "image_id": 7, "iscrowd": 1, "segmentation": rle_encode(rle_mask)},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    samples = load_dataset(path)
    assert [s.name for s in samples] == ["a#1", "a#2"]  # the crowd annotation is skipped
    _, gt, ignore = samples[0].load()
    assert gt[20, 20] and not gt[5, 5] and not gt[20, 40] and not ignore.any()
    assert abs(int(gt.sum()) - 20 * 30) <= 60  # polygon rasterisation may differ by a boundary row/column
    _, gt, _ = samples[1].load()
    assert np.array_equal(gt, rle_mask)
    assert load_dataset(path, images_dir=other)[0].image_path == other / "a.png"
    result = evaluate_engine(Predictor(RecordingEngine()), samples, max_clicks=2)
    assert len(result.samples) == 2 and len(result.set_image_seconds) == 1  # one encode per image
    coco["images"][0]["width"] = 81
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="size mismatch"):
        load_dataset(path)


def test_dataset_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="masks"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "masks").mkdir()
    Image.fromarray(square_image()[0]).save(tmp_path / "empty" / "images" / "x.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(tmp_path / "empty" / "masks" / "y.png")
    with pytest.raises(ValueError, match="no image/mask pairs"):
        load_dataset(tmp_path / "empty")


# --- runner ------------------------------------------------------------------------------------------


class RecordingEngine(Engine):
    """Disks of radius 6 around positive clicks minus disks around negative clicks; records prompts.

    Candidate 1 has the best score on multimask calls; logits are filled with ``10 * call + k`` so the
    test can tell which candidate's logits came back as ``mask_input``.
    """

    name = "recording"
    version = "1"

    def __init__(self):
        self.calls = []

    def embed(self, image):
        return Embedding(self.name, self.version, image.shape[:2])

    def decode(self, embedding, prompt, multimask_output):
        h, w = embedding.original_size
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        for (x, y), label in zip(prompt.point_coords, prompt.point_labels):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= 36
            mask = mask | disk if label == 1 else mask & ~disk
        k = 3 if multimask_output else 1
        call = len(self.calls)
        self.calls.append((prompt, multimask_output))
        logits = np.stack([np.full((LOWRES, LOWRES), 10.0 * call + i, np.float32) for i in range(k)])
        scores = np.array([0.2, 0.9, 0.5][:k], np.float32)
        return MaskPrediction(np.repeat(mask[None], k, 0), scores, logits)


def test_runner_follows_the_protocol():
    engine = RecordingEngine()
    predictor = Predictor(engine)
    gt = box_mask((40, 50), 10, 10, 31, 31)
    ignore = box_mask((40, 50), 0, 0, 50, 2)
    predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    res = evaluate_sample(predictor, gt, ignore, max_clicks=4, name="s")
    assert len(engine.calls) == 4 and res.ious.shape == (4,) and len(res.click_seconds) == 4
    first, multi = engine.calls[0]
    assert multi and first.mask_input is None and first.point_coords.tolist() == [[20.0, 20.0]]
    for i, (prompt, multi) in enumerate(engine.calls[1:], start=1):
        assert not multi and prompt.n_points == i + 1
        expected = 1.0 if i == 1 else 10.0 * (i - 1)  # best-scored candidate 1 first, then the only one
        assert np.all(prompt.mask_input == expected)
        assert prompt.point_coords[:i].tolist() == engine.calls[i - 1][0].point_coords.tolist()
    disk = (np.mgrid[:40, :50][1] - 20) ** 2 + (np.mgrid[:40, :50][0] - 20) ** 2 <= 36
    assert res.ious[0] == pytest.approx((disk & gt).sum() / gt.sum())
    assert np.all(np.diff(res.ious) > 0)  # each positive click adds a disk inside the square


def test_runner_on_real_photos_with_classic(grabcut):
    from maskwright.evaluation.datasets import load_folder

    samples = load_folder(grabcut[0][0].parent.parent)[:2]
    predictor = Predictor("classic")
    result = evaluate_engine(predictor, samples, max_clicks=3)
    ious = result.all_ious
    assert ious.shape == (2, 3) and np.all((ious >= 0) & (ious <= 1)) and ious.max() > 0.3
    assert len(result.set_image_seconds) == 2 and len(result.click_seconds) == 6
    for sample, res in zip(samples, result.samples):
        _, gt, _ = sample.load()
        first = res.clicks[0]
        assert first.is_positive and gt[first.y, first.x]


# --- CLI ---------------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_eval_cli_writes_summary_csv_and_plot(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    r = run("eval", str(root), "--engine", "classic", "--max-clicks", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["engines"]["classic"]
    assert summary["n_samples"] == 2 and stats["max_clicks"] == 3
    assert 1 <= stats["noc85"] <= 3 and 1 <= stats["noc90"] <= 3
    assert len(stats["mean_iou_per_click"]) == 3 and stats["seconds_per_click"]["n"] == 6
    with open(out / "per_sample.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["sample"] for r in rows] == ["img0", "img1"] and all(0 <= float(r["iou_3"]) <= 1 for r in rows)
    assert np.mean([float(r["iou_1"]) for r in rows]) == pytest.approx(stats["mean_iou_per_click"][0], abs=1e-5)
    clicks = json.loads((out / "clicks.json").read_text())["classic"]
    x, y, label = clicks["img0"][0]
    assert len(clicks["img0"]) == 3 and label == 1 and 10 <= x < 45 and 12 <= y < 50  # inside the object
    png = cv2.imread(str(out / "iou_vs_clicks.png"))
    assert png is not None and png.shape[0] > 100


def test_eval_cli_compares_several_engines_in_one_run(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from maskwright.cli import app
    from maskwright.engines import registry

    registry.specs()  # load the families first, then add a test-only engine for this test alone
    spec = registry.EngineSpec("recording-test", "test", "disks around clicks (tests only)", RecordingEngine)
    monkeypatch.setitem(registry._SPECS, spec.name, spec)
    root = make_folder_dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    args = ["eval", str(root), "-e", "classic", "-e", "recording-test", "--max-clicks", "2", "--limit", "1"]
    r = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 1 and set(summary["engines"]) == {"classic", "recording"}
    with open(out / "per_sample.csv") as f:
        assert [row["engine"] for row in csv.DictReader(f)] == ["classic", "recording"]


def test_eval_cli_errors_exit_2_with_one_line(tmp_path: Path):
    no_pairs = tmp_path / "no_pairs"
    (no_pairs / "images").mkdir(parents=True)
    (no_pairs / "masks").mkdir()
    Image.fromarray(square_image()[0]).save(no_pairs / "images" / "a.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(no_pairs / "masks" / "b.png")

    unreadable = make_folder_dataset(tmp_path / "unreadable", n=1)
    (unreadable / "images" / "img0.png").write_bytes(b"this is not a png")

    mismatch = make_folder_dataset(tmp_path / "mismatch", n=1)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(mismatch / "masks" / "img0.bmp")

    good = make_folder_dataset(tmp_path / "good", n=1)
    cases = [
        ((str(no_pairs),), "no image/mask pairs"),
        ((str(unreadable),), "not a readable image"),
        ((str(mismatch),), "size mismatch"),
        ((str(tmp_path / "missing"),), "not found"),
        ((str(good), "--engine", "no-such-engine"), "unknown engine"),
        ((str(good), "--max-clicks", "0"), "--max-clicks"),
    ]
    for args, message in cases:
        r = run("eval", *args, "--out", str(tmp_path / "out"))
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
