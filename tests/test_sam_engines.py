"""SAM / SAM 2 engines: exact SAM semantics against ``transformers``, ONNX vs torch, batching, serialisation.

Models are built from small configs (real mask decoders, tiny image encoders) with weights re-initialised
to a realistic scale (SAM's default initializer_range is 1e-10, which would make every logit ~0).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from maskwright import Predictor  # noqa: E402
from maskwright.engines import hub, registry, sam_common  # noqa: E402
from maskwright.engines.base import Embedding  # noqa: E402
from maskwright.engines.sam_registry import load_sam_engine  # noqa: E402
from maskwright.masks import iou  # noqa: E402
from maskwright.predictor import validate_prompt  # noqa: E402

SIZES = [(300, 500), (700, 240)]  # (H, W): wide and tall, neither a multiple of 16
# Small prompt encoder / mask decoder (hidden 64 instead of 256): same code paths, ~10x cheaper to decode/export.
DECODER = {"hidden_size": 64, "mlp_dim": 256, "num_attention_heads": 4, "iou_head_hidden_dim": 64}


def reinit(model, seed: int):
    """Weights ~ N(0, 1/fan_in) (unit-variance activations), biases small; norms keep their ones/zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def make_tiny_sam(path: Path) -> Path:
    from transformers import SamConfig, SamModel
    from transformers.models.sam.configuration_sam import SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        global_attn_indexes=[1],
        mlp_dim=96,
        window_size=8,
        output_channels=64,
        num_pos_feats=32,
    )
    config = SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config={"hidden_size": 64}, mask_decoder_config=DECODER
    )
    reinit(SamModel(config), seed=0).save_pretrained(path)
    return path


def make_tiny_sam2(path: Path) -> Path:
    from transformers import Sam2Config, Sam2Model

    backbone = {
        "model_type": "sam2_hiera_det_model",
        "blocks_per_stage": [1, 1, 2, 1],
        "global_attention_blocks": [3],
        "hidden_size": 16,
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 2, 2],
    }
    vision = {"backbone_config": backbone, "backbone_channel_list": [128, 64, 32, 16], "fpn_hidden_size": 64}
    reinit(
        Sam2Model(
            Sam2Config(vision_config=vision, prompt_encoder_config={"hidden_size": 64}, mask_decoder_config=DECODER)
        ),
        seed=1,
    ).save_pretrained(path)
    return path


