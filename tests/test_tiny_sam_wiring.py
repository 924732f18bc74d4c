"""The hand-wired prompt path of the tiny SAM fixture (``tools/tiny_sam_wiring.py``), before any training.

On an image embedding made of regions with known codes, the wired decoder must already do what SAM's
does: a click selects its region, two clicks their union, a negative click removes its region, a box its
content inside the box -- and training must not move a wired weight.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import tiny_sam_wiring as wiring  # noqa: E402
import train_tiny_sam as trainer  # noqa: E402

# regions of the 64x64 token grid: 0 left, 1 right, 2 a disc in the left half, 3 a rectangle in the right
yy, xx = np.mgrid[0:64, 0:64]
region_of_token = (xx >= 32).astype(int)
region_of_token[(xx - 20) ** 2 + (yy - 40) ** 2 < 100] = 2
region_of_token[(abs(xx - 45) < 6) & (abs(yy - 20) < 9)] = 3


def set_codes(emb: torch.Tensor, codes: torch.Tensor) -> None:
    """Write the (K, 64, 64) codes into every code group of the image embedding (CODE, and CODE2 that only
    MATCH reads: the same codes there)."""
    for group in wiring.MATCH_CODE:
        emb[0, group] = codes


@pytest.fixture(scope="module")
def wired():
    model = trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16, heads=1).eval()
    wiring.wire_prompt_path(model)
    torch.manual_seed(1)
    # four orthogonal codes with zero mean (the readout compares centred codes)
    basis = torch.linalg.qr(torch.cat([torch.ones(wiring.K, 1), torch.randn(wiring.K, 4)], 1))[0][:, 1:]
    codes = basis.T * 2
    emb = torch.randn(1, wiring.WIDTH, 64, 64) * 0.5  # the encoder's other channels: noise
    emb[:, wiring.IMAGE_RESERVED] = 0.0  # what the wired neck gives
    emb[:, wiring.BALLAST[0]], emb[:, wiring.BALLAST[1]] = wiring.B, -wiring.B
    set_codes(emb, codes[torch.from_numpy(region_of_token)].permute(2, 0, 1))
    return model, emb


def decode(wired, points=None, labels=None, box=None) -> np.ndarray:
    """(64, 64) single-mask logits averaged per token."""
    model, emb = wired
    sparse, dense = model.prompt_encoder(
        input_points=None if points is None else torch.tensor([[points]], dtype=torch.float32),
        input_labels=None if labels is None else torch.tensor([[labels]]),
        input_boxes=None if box is None else torch.tensor([[box]], dtype=torch.float32),
        input_masks=None,
    )
    with torch.no_grad():
        masks, _ = model.mask_decoder(emb, model.get_image_wide_positional_embeddings(), sparse, dense, False)
    return masks[0, 0, 0].reshape(64, 4, 64, 4).mean((1, 3)).numpy()


def interior(region: int) -> np.ndarray:
    """Tokens of ``region`` at least 2 tokens from any other region (the wiring gathers within 1.5)."""
    import cv2

    inside = (region_of_token == region).astype(np.uint8)
    return cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1] >= 2


def separation(logits: np.ndarray, selected: np.ndarray) -> float:
    """Lowest logit on the selected regions' interiors minus the highest on the others' interiors."""
    inner = [interior(r) for r in range(4)]
    on = np.concatenate([logits[inner[r]] for r in range(4) if selected[r]])
    off = np.concatenate([logits[inner[r]] for r in range(4) if not selected[r]])
    return float(on.min() - off.max())


@pytest.mark.parametrize("region", [0, 1, 2, 3])
def test_a_click_selects_its_region_by_content(wired, region):
    rng = np.random.default_rng(region)
    ys, xs = np.nonzero(interior(region))
    for i in rng.choice(len(ys), 3, replace=False):
        x, y = (xs[i] + rng.uniform(0, 1)) * 16, (ys[i] + rng.uniform(0, 1)) * 16  # anywhere in the token
        assert separation(decode(wired, [[x, y]], [1]), np.arange(4) == region) > 0.2


def test_two_clicks_give_the_union_and_a_negative_click_removes(wired):
    a, b = [200.0, 200.0], [800.0, 600.0]  # regions 0 and 1
    assert separation(decode(wired, [a, b], [1, 1]), np.array([True, True, False, False])) > 0.2
    assert separation(decode(wired, [a, b, b], [1, 1, 0]), np.array([True, False, False, False])) > 0.2


def test_a_box_selects_the_content_inside_it(wired):
    model, _ = wired
    for region in (3, 2):
        ys, xs = np.nonzero(region_of_token == region)
        box = [xs.min() * 16, ys.min() * 16, (xs.max() + 1) * 16, (ys.max() + 1) * 16]
        logits = decode(wired, box=box)
        target = interior(region)
        outside = np.ones((64, 64), bool)
        outside[ys.min() - 1 : ys.max() + 2, xs.min() - 1 : xs.max() + 2] = False
        assert logits[target].min() > logits[outside].max() + 0.5


def refined_code(wired, points, labels, scale: float) -> np.ndarray:
    """The mask token's REFINED channels after layer 2's token->image attention, with the codes scaled to
    ``scale`` (the trained encoder's codes have a centred norm of about 5)."""
    model, emb = wired
    emb = emb.clone()
    set_codes(emb, emb[0, wiring.CODE] * scale / 2)
    cap = wiring._Capture(model.mask_decoder.transformer.layers[1].layer_norm2)
    try:
        decode((model, emb), points, labels)
    finally:
        cap.handle.remove()
    return cap.value[0, 0, 1, wiring.REFINED].numpy()


@pytest.mark.skipif(not wiring.REFINE, reason="the layout does not refine the clicks' code")
def test_the_clicks_code_is_refined_to_the_shapes_code(wired):
    """Layer 2 gathers the code of the whole region the clicks point to (A; A and B; A and not B)."""
    _, emb = wired
    codes = np.stack([emb[0, wiring.CODE][:, region_of_token == r].mean(1).numpy() for r in range(4)])
    codes = (codes - codes.mean(1, keepdims=True)) * 5 / 2

    def weights(refined):  # least squares on the 4 region codes (linearly independent once centred)
        return np.linalg.lstsq(codes.T, refined, rcond=None)[0]

    disc, rect = [20 * 16 + 8, 40 * 16 + 8], [45 * 16 + 8, 20 * 16 + 8]  # regions 2 and 3
    w = weights(refined_code(wired, [disc], [1], scale=5))
    assert w[2] > 0.8 and abs(w[[0, 1, 3]]).max() < 0.15, w
    w = weights(refined_code(wired, [disc, rect], [1, 1], scale=5))
    assert min(w[2], w[3]) > 0.25 and w[2] + w[3] > 0.85 and abs(w[[0, 1]]).max() < 0.15, w
    w = weights(refined_code(wired, [disc, rect, rect], [1, 1, 0], scale=5))
    assert w[2] > 0.6 and w[3] < 0.05, w


def region_match(model, emb, points=None, labels=None, box=None) -> list[float]:
    """Mean MATCH after layer 1 on each region's interior."""
    cap = wiring._Capture(model.mask_decoder.transformer.layers[0].layer_norm4)
    try:
        decode((model, emb), points, labels, box)
    finally:
        cap.handle.remove()
    keys = cap.value[0, 0].reshape(64, 64, -1)
    m = (keys[..., wiring.MATCH] - keys[..., wiring.IMAGE_ZERO]).numpy()
    return [float(m[interior(r)].mean()) for r in range(4)]


@pytest.mark.skipif(not wiring.CLICK_MATCH, reason="the layout has no MATCH channel")
def test_image_tokens_match_the_clicks(wired):
    """MATCH after layer 1: ~+1 on the clicked regions (both, for two clicks), ~0 elsewhere, < 0 where a
    negative click matches -- an OR of the clicks' regions, not the region nearest to their mean code."""
    model, emb = wired
    emb = emb.clone()
    set_codes(emb, emb[0, wiring.CODE] * 5 / 2)  # the trained encoder's codes have a centred norm of about 5

    def match(points, labels) -> list[float]:
        return region_match(model, emb, points, labels)

    disc, rect = [20 * 16 + 8, 40 * 16 + 8], [45 * 16 + 8, 20 * 16 + 8]  # regions 2 and 3
    m = match([disc], [1])
    assert m[2] > 0.8 and max(m[0], m[1], m[3]) < 0.05, m
    m = match([disc, rect], [1, 1])
    assert min(m[2], m[3]) > 0.8 and max(m[0], m[1]) < 0.05, m
    m = match([disc, rect, rect], [1, 1, 0])
    assert m[2] > 0.8 and m[3] < -0.2 and max(m[0], m[1]) < 0.05, m


def test_a_higher_match_offset_admits_only_closer_codes(wired):
    """scale_match_offset raises the bar a pixel's code must pass to match a click: a region whose code is
    close to the clicked one's (cosine 0.8) drops out of MATCH, the clicked region stays in."""
    model, emb = wired
    model = copy.deepcopy(model)
    emb = emb.clone()
    codes = emb[0, wiring.CODE] * 5 / 2
    disc_code = codes[:, 40, 20]  # region 2
    rect_code = codes[:, 20, 45]  # region 3, orthogonal to region 2's
    codes[:, torch.from_numpy(region_of_token == 3)] = (0.8 * disc_code + 0.6 * rect_code)[:, None]
    set_codes(emb, codes)

    def match() -> list[float]:
        return region_match(model, emb, [[20 * 16 + 8, 40 * 16 + 8]], [1])

    before = match()
    wiring.scale_match_offset(model, 1.3)
    after = match()
    assert before[3] > 0.3 and after[3] < 0.5 * before[3], (before, after)
    assert after[2] > 0.4 and after[2] > 4 * after[3], (before, after)


@pytest.mark.skipif(not wiring.CODE2, reason="MATCH compares only the readout's code")
def test_match_tells_regions_apart_by_the_extra_code(wired):
    """Regions 2 and 3 with the same CODE but orthogonal CODE2: a click on one matches it and not the other
    (with CODE alone they would be one). Every token gathers CODE2 where it looks; only the clicks keep it
    (CLICKCODE2): at the box corners, the pad and the output tokens it would pull attention from the clicks
    and the box edges."""
    model, emb = wired
    emb = emb.clone()
    codes = emb[0, wiring.CODE] * 5 / 2
    disc_code, rect_code = codes[:, 40, 20].clone(), codes[:, 20, 45].clone()  # regions 2 and 3: orthogonal
    set_codes(emb, codes)
    emb[0, wiring.CODE][:, torch.from_numpy(region_of_token == 3)] = disc_code[:, None]
    code2 = emb[0, wiring.CODE2]
    code2[:, torch.from_numpy(region_of_token == 3)] = rect_code[:, None]
    emb[0, wiring.CODE2] = code2
    disc = [20 * 16 + 8, 40 * 16 + 8]
    m = region_match(model, emb, [disc], [1])
    assert m[2] > 0.5 and m[3] < 0.5 * m[2] and max(m[0], m[1]) < 0.05, m

    cap = wiring._Capture(model.mask_decoder.transformer.layers[0].layer_norm3)
    try:
        decode((model, emb), [disc], [1], box=[640.0, 192.0, 816.0, 464.0])  # corners on regions 1 and 3
    finally:
        cap.handle.remove()
    kept = cap.value[0, 0][:, wiring.CLICKCODE2]
    kept = kept - kept.mean(1, keepdim=True)
    # tokens: iou, 4 mask, the click, the two corners
    assert torch.allclose(kept[5], disc_code - disc_code.mean(), atol=0.15), (kept[5], disc_code)
    # (not exactly 0: the label gates are set on an empty image, and the layer norms' scale moves a little
    # with the content; ungated, these entries are ~2)
    assert kept[[0, 1, 2, 3, 4, 6, 7]].abs().max() < 0.1, kept


def test_image_tokens_know_the_box_exactly(wired):
    """IX / IY after the two image->token attentions: ~0 inside the box's range, ~-1 outside, with the
    edge between the right tokens (a shift of a token would fail this)."""
    model, emb = wired
    cap = wiring._Capture(model.mask_decoder.transformer.layers[1].layer_norm4)
    try:
        decode(wired, box=[640.0, 192.0, 816.0, 464.0])  # tokens x 40..50, y 12..28
    finally:
        cap.handle.remove()
    keys = cap.value[0, 0].reshape(64, 64, -1)
    ix = (keys[..., wiring.IX] - keys[..., wiring.IMAGE_ZERO]).numpy()
    iy = (keys[..., wiring.IY] - keys[..., wiring.IMAGE_ZERO]).numpy()
    assert ix[:, 40:51].min() > -0.2 and ix[:, :40].max() < -0.5 and ix[:, 51:].max() < -0.5
    assert iy[12:29].min() > -0.2 and iy[:12].max() < -0.5 and iy[29:].max() < -0.5


@pytest.mark.parametrize("train_match_offset", [False, True])
def test_training_keeps_the_wiring(train_match_offset):
    """Wired entries stay through a training step; MATCH's offset moves only when asked to train."""
    model = trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16, heads=1)
    wiring.wire_prompt_path(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    partial = wiring.fix_wiring(model, train_match_offset)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.0)
    sparse, dense = model.prompt_encoder(
        input_points=torch.tensor([[[[300.0, 300.0], [600.0, 500.0]]]]),
        input_labels=torch.tensor([[[1, 0]]]),  # both signs: each has an offset entry
        input_boxes=None,
        input_masks=None,
    )
    emb = model.vision_encoder(torch.randn(1, 3, 1024, 1024)).last_hidden_state
    masks, iou = model.mask_decoder(emb, model.get_image_wide_positional_embeddings(), sparse, dense, True)
    (masks.square().mean() + iou.sum()).backward()
    opt.step()
    params = dict(model.named_parameters())
    moved = 0
    for name, mask in wiring.wired_entries(model, train_match_offset).items():
        assert torch.equal(params[name].detach()[mask], before[name][mask]), name
        moved += int((params[name].detach() != before[name]).any())
    assert partial and moved > 0  # partly wired parameters still train outside their wired entries
    name = "mask_decoder.transformer.layers.0.cross_attn_image_to_token.k_proj.weight"
    for row, col in wiring.match_offset_entries():
        assert (params[name][row, col] != before[name][row, col]) == train_match_offset
    with pytest.raises(ValueError, match="1 attention head"):
        wiring.wire_prompt_path(trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16))
