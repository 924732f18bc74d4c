"""``maskwright models``: listing, clean failures when a model cannot be had, paths, ONNX export.

The hub is unreachable here, so ``pull`` must fail fast with one clear message and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "maskwright.cli", "models"]


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty HF cache and maskwright cache under tmp_path."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MASKWRIGHT_"))}
    out.update(HF_HOME=str(tmp_path / "hf"), MASKWRIGHT_CACHE=str(tmp_path / "mw"), COLUMNS="200")
    return out


def test_list_shows_every_model_with_costs_and_what_is_here(env, tmp_path):
    r = run("list", env=env)
    assert r.returncode == 0, r.stderr
    for name in ("sam2.1-hiera-tiny", "sam-vit-base", "sam-vit-huge", "slimsam-77", "sam2.1-hiera-large"):
        assert name in r.stdout
    assert "facebook/sam-vit-base" in r.stdout
    assert "measured" in r.stdout and "estimate" in r.stdout
    assert "to download" in r.stdout  # nothing is downloaded in the empty cache
    assert str(tmp_path / "hf" / "hub") in r.stdout.replace("\n", "")


@pytest.mark.parametrize("offline", [True, False])
def test_pull_fails_cleanly_when_the_hub_cannot_be_reached(env, offline):
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port: refused at once
    r = run("pull", "sam-vit-base", "--timeout", "5", env=env, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model 'sam-vit-base' is not available")
    assert "facebook/sam-vit-base" in r.stderr and "huggingface-cli download facebook/sam-vit-base" in r.stderr
    assert "--engine" in r.stderr


def test_pull_and_path_of_unknown_or_missing_models_exit_2(env):
    r = run("pull", "sam-vit-gigantic", env=env)
    assert r.returncode == 2 and "unknown model 'sam-vit-gigantic'" in r.stderr and "sam-vit-base" in r.stderr
    r = run("path", "sam2.1-hiera-tiny", env=env)
    assert r.returncode == 2 and "not available" in r.stderr and "Traceback" not in r.stderr


def test_path_and_export_onnx_for_a_local_model(env, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.sam.configuration_sam import SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=1,
        global_attn_indexes=[0],
        output_channels=64,
        num_pos_feats=32,
    )
    decoder = {"hidden_size": 64, "mlp_dim": 128, "num_attention_heads": 4, "iou_head_hidden_dim": 64}
    config = transformers.SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config={"hidden_size": 64}, mask_decoder_config=decoder
    )
    model = transformers.SamModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
    models_dir = tmp_path / "models"
    model.save_pretrained(models_dir / "slimsam-77")
    env["MASKWRIGHT_MODELS_DIR"] = str(models_dir)

    r = run("path", "slimsam-77", env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == models_dir / "slimsam-77"

    r = run("list", env=env)
    assert r.returncode == 0 and "MB" in r.stdout
    row = next(line for line in r.stdout.splitlines() if "slimsam-77" in line)
    assert "yes" in row

    r = run("export-onnx", "slimsam-77", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    paths = [Path(p) for p in r.stdout.split()]
    assert {p.name for p in paths} == {"decoder_multimask.onnx", "decoder_single.onnx"}
    assert all(p.is_file() and p.stat().st_size > 1000 and str(tmp_path / "mw") in str(p) for p in paths)