def make_tiny_sam_hq(path: Path) -> Path:
    from transformers import SamHQConfig, SamHQModel
    from transformers.models.sam_hq.configuration_sam_hq import SamHQVisionConfig

    vision = SamHQVisionConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        global_attn_indexes=[1],
        mlp_dim=96,
        window_size=8,
        output_channels=64,
        num_pos_feats=32,
    )
    config = SamHQConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config={"hidden_size": 64},
        mask_decoder_config={**DECODER, "vit_dim": 48},
    )
    reinit(SamHQModel(config), seed=2).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private maskwright cache (ONNX exports) for this module."""
    path = tmp_path_factory.mktemp("mw-cache")
    old = os.environ.get("MASKWRIGHT_CACHE")
    os.environ["MASKWRIGHT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MASKWRIGHT_CACHE", None)
    else:
        os.environ["MASKWRIGHT_CACHE"] = old


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory) -> Path:
    return make_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="module")
def sam2_dir(tmp_path_factory) -> Path:
    return make_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"))


@pytest.fixture(scope="module")
def sam_engine(sam_dir, cache_dir):
    return load_sam_engine(str(sam_dir), decoder="onnx", encoder_dtype="float32")


@pytest.fixture(scope="module")
def sam2_engine(sam2_dir, cache_dir):
    return load_sam_engine(str(sam2_dir), decoder="onnx", encoder_dtype="float32")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = {}
    for h, w in SIZES:
        # Smooth blobs, not white noise: realistic enough for masks with structure.
        small = rng.integers(0, 256, (h // 20 + 2, w // 20 + 2, 3), dtype=np.uint8)
        out[(h, w)] = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.uint8)
    return out


@pytest.fixture(scope="module")
def embeddings(sam_engine, sam2_engine, images):
    return {
        (fam, size): eng.embed(img)
        for fam, eng in (("sam", sam_engine), ("sam2", sam2_engine))
        for size, img in images.items()
    }


def sam_processor():
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    return SamProcessor(image_processor=SamImageProcessorPil())


# --- pre/post-processing equals SamProcessor ---------------------------------------------------------


@pytest.mark.parametrize("size", SIZES + [(1000, 1500), (64, 64)])
def test_preprocess_equals_sam_processor(size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ref = sam_processor()(images=image, return_tensors="np")
    pixel, reshaped = sam_common.preprocess_sam(image)
    assert pixel.shape == (1, 3, 1024, 1024) and pixel.dtype == np.float32
    assert tuple(ref["reshaped_input_sizes"][0]) == reshaped
    np.testing.assert_allclose(pixel, ref["pixel_values"], atol=1e-5)


@pytest.mark.parametrize("size", SIZES + [(1000, 1500)])
def test_point_and_box_transform_equal_sam_processor(size):
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    points = np.array([[0, 0], [w - 1, h - 1], [w / 3, h / 2]], np.float32)
    box = np.array([5, 7, w - 3, h - 11], np.float32)
    ref = sam_processor()(
        images=image, input_points=[[points.tolist()]], input_boxes=[[box.tolist()]], return_tensors="np"
    )
    np.testing.assert_allclose(sam_common.transform_coords_sam(points, size), ref["input_points"][0, 0], rtol=1e-6)
    np.testing.assert_allclose(
        sam_common.transform_coords_sam(box.reshape(2, 2), size).reshape(4), ref["input_boxes"][0, 0], rtol=1e-6
    )


@pytest.mark.parametrize("size", SIZES + [(1000, 1500), (1024, 1024), (100, 77)])
def test_postprocess_equals_post_process_masks(size):
    rng = np.random.default_rng(2)
    lowres = (rng.standard_normal((3, 256, 256)) * 5).astype(np.float32)
    proc = sam_processor()
    reshaped = sam_common.longest_side_shape(*size, 1024)
    ref = proc.post_process_masks(torch.from_numpy(lowres)[None, None], [size], [reshaped], binarize=False)[0][0]
    ref = ref.numpy()
    mine = sam_common.postprocess_sam(lowres, size)
    assert mine.shape == (3, *size)
    np.testing.assert_array_equal(sam_common.sam_masks(lowres, size), mine > 0)
    # cv2's bilinear weights are float32-rounded: differences stay ~1e-4 on logits of scale ~10.
    np.testing.assert_allclose(mine, ref, atol=2e-3)
    assert np.mean((mine > 0) != (ref > 0)) < 1e-4


def test_sam2_lowres_convention_round_trip():
    torch.manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 16, 16), (256, 256), mode="bilinear")[0].numpy() * 5
    for size in SIZES:
        padded = sam_common.sam2_lowres_to_padded(smooth, size)
        vh, vw = sam_common.longest_side_shape(*size, 256)
        assert padded.shape == (1, 256, 256) and np.all(padded[:, vh:, :] == -20) and np.all(padded[:, :, vw:] == -20)
        back = sam_common.padded_to_sam2_lowres(padded, size)
        assert iou(back[0] > 0, smooth[0] > 0) > 0.95


# --- engines against transformers ------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_sam_predictor_equals_transformers_recipe(sam_engine, images, size):
    """Predictor(engine) == SamProcessor + SamModel + post_process_masks, on non-square images."""
    image = images[size]
    h, w = size
    points = [[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]]
    predictor = Predictor(sam_engine)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(np.array(points), np.array([1, 0]), multimask_output=True)
    assert masks.shape == (3, h, w) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32 and logits.shape == (3, 256, 256)

    proc = sam_processor()
    inputs = proc(images=image, input_points=[[points]], input_labels=[[[1, 0]]], return_tensors="pt")
    with torch.no_grad():
        out = sam_engine.model(
            pixel_values=inputs["pixel_values"],
            input_points=inputs["input_points"],
            input_labels=inputs["input_labels"],
            multimask_output=True,
        )
    np.testing.assert_allclose(logits, out.pred_masks[0, 0].numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, out.iou_scores[0, 0].clamp(0, 1).numpy(), atol=1e-4)
    ref = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0]
    for k in range(3):
        assert iou(masks[k], ref[k].numpy()) >= 0.99


def test_sam_box_and_single_mask_equal_transformers(sam_engine, embeddings, images):
    size = SIZES[0]
    h, w = size
    box = [w * 0.2, h * 0.1, w * 0.8, h * 0.9]
    emb = embeddings[("sam", size)]
    pred = sam_engine.decode(emb, validate_prompt(size, box=box), multimask_output=False)
    assert pred.masks.shape == (1, h, w)
    inputs = sam_processor()(images=images[size], input_boxes=[[box]], return_tensors="pt")
    with torch.no_grad():
        out = sam_engine.model(
            image_embeddings=torch.from_numpy(emb.arrays["image_embeddings"]),
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
    np.testing.assert_allclose(pred.logits, out.pred_masks[0, 0].numpy(), atol=1e-3)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_embedding_equals_get_image_embeddings(family, sam_engine, sam2_engine, embeddings, images):
    engine = sam_engine if family == "sam" else sam2_engine
    size = SIZES[1]
    if family == "sam":
        pixel = sam_processor()(images=images[size], return_tensors="pt")["pixel_values"]
        names = ["image_embeddings"]
    else:
        pixel = torch.from_numpy(sam_common.preprocess_sam2(images[size]))
        names = ["high_res_feats_0", "high_res_feats_1", "image_embeddings"]
    with torch.no_grad():
        ref = engine.model.get_image_embeddings(pixel)
    ref = [ref] if family == "sam" else ref
    emb = embeddings[(family, size)]
    for name, r in zip(names, ref):
        np.testing.assert_allclose(emb.arrays[name], r.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", SIZES)
def test_sam2_equals_transformers_forward(sam2_engine, embeddings, size):
    h, w = size
    emb = embeddings[("sam2", size)]
    points = np.array([[w * 0.5, h * 0.5], [w * 0.1, h * 0.2]], np.float32)
    box = np.array([w * 0.2, h * 0.1, w * 0.8, h * 0.9], np.float32)
    feats = [torch.from_numpy(emb.arrays[k]) for k in ("high_res_feats_0", "high_res_feats_1", "image_embeddings")]
    scale = np.array([1024 / w, 1024 / h], np.float32)
    for multimask in (True, False):
        pred = sam2_engine.decode(emb, validate_prompt(size, points, [1, 0], box), multimask)
        with torch.no_grad():
            out = sam2_engine.model(
                image_embeddings=feats,
                input_points=torch.from_numpy(points * scale)[None, None],
                input_labels=torch.tensor([[[1, 0]]]),
                input_boxes=torch.from_numpy((box.reshape(2, 2) * scale).reshape(1, 1, 4)),
                multimask_output=multimask,
            )
        ref_lowres = out.pred_masks[0, 0].numpy()
        assert pred.masks.shape == (3 if multimask else 1, h, w)
        np.testing.assert_allclose(pred.scores, np.clip(out.iou_scores[0, 0].numpy(), 0, 1), atol=1e-4)
        ref_masks = sam_common.postprocess_sam2(ref_lowres, size) > 0
        for k in range(len(pred.masks)):
            assert iou(pred.masks[k], ref_masks[k]) >= 0.99
        np.testing.assert_allclose(pred.logits, sam_common.sam2_lowres_to_padded(ref_lowres, size), atol=1e-3)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_multimask_three_vs_one_and_mask_input_round_trip(family, sam_engine, sam2_engine, embeddings):
    engine = sam_engine if family == "sam" else sam2_engine
    size = SIZES[1]
    h, w = size
    predictor = Predictor(engine)
    predictor.set_embedding(embeddings[(family, size)])
    masks3, scores3, logits3 = predictor.predict([[w / 2, h / 2]], [1], multimask_output=True)
    masks1, scores1, logits1 = predictor.predict([[w / 2, h / 2]], [1], multimask_output=False)
    assert masks3.shape == (3, h, w) and masks1.shape == (1, h, w)
    assert logits3.shape == (3, 256, 256) and logits1.shape == (1, 256, 256)
    assert np.all((scores3 >= 0) & (scores3 <= 1))
    # Feed the best low-res logits back, as an annotation tool does on the next click.
    best = logits3[np.argmax(scores3)][None]
    masks_r, _, logits_r = predictor.predict([[w / 2, h / 2], [w / 4, h / 4]], [1, 0], mask_input=best)
    assert masks_r.shape == (3, h, w)
    without = predictor.predict([[w / 2, h / 2], [w / 4, h / 4]], [1, 0])[2]
    assert not np.allclose(logits_r, without, atol=1e-3), "mask_input must change the prediction"
    if family == "sam":  # SAM: our logits are the model's own; the HF model with input_masks must agree
        emb = embeddings[(family, size)]
        pts = sam_common.transform_coords_sam(np.array([[w / 2, h / 2], [w / 4, h / 4]]), size)
        with torch.no_grad():
            out = engine.model(
                image_embeddings=torch.from_numpy(emb.arrays["image_embeddings"]),
                input_points=torch.from_numpy(pts)[None, None],
                input_labels=torch.tensor([[[1, 0]]]),
                input_masks=torch.from_numpy(best)[None],
            )
        np.testing.assert_allclose(logits_r, out.pred_masks[0, 0].numpy(), atol=1e-3)


def test_sam_hq_engine_equals_transformers_and_onnx_equals_torch(tmp_path, cache_dir, images):
    engine = load_sam_engine(str(make_tiny_sam_hq(tmp_path / "hq")), decoder="onnx", encoder_dtype="float32")
    assert engine.family == "sam-hq" and engine.decoder_backend == "onnx"
    size = SIZES[0]
    h, w = size
    emb = engine.embed(images[size])
    assert emb.arrays["intermediate_embeddings_0"].shape == (1, 64, 64, 48)
    points = np.array([[w * 0.4, h * 0.5], [w * 0.8, h * 0.3]], np.float32)
    box = np.array([w * 0.1, h * 0.2, w * 0.7, h * 0.9], np.float32)
    for multimask in (True, False):
        pred = engine.decode(emb, validate_prompt(size, points, [1, 0], box), multimask)
        with torch.no_grad():
            out = engine.model(
                image_embeddings=torch.from_numpy(emb.arrays["image_embeddings"]),
                intermediate_embeddings=[torch.from_numpy(emb.arrays["intermediate_embeddings_0"])],
                input_points=torch.from_numpy(sam_common.transform_coords_sam(points, size))[None, None],
                input_labels=torch.tensor([[[1, 0]]]),
                input_boxes=torch.from_numpy(sam_common.transform_coords_sam(box.reshape(2, 2), size).reshape(1, 1, 4)),
                multimask_output=multimask,
            )
        np.testing.assert_allclose(pred.logits, out.pred_masks[0, 0].numpy(), atol=1e-3)
        engine.set_decoder("torch")
        ref = engine.decode(emb, validate_prompt(size, points, [1, 0], box), multimask)
        engine.set_decoder("onnx")
        np.testing.assert_allclose(pred.logits, ref.logits, atol=1e-3)


# --- ONNX, batching, serialisation -----------------------------------------------------------------


def _prompts(size):
    h, w = size
    return [
        validate_prompt(size, [[w * 0.5, h * 0.5]], [1]),
        validate_prompt(size, [[w * 0.3, h * 0.3], [w * 0.9, h * 0.1], [w * 0.6, h * 0.7]], [1, 0, 1]),
        validate_prompt(size, box=[w * 0.1, h * 0.2, w * 0.7, h * 0.8]),
        validate_prompt(size, [[w * 0.4, h * 0.5]], [1], box=[w * 0.1, h * 0.2, w * 0.7, h * 0.8]),
        validate_prompt(size, [[w * 0.2, h * 0.6]], [1]),
    ]


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_onnx_decoder_equals_torch_decoder(family, sam_engine, sam2_engine, embeddings):
    engine = sam_engine if family == "sam" else sam2_engine
    assert engine.decoder_backend == "onnx"
    assert all(p.exists() for p in engine.export_onnx())
    for size in SIZES[:1] if family == "sam" else SIZES[1:]:
        emb = embeddings[(family, size)]
        prompts = _prompts(size)
        for multimask in (True, False):
            engine.set_decoder("onnx")
            onnx = engine.decode_batch(emb, prompts, multimask)
            engine.set_decoder("torch")
            ref = engine.decode_batch(emb, prompts, multimask)
            engine.set_decoder("onnx")
            for a, b in zip(onnx, ref):
                np.testing.assert_allclose(a.logits, b.logits, atol=1e-3)
                np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
                assert all(iou(x, y) >= 0.99 for x, y in zip(a.masks, b.masks))


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_fast_onnx_decoder_equals_torch_decoder_with_mask_input_and_fp16(family, sam_engine, sam2_engine, embeddings):
    """The fast ONNX graph (FastPromptDecoder) equals the torch PromptDecoder with mask inputs, in a batch and
    one by one, and on an fp16-stored embedding (per-image inputs prepared once, then reused)."""
    engine = sam_engine if family == "sam" else sam2_engine
    assert engine.fast_decoder and engine.decoder_backend == "onnx"
    size = SIZES[0]
    h, w = size
    emb = embeddings[(family, size)]
    first = engine.decode(emb, _prompts(size)[0], True)
    mask = first.logits[np.argmax(first.scores)][None]
    prompts = _prompts(size) + [
        validate_prompt(size, [[w * 0.3, h * 0.3], [w * 0.8, h * 0.7]], [1, 0], mask_input=mask),
        validate_prompt(size, box=[w * 0.1, h * 0.2, w * 0.7, h * 0.8], mask_input=mask),
    ]
    try:
        for multimask in (True, False):
            engine.set_decoder("torch")
            ref = engine.decode_batch(emb, prompts, multimask)
            engine.set_decoder("onnx")
            batch = engine.decode_batch(emb, prompts, multimask)
            single = [engine.decode(emb, p, multimask) for p in prompts]
            for a, b, c in zip(batch, single, ref):
                for got in (a, b):
                    np.testing.assert_allclose(got.logits, c.logits, atol=1e-3)
                    np.testing.assert_allclose(got.scores, c.scores, atol=1e-4)
                    assert all(iou(x, y) >= 0.99 for x, y in zip(got.masks, c.masks))
    finally:
        engine.set_decoder("onnx")
    half = sam_common.embedding_to_fp16(emb)
    for _ in range(2):  # the second call uses the prepared per-image inputs
        got = engine.decode(half, prompts[0], True)
        assert all(iou(x, y) >= 0.99 for x, y in zip(got.masks, first.masks))


def test_a_cached_graph_of_the_older_decoder_layout_is_exported_again(sam_engine):
    from maskwright.engines.onnx_decoder import (
        decoder_input_names,
        export_decoder,
        fast_decoder_input_names,
        graph_input_names,
        onnx_path,
    )

    path = onnx_path(sam_engine.onnx_dir(), True)
    export_decoder(sam_engine._torch_decoders[True], sam_engine._example_inputs(), path, 0)  # an older cache
    assert graph_input_names(path) == decoder_input_names(0)
    assert sam_engine.export_onnx()[0] == path
    assert graph_input_names(path) == fast_decoder_input_names(0)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_fast_prompt_decoder_plain_and_folded_equal_prompt_decoder(family, sam_engine, sam2_engine):
    """FastPromptDecoder in torch, with folded and with plain attention, against PromptDecoder (batch of 2,
    one prompt with a mask input, many tokens so the folded path is not the cheap case)."""
    from maskwright.engines.sam import FastPromptDecoder, PromptDecoder, nested_high_res

    engine = sam_engine if family == "sam" else sam2_engine
    model = engine.model
    g = torch.Generator().manual_seed(3)
    emb, *high = engine._encode_shapes()
    coords = torch.rand(2, 12, 2, generator=g) * 1000
    labels = torch.tensor([[1.0, 0.0] * 5 + [2.0, 3.0], [1.0] * 11 + [-1.0]])
    masks = torch.randn(2, 1, 256, 256, generator=g)
    has = torch.tensor([[1.0], [0.0]])
    with torch.no_grad():
        dense = model.prompt_encoder.mask_embed(masks).flatten(2).transpose(1, 2)
        no_mask = model.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1)
        tokens = emb.flatten(2).transpose(1, 2) + torch.where(has[:, :, None] > 0, dense, no_mask)
        nested = [torch.from_numpy(nested_high_res(f.numpy(), tuple(emb.shape[-2:]))) for f in high[::-1]]
        for multimask in (True, False):
            ref_masks, ref_scores = PromptDecoder(model, family, multimask)(emb, coords, labels, masks, has, *high)
            for folded in (True, False):
                got_masks, got_scores = FastPromptDecoder(model, family, multimask, folded)(
                    tokens, coords, labels, *nested
                )
                np.testing.assert_allclose(got_masks.numpy(), ref_masks.numpy(), atol=1e-4)
                np.testing.assert_allclose(got_scores.numpy(), ref_scores.numpy(), atol=1e-5)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_decode_batch_equals_per_prompt_decode(family, sam_engine, sam2_engine, embeddings, monkeypatch):
    import maskwright.engines.sam as sam_module

    monkeypatch.setattr(sam_module, "BATCH_CHUNK", 4)  # exercise chunking with few prompts
    engine = sam_engine if family == "sam" else sam2_engine
    assert engine.supports_batch
    size = SIZES[0]
    emb = embeddings[(family, size)]
    h, w = size
    # Segment-everything style: many single-point prompts, plus mixed shapes grouped internally.
    grid = [
        validate_prompt(size, [[x, y]], [1]) for x in np.linspace(10, w - 10, 3) for y in np.linspace(10, h - 10, 2)
    ]
    prompts = grid + _prompts(size)
    batch = engine.decode_batch(emb, prompts, multimask_output=True)
    assert len(batch) == len(prompts)
    for prompt, got in zip(prompts, batch):
        one = engine.decode(emb, prompt, multimask_output=True)
        np.testing.assert_allclose(got.logits, one.logits, atol=1e-3)
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-4)


def test_clicks_use_every_core_only_when_the_cpu_is_idle(sam_dir, cache_dir, embeddings, monkeypatch):
    """Default click decoding: one ONNX Runtime thread, all cores for a click that finds the CPU idle; the
    same logits either way. An explicit thread count is kept whatever the load."""
    engine = load_sam_engine(str(sam_dir), decoder="onnx", encoder_dtype="float32")
    assert engine.decoder_threads == 1 and engine.idle_decoder_threads == (os.cpu_count() or 1)
    emb = embeddings[("sam", SIZES[0])]
    prompt = _prompts(SIZES[0])[0]
    load = {"others": 3}
    monkeypatch.setattr(sam_common, "other_runnable_tasks", lambda: load["others"])
    busy = engine.decode(emb, prompt, multimask_output=True)
    assert engine._onnx_session(True, False).threads == 1
    load["others"] = 0
    idle = engine.decode(emb, prompt, multimask_output=True)
    assert engine._onnx_session(True, False).threads == engine.idle_decoder_threads == (os.cpu_count() or 1)
    np.testing.assert_allclose(idle.logits, busy.logits, atol=1e-4)
    np.testing.assert_allclose(idle.scores, busy.scores, atol=1e-5)
    engine._encoding.set()  # an encode running in this engine makes the CPU busy whatever the load says
    try:
        assert not engine.cpu_is_idle() and engine._onnx_session(True, False).threads == 1
    finally:
        engine._encoding.clear()
    fixed = load_sam_engine(str(sam_dir), decoder="onnx", encoder_dtype="float32", decoder_threads=1)
    assert fixed.idle_decoder_threads == 1 and fixed._onnx_session(True, False).threads == 1


def test_concurrent_clicks_do_not_each_take_every_core(sam_dir, cache_dir, embeddings, monkeypatch):
    """The idle-CPU test cannot see this process's own decoder threads, so a click decoded while another
    decode of the same engine is in flight uses one thread; alone again, it takes every core."""
    import threading

    from maskwright.engines.onnx_decoder import OnnxDecoder

    engine = load_sam_engine(str(sam_dir), decoder="onnx", encoder_dtype="float32")
    emb = embeddings[("sam", SIZES[0])]
    prompt = _prompts(SIZES[0])[0]
    monkeypatch.setattr(sam_common, "other_runnable_tasks", lambda: 0)
    entered, release, used = threading.Event(), threading.Event(), []
    run = OnnxDecoder.run

    def held_run(self, feeds):
        if threading.current_thread().name == "first-click":
            entered.set()
            release.wait(30)
        else:
            used.append(self.threads)
        return run(self, feeds)

    monkeypatch.setattr(OnnxDecoder, "run", held_run)
    first = threading.Thread(target=engine.decode, args=(emb, prompt, True), name="first-click")
    first.start()
    try:
        assert entered.wait(30)
        during = engine.decode(emb, prompt, multimask_output=True)
    finally:
        release.set()
        first.join(30)
    alone = engine.decode(emb, prompt, multimask_output=True)
    assert used == [1, engine.idle_decoder_threads]
    np.testing.assert_allclose(during.logits, alone.logits, atol=1e-4)


def test_other_runnable_tasks_reads_the_instantaneous_count():
    others = sam_common.other_runnable_tasks()
    if not Path("/proc/loadavg").exists():
        assert others is None
    else:
        assert isinstance(others, int) and others >= 0


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_embedding_serialisation_round_trip_and_fp16(family, sam_engine, sam2_engine, embeddings):
    engine = sam_engine if family == "sam" else sam2_engine
    size = SIZES[0]
    emb = embeddings[(family, size)]
    if family == "sam2":
        assert {"image_embeddings", "high_res_feats_0", "high_res_feats_1"} <= set(emb.arrays)
    back = Embedding.from_bytes(emb.to_bytes())
    assert back.engine == emb.engine and back.engine_version == emb.engine_version
    assert back.original_size == emb.original_size
    for k, v in emb.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
    half = Embedding.from_bytes(sam_common.embedding_to_fp16(emb).to_bytes())
    assert all(a.dtype == np.float16 for a in half.arrays.values())
    assert len(half.to_bytes()) < 0.6 * len(emb.to_bytes())
    for prompt in _prompts(size):
        full = engine.decode(emb, prompt, True)
        approx = engine.decode(half, prompt, True)
        for a, b in zip(full.masks, approx.masks):
            assert iou(a, b) >= 0.99
    predictor = Predictor(engine)
    predictor.set_embedding(back)
    assert predictor.original_size == size


def test_bf16_encoder_agrees_with_fp32(sam_dir, cache_dir, images, embeddings):
    """bf16 autocast encoding (the fast path on AMX CPUs) keeps masks (IoU >= 0.98 on the best mask)."""
    engine = load_sam_engine(str(sam_dir), decoder="torch", encoder_dtype="bfloat16")
    size = SIZES[0]
    emb16 = engine.embed(images[size])
    emb32 = embeddings[("sam", size)]
    assert emb16.meta["encoder_dtype"] == "bfloat16" and emb16.arrays["image_embeddings"].dtype == np.float32
    ious = []
    for prompt in _prompts(size):
        a = engine.decode(emb32, prompt, False).masks[0]
        b = engine.decode(emb16, prompt, False).masks[0]
        ious.append(iou(a, b))
    assert np.mean(ious) >= 0.98, ious


def test_sam2_bf16_encoder_equals_transformers_bf16_and_agrees_with_fp32(sam2_dir, cache_dir, images, embeddings):
    """SAM 2's lean Hiera forward in bf16 (fused oneDNN linears) matches transformers' own forward with the
    same bf16 weights, and its masks agree with the fp32 embedding's (IoU >= 0.98)."""
    engine = load_sam_engine(str(sam2_dir), decoder="onnx", encoder_dtype="bfloat16")
    size = SIZES[1]
    emb16 = engine.embed(images[size])
    assert emb16.meta["encoder_dtype"] == "bfloat16"
    pixel = torch.from_numpy(sam_common.preprocess_sam2(images[size])).to(torch.bfloat16)
    with torch.no_grad():
        levels = engine.model.vision_encoder(pixel).fpn_hidden_states
        ref = levels[-1].float() + engine.model.no_memory_embedding.reshape(1, -1, 1, 1)
        # the high-res levels: neck lateral and conv_s0 / conv_s1 folded into one fp32 projection here
        ref_s0 = engine.model.mask_decoder.conv_s0(levels[0].float())
        ref_s1 = engine.model.mask_decoder.conv_s1(levels[1].float())
    for name, r in (("image_embeddings", ref), ("high_res_feats_0", ref_s0), ("high_res_feats_1", ref_s1)):
        got = torch.from_numpy(emb16.arrays[name])
        assert got.shape == r.shape
        assert float((got - r).abs().max()) <= 0.02 * float(r.abs().max()), name
    emb32 = embeddings[("sam2", size)]
    ious = [
        iou(engine.decode(emb16, p, False).masks[0], engine.decode(emb32, p, False).masks[0]) for p in _prompts(size)
    ]
    assert np.mean(ious) >= 0.98, ious


