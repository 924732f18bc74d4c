"""The lean SAM ViT forward (``engines/sam_vit.py``) computes what ``transformers`` computes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from maskwright.engines.sam_vit import vit_image_embeddings  # noqa: E402


def random_vit(window_size: int, use_abs_pos: bool = True):
    from transformers import SamVisionConfig, SamVisionModel

    config = SamVisionConfig(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=3,
        global_attn_indexes=[1],
        mlp_dim=96,
        window_size=window_size,
        output_channels=32,
        image_size=256,  # 16x16 tokens
        use_abs_pos=use_abs_pos,
    )
    model = SamVisionModel(config).eval()
    g = torch.Generator().manual_seed(window_size)
    with torch.no_grad():  # SAM's initializer_range is 1e-10: give every weight, rel-pos tables included, a real scale
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5 if p.ndim >= 2 else 5.0))
    return model


@pytest.mark.parametrize("window_size, use_abs_pos", [(4, True), (5, True), (6, False)])  # 5, 6: padded windows
def test_lean_vit_equals_transformers(window_size, use_abs_pos):
    model = random_vit(window_size, use_abs_pos)
    pixel = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model.vision_encoder(pixel).last_hidden_state
        out = vit_image_embeddings(model.vision_encoder, pixel)
    assert out.shape == ref.shape == (2, 32, 16, 16)
    assert ref.abs().max() > 0.1  # a dead (1e-10-initialised) model would make the comparison vacuous
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_lean_vit_bf16_close_to_transformers_bf16():
    model = random_vit(5).to(torch.bfloat16)
    pixel = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with torch.inference_mode():
        ref = model.vision_encoder(pixel).last_hidden_state.float()
        out = vit_image_embeddings(model.vision_encoder, pixel).float()
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert cos > 0.999, float(cos)
