"""SAM 2.1 checkpoints as the hub ships them: ``facebook/sam2.1-hiera-*`` hold transformers weights of
model type ``sam2_video`` (the image model plus memory modules). They must load as an image engine with
every image-model weight taken from the checkpoint, and segment exactly like the same weights saved as
a plain ``sam2`` model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from maskwright import Predictor  # noqa: E402
from maskwright.engines import hub  # noqa: E402
from maskwright.engines.sam_registry import load_sam_engine  # noqa: E402

BACKBONE = {
    "model_type": "sam2_hiera_det_model",
    "blocks_per_stage": [1, 1, 2, 1],
    "global_attention_blocks": [3],
    "hidden_size": 16,
    "embed_dim_per_stage": [16, 32, 64, 128],
    "num_attention_heads_per_stage": [1, 1, 2, 2],
}
VISION = {"backbone_config": BACKBONE, "backbone_channel_list": [128, 64, 32, 16], "fpn_hidden_size": 64}
DECODER = {"hidden_size": 64, "mlp_dim": 256, "num_attention_heads": 4, "iou_head_hidden_dim": 64}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(sam2_video dir, sam2 dir) holding the same image-model weights."""
    from transformers import Sam2Model, Sam2VideoConfig, Sam2VideoModel

    root = tmp_path_factory.mktemp("sam2-ckpt")
    video = Sam2VideoModel(
        Sam2VideoConfig(vision_config=VISION, prompt_encoder_config={"hidden_size": 64}, mask_decoder_config=DECODER)
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # realistic scale: the default initialisers leave most logits ~0
        for name, p in video.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    video.save_pretrained(root / "video")
    image_model, info = Sam2Model.from_pretrained(root / "video", output_loading_info=True)
    assert not info["missing_keys"], f"image-model weights missing from a sam2_video checkpoint: {info['missing_keys']}"
    image_model.save_pretrained(root / "image")
    return root / "video", root / "image"


def test_sam2_video_checkpoint_is_a_sam_model_dir(checkpoints):
    video_dir, image_dir = checkpoints
    assert json.loads((video_dir / "config.json").read_text())["model_type"] == "sam2_video"
    assert hub.read_model_type(video_dir) == "sam2_video"
    assert hub.read_model_type(image_dir) == "sam2"
    assert hub.is_model_dir(video_dir)


def test_sam2_video_checkpoint_segments_like_the_image_model(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKWRIGHT_CACHE", str(tmp_path))
    video_dir, image_dir = checkpoints
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), 20, 0), 20, 1)  # 320x480
    results = []
    for directory in (video_dir, image_dir):
        engine = load_sam_engine(str(directory), decoder="torch", encoder_dtype="float32")
        assert engine.family == "sam2"
        predictor = Predictor(engine)
        predictor.set_image(image)
        results.append(predictor.predict(np.array([[200.0, 150.0]]), np.array([1])))
    (m_video, s_video, low_video), (m_image, s_image, low_image) = results
    assert m_video.shape == (3, 320, 480)
    np.testing.assert_allclose(low_video, low_image, atol=1e-4)
    np.testing.assert_allclose(s_video, s_image, atol=1e-5)
    assert m_video.std() > 0  # real, non-constant logits: the comparison above is not trivially true


def test_catalogue_points_at_the_official_sam2_1_repositories():
    # The "-hf" suffixed repositories exist for SAM 2 (facebook/sam2-hiera-*-hf), not for SAM 2.1.
    for size in ("tiny", "small", "base-plus", "large"):
        assert hub.CATALOGUE[f"sam2.1-hiera-{size}"].hub_id == f"facebook/sam2.1-hiera-{size}"


def test_loading_a_sam2_video_checkpoint_does_not_warn_about_the_model_type(checkpoints, caplog):
    import logging

    video_dir, _ = checkpoints
    with caplog.at_level(logging.WARNING):
        engine = load_sam_engine(str(video_dir), decoder="torch", encoder_dtype="float32")
    assert engine.family == "sam2"
    assert not [r for r in caplog.records if "sam2_video" in r.getMessage()]