def test_decode_rejects_an_embedding_of_another_family(sam2_engine, embeddings):
    size = SIZES[0]
    with pytest.raises(ValueError, match="high_res_feats_0"):
        sam2_engine.decode(embeddings[("sam", size)], validate_prompt(size, [[5, 5]], [1]), True)


def test_engine_options_are_validated(sam_dir, cache_dir):
    with pytest.raises(ValueError, match="decoder must be one of"):
        load_sam_engine(str(sam_dir), decoder="tensorrt")
    with pytest.raises(ValueError, match="encoder_dtype must be one of"):
        load_sam_engine(str(sam_dir), encoder_dtype="int4")


# --- registry and availability -----------------------------------------------------------------------


def _fake_hf_cache(root: Path, hub_id: str, model_dir: Path) -> Path:
    """Lay out ``model_dir`` as the HF cache does (models--org--name/snapshots/<rev>, refs/main)."""
    repo = root / "hub" / ("models--" + hub_id.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in model_dir.iterdir():
        (snapshot / f.name).symlink_to(f)
    return snapshot


def test_without_weights_sam_engines_are_listed_unavailable_and_predictor_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MASKWRIGHT_MODELS_DIR", raising=False)
    listed = {spec.name: (ok, reason) for spec, ok, reason in registry.available_engines()}
    for name in hub.CATALOGUE:
        assert name in listed and listed[name][0] is False
    assert "maskwright models pull sam2.1-hiera-tiny" in listed["sam2.1-hiera-tiny"][1]
    assert registry.best_available() not in hub.CATALOGUE
    with pytest.raises(registry.EngineUnavailableError, match="sam-vit-base"):
        registry.create_engine("sam-vit-base")
    if registry.best_available() == "classic":
        with caplog.at_level(logging.WARNING):
            predictor = Predictor()
        assert predictor.engine.name == "classic"
        assert "no SAM weights" in caplog.text


def test_default_engine_is_sam2_tiny_when_its_weights_are_cached(tmp_path, monkeypatch, sam2_dir, cache_dir):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = _fake_hf_cache(tmp_path / "hf", hub.CATALOGUE["sam2.1-hiera-tiny"].hub_id, sam2_dir)
    ok, where = registry.get_spec("sam2.1-hiera-tiny").availability()
    assert ok and Path(where) == snapshot
    assert registry.best_available() == "sam2.1-hiera-tiny"
    assert hub.resolve_model_dir("sam2.1-hiera-tiny") == snapshot
    monkeypatch.setenv("MASKWRIGHT_SAM_DECODER", "torch")  # keep this test fast: no export for the new path
    predictor = Predictor()
    assert predictor.engine.name == "sam2.1-hiera-tiny" and predictor.engine.family == "sam2"


def test_models_dir_and_local_directory_engines(tmp_path, monkeypatch, sam_dir, cache_dir):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MASKWRIGHT_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "slimsam-77").symlink_to(sam_dir, target_is_directory=True)
    assert registry.get_spec("slimsam-77").availability()[0]
    monkeypatch.setenv("MASKWRIGHT_SAM_DECODER", "torch")
    engine = registry.create_engine(str(sam_dir))
    assert engine.family == "sam" and engine.decoder_backend == "torch"
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(registry.UnknownEngineError):
        registry.create_engine(str(not_a_model))


def test_model_dirs_accept_safetensors_or_pytorch_bin(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "sam"}')
    assert not hub.is_model_dir(folder)
    (folder / "pytorch_model.bin").write_bytes(b"x")
    assert hub.is_model_dir(folder) and hub.weight_files(folder) == [folder / "pytorch_model.bin"]
    (folder / "model.safetensors").write_bytes(b"x")
    assert hub.weight_files(folder) == [folder / "model.safetensors"]
    assert hub.read_model_type(folder) == "sam"


def test_folded_projection_equals_two_convs_and_refuses_non_1x1():
    from maskwright.engines.sam2 import folded_projection

    torch.manual_seed(0)
    lateral, projection = torch.nn.Conv2d(12, 16, 1), torch.nn.Conv2d(16, 4, 1)
    x = torch.randn(1, 9, 7, 12)  # channels last, as Hiera's stage outputs
    weight, bias = folded_projection(lateral, projection)
    with torch.no_grad():
        ref = projection(lateral(x.permute(0, 3, 1, 2)))
    got = torch.nn.functional.linear(x, weight, bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert folded_projection(torch.nn.Conv2d(12, 16, 3, padding=1), projection) is None


def test_hiera_pool_equals_transformers_do_pool():
    from transformers.models.sam2.modeling_sam2 import do_pool

    from maskwright.engines.sam2 import _pool

    g = torch.Generator().manual_seed(0)
    for shape in ((2, 8, 8, 6), (1, 9, 7, 4), (16, 4, 4, 12)):
        x = torch.randn(shape, generator=g).to(torch.bfloat16)
        for view in (x, x[..., ::2]):  # contiguous and strided, as the query slice of the qkv projection
            assert torch.equal(_pool(view, (2, 2)), do_pool(view, (2, 2)))
    assert _pool(x, None) is x
