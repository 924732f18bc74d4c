"""A hand-wired start for the tiny SAM's prompt path: clicks select by *content*, exactly, from step 0.

Trained from a random start, the tiny mask decoder learns "a disk around the click" and leaves it only
slowly (docs/benchmarks.md, "Tiny SAM fixture training"). Here the part of the decoder that turns clicks
into "the content to look for" is set by hand and kept fixed while the rest trains:

1. **Positions.** The random Fourier features get 12 designed frequencies (periods of 4 to 32 tokens in
   golden-angle directions) in half of their sin/cos pairs; the other 12 frequencies are zero, so those
   channels are constant. The image embedding is kept at exactly zero in the 24 positional channels
   (``POS``; the neck's last layer norm has weight and bias 0 there), so an attention that reads only
   ``POS`` matches a point's code against the image tokens' codes and nothing else: a click's attention
   puts > 99 % of its mass within 1.5 tokens of the click.
2. **Labels.** Prompt embeddings are one-hot label codes (positive, negative, pad, box corner, mask
   token, IoU token) outside ``POS``. The first self-attention copies each token's label into its state.
3. **Gather.** The first token->image attention makes every click token fetch the image embedding's
   first ``CODE`` channels at its position (the channels the instance loss shapes).
4. **Sign.** The first MLP writes +code for positive clicks, -code for negative ones and 0 for anything
   else (four ReLUs per channel, gated by the label).
5. **Collect.** The second self-attention makes the mask tokens average the signed codes of all clicks
   into ``READ``: one click -> its code; clicks on A and B -> (A + B) / 2; and a negative click on B ->
   (A + B - B) / 3, i.e. "like A, unlike B".
6. **Read out.** The upscaling convolutions pass the image's ``CODE`` channels through and the
   hypernetworks start as "centred ``READ`` . pixel code - beta" (as in the click-readout start).

Layer norms would rescale every token by its own statistics; two constant ``BALLAST`` channels (+-30)
dominate them so that they act as a fixed scale, and a ``MIRROR`` channel keeps every token's channel sum
constant so that their mean shift is the same for all tokens.

Everything else (the later attentions, the second MLP, the image->token attentions, the upscaling, the
hypernetworks, the IoU head, the encoder) trains as usual, but may only write into ``POS`` channels of the
tokens (``POS`` is free once the clicks have been gathered). Boxes have no wired path: they are learned by
those parts. :func:`fix_wiring` keeps the wired entries as set (gradient masks, no weight decay).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

WIDTH = 48  # decoder width the layout is made for (= image-embedding channels)
N_FREQ = 12  # designed Fourier frequencies (of WIDTH // 2)
POS = list(range(12, 24)) + list(range(36, 48))  # sin / cos channels of the designed frequencies
CODE = list(range(0, 5))  # image: content code; tokens: the code gathered at the click
SIGNED = list(range(5, 10))  # tokens: +code (positive click), -code (negative click), 0 otherwise
MIRROR = 11  # tokens: minus the sum of CODE, SIGNED and READ, so the channel sum never changes
READ = list(range(24, 29))  # mask tokens: the mean signed code of all clicks
BALLAST = (29, 30)  # +B, -B in every token: fixes the layer norms' scale
LABEL = {"positive": 31, "negative": 32, "pad": 33, "corner": 34, "mask": 35, "iou": 10}
PROTECTED = sorted(set(CODE + SIGNED + READ + [MIRROR, *BALLAST, *LABEL.values()]))
B = 30.0  # ballast
L = 3.0  # label magnitude after the first layer norm
M = 6.0  # sign gate: larger than any code entry
GATHER_GAIN = 4.0  # attention logit per unit of the positional kernel (kernel peak: N_FREQ)


def designed_frequencies(n: int = N_FREQ, fmax: float = 8.0, fmin: float = 1.0) -> torch.Tensor:
    """(2, n) frequencies in cycles per unit of SAM's [-1, 1] coordinate: magnitudes fmin..fmax
    (geometric; fmax 8 = a period of 4 tokens), directions spread by the golden angle."""
    angle = math.pi * ((np.arange(n) * 0.6180339887) % 1.0)
    mag = np.geomspace(fmin, fmax, n)
    return torch.tensor(np.stack([mag * np.cos(angle), mag * np.sin(angle)]), dtype=torch.float32)


def _select(rows: list[int], width: int, scale: float = 1.0) -> torch.Tensor:
    w = torch.zeros(len(rows), width)
    for r, c in enumerate(rows):
        w[r, c] = scale
    return w


def _ln_fixed(ln: nn.LayerNorm, protected_scale: float) -> None:
    """Token layer norm: protected channels at a fixed scale, ballast re-set, POS free (identity)."""
    ln.weight.fill_(1.0)
    ln.bias.zero_()
    ln.weight[PROTECTED] = protected_scale
    ln.bias[PROTECTED] = 0.0
    for c, sign in zip(BALLAST, (1.0, -1.0)):
        ln.weight[c] = 0.0
        ln.bias[c] = sign * B


def _zero(*linears: nn.Linear) -> None:
    for lin in linears:
        lin.weight.zero_()
        if lin.bias is not None:
            lin.bias.zero_()


def wire_click_path(model) -> None:
    """Set the prompt path of :mod:`this module <tiny_sam_wiring>` in ``model`` (a fresh tiny SamModel
    with decoder width 48, 1 attention head, 2 two-way layers). Call :func:`fix_wiring` before training."""
    dec = model.mask_decoder
    t = dec.transformer
    if dec.iou_token.weight.shape[1] != WIDTH or len(t.layers) != 2 or t.layers[0].self_attn.num_attention_heads != 1:
        raise ValueError("the wired click path needs decoder width 48, 2 two-way layers and 1 attention head")
    pe = model.config.vision_config.num_pos_feats
    if 2 * pe != WIDTH:
        raise ValueError(f"num_pos_feats must be {WIDTH // 2}")
    with torch.no_grad():
        _wire_positions_and_labels(model)
        _wire_gather_and_sign(t.layers[0])
        _wire_collect(t.layers[1])
        for ln in (t.layers[1].layer_norm2, t.layers[1].layer_norm3, t.layer_norm_final_attn):
            _ln_fixed(ln, B / math.sqrt(24))
        # trainable paths start silent
        for lin in (
            t.layers[1].cross_attn_token_to_image.out_proj,
            t.layers[1].mlp.lin2,
            t.final_attn_token_to_image.out_proj,
            t.layers[0].cross_attn_image_to_token.out_proj,
            t.layers[1].cross_attn_image_to_token.out_proj,
        ):
            _zero(lin)
        _wire_readout(dec)
        _calibrate_sign(model)


def _wire_positions_and_labels(model) -> None:
    freqs = torch.zeros(2, WIDTH // 2)
    freqs[:, WIDTH // 2 - N_FREQ :] = designed_frequencies()
    model.shared_image_embedding.positional_embedding.copy_(freqs)
    model.prompt_encoder.shared_embedding.positional_embedding.copy_(freqs)
    neck_ln = model.vision_encoder.neck.layer_norm2
    neck_ln.weight[POS] = 0.0
    neck_ln.bias[POS] = 0.0
    pe = model.prompt_encoder
    pe.no_mask_embed.weight.zero_()  # added to every image token: it would offset the gathered code
    pe.mask_embed.conv3.weight[POS] = 0.0
    pe.mask_embed.conv3.bias[POS] = 0.0

    def one_hot(name: str) -> torch.Tensor:
        v = torch.zeros(WIDTH)
        v[LABEL[name]] = 1.0
        return v

    # A zero frequency's cos channel is 1: cancel it in the embeddings that are added to a point's code
    # (the pad point's embedding replaces the code instead).
    cos_of_zero = list(range(WIDTH // 2, WIDTH - N_FREQ))
    for i, name in ((1, "positive"), (0, "negative"), (2, "corner"), (3, "corner")):
        v = one_hot(name)
        v[cos_of_zero] -= 1.0
        pe.point_embed[i].weight.copy_(v[None])
    pe.not_a_point_embed.weight.copy_(one_hot("pad")[None])
    dec = model.mask_decoder
    dec.mask_tokens.weight.copy_(one_hot("mask")[None].expand_as(dec.mask_tokens.weight))
    dec.iou_token.weight.copy_(one_hot("iou")[None])


def _wire_gather_and_sign(layer) -> None:
    labels = list(LABEL.values())
    # self-attention (first layer: no residual, no positional term): copy the own label
    sa = layer.self_attn
    _zero(sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj)
    sa.q_proj.weight[: len(labels)] = _select(labels, WIDTH, 8.0)
    sa.k_proj.weight[: len(labels)] = _select(labels, WIDTH, 8.0)
    sa.v_proj.weight[: len(labels)] = _select(labels, WIDTH)
    sa.out_proj.weight[labels, : len(labels)] = torch.eye(len(labels))
    # layer norm 1: labels to magnitude L (a one-hot normalises to 6.86), ballast, nothing else
    ln1 = layer.layer_norm1
    ln1.weight.zero_()
    ln1.bias.zero_()
    hot = (1 - 1 / WIDTH) / math.sqrt((1 / WIDTH) * (1 - 1 / WIDTH))
    ln1.weight[labels] = L / hot
    for c, sign in zip(BALLAST, (1.0, -1.0)):
        ln1.bias[c] = sign * B
    # token->image attention: match by position only, carry the code (and its mirror)
    ca = layer.cross_attn_token_to_image
    inner = ca.q_proj.weight.shape[0]
    gain = math.sqrt(GATHER_GAIN / ca.scaling)
    _zero(ca.q_proj, ca.k_proj, ca.v_proj, ca.out_proj)
    ca.q_proj.weight.copy_(_select(POS, WIDTH, gain)[:inner])
    ca.k_proj.weight.copy_(_select(POS, WIDTH, gain)[:inner])
    ca.v_proj.weight[: len(CODE)] = _select(CODE, WIDTH)
    ca.out_proj.weight[CODE, : len(CODE)] = torch.eye(len(CODE))
    ca.out_proj.weight[MIRROR, : len(CODE)] = -1.0
    for ln in (layer.layer_norm2, layer.layer_norm3):
        _ln_fixed(ln, B / math.sqrt(24))
    # MLP: signed code; the gates' offsets are set by _calibrate_sign
    mlp = layer.mlp
    mlp.lin1.weight[: 4 * len(CODE)] = 0.0
    mlp.lin1.bias[: 4 * len(CODE)] = 0.0
    _zero(mlp.lin2)
    for i, c in enumerate(CODE):
        units = ((1, "positive", 1), (-1, "positive", -1), (1, "negative", -1), (-1, "negative", 1))
        for j, (sign, gate, out) in enumerate(units):
            unit = 4 * i + j
            mlp.lin1.weight[unit, c] = sign
            mlp.lin1.weight[unit, LABEL[gate]] = 1.0  # scaled by _calibrate_sign
            mlp.lin2.weight[SIGNED[i], unit] = out
            mlp.lin2.weight[MIRROR, unit] = -out


def _wire_collect(layer) -> None:
    sa = layer.self_attn
    _zero(sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj)
    sa.q_proj.weight[0, LABEL["mask"]] = 2.6
    sa.k_proj.weight[0, LABEL["positive"]] = 2.6
    sa.k_proj.weight[0, LABEL["negative"]] = 2.6
    sa.v_proj.weight[: len(SIGNED)] = _select(SIGNED, WIDTH)
    sa.out_proj.weight[READ, : len(SIGNED)] = torch.eye(len(SIGNED))
    sa.out_proj.weight[MIRROR, : len(SIGNED)] = -1.0
    _ln_fixed(layer.layer_norm1, B / math.sqrt(24))


def _wire_readout(dec, alpha: float = 2.0, beta: float = 1.0) -> None:
    """Upscaling passes the image's CODE through (plus a constant channel); hypernetworks read the
    centred READ of the mask token: mask = alpha * centred(READ) . code - beta."""
    k, c8 = len(CODE), len(CODE) + 1
    w1 = torch.zeros_like(dec.upscale_conv1.weight)  # (C, C/4, 2, 2)
    w2 = torch.zeros_like(dec.upscale_conv2.weight)  # (C/4, C/8, 2, 2)
    for i, c in enumerate(CODE):
        w1[c, i], w1[c, i + c8] = 1.0, -1.0
        w2[i, i], w2[i + c8, i] = 0.5, -0.5
    dec.upscale_conv1.weight.copy_(w1)
    dec.upscale_conv1.bias.zero_()
    dec.upscale_layer_norm.weight.fill_(0.4)
    dec.upscale_layer_norm.bias.fill_(2.5)
    dec.upscale_conv2.weight.copy_(w2)
    dec.upscale_conv2.bias.fill_(2.5)
    centre = torch.eye(k) - 1.0 / k
    for mlp in dec.output_hypernetworks_mlps:
        w_in = torch.zeros_like(mlp.proj_in.weight)  # [relu(m), relu(-m)]
        for i, c in enumerate(READ):
            w_in[i, c], w_in[k + i, c] = 1.0, -1.0
        mlp.proj_in.weight.copy_(w_in)
        mlp.proj_in.bias.zero_()
        for layer in mlp.layers:
            layer.weight.copy_(torch.eye(layer.weight.shape[0]))
            layer.bias.zero_()
        w_out = torch.zeros_like(mlp.proj_out.weight)
        w_out[:k, :k], w_out[:k, k : 2 * k] = alpha * centre, -alpha * centre
        mlp.proj_out.weight.copy_(w_out)
        mlp.proj_out.bias.zero_()
        mlp.proj_out.bias[k] = -beta


class _Capture:
    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.value = output.detach().clone()


def _calibrate_sign(model) -> None:
    """Set the sign gates from the label values the second layer norm actually gives: 0 for a click of
    the gate's label, -M for every other token."""
    layer = model.mask_decoder.transformer.layers[0]
    cap = _Capture(layer.layer_norm2)
    try:
        emb = torch.zeros(1, WIDTH, 64, 64)
        pe = model.get_image_wide_positional_embeddings()
        sparse, dense = model.prompt_encoder(
            input_points=torch.tensor([[[[100.0, 100.0], [500.0, 500.0]]]]),
            input_labels=torch.tensor([[[1, 0]]]),
            input_boxes=None,
            input_masks=None,
        )
        model.mask_decoder(emb, pe, sparse, dense, multimask_output=True)
    finally:
        cap.handle.remove()
    tokens = cap.value[0, 0]  # (tokens, C): iou, 4 mask, positive, negative, pad
    rows = {"positive": 5, "negative": 6}  # the clicks' rows; all other tokens must be gated off
    mlp = layer.mlp
    for gate, row in rows.items():
        c = LABEL[gate]
        others = [r for r in range(tokens.shape[0]) if r != row]
        hi, lo = float(tokens[row, c]), float(tokens[others, c].max())
        scale = M / (hi - lo)
        for i in range(len(CODE)):
            for j, g in enumerate(("positive", "positive", "negative", "negative")):
                if g == gate:
                    unit = 4 * i + j
                    mlp.lin1.weight[unit, c] = scale
                    mlp.lin1.bias[unit] = -scale * hi


def wired_entries(model) -> dict[str, torch.Tensor]:
    """Parameter name -> bool mask of the entries :func:`wire_click_path` set and training must keep."""
    dec = "mask_decoder."
    t = dec + "transformer."
    full = [
        "prompt_encoder.point_embed.0.weight",
        "prompt_encoder.point_embed.1.weight",
        "prompt_encoder.point_embed.2.weight",
        "prompt_encoder.point_embed.3.weight",
        "prompt_encoder.not_a_point_embed.weight",
        dec + "mask_tokens.weight",
        dec + "iou_token.weight",
    ]
    for sub in ("self_attn", "cross_attn_token_to_image", "layer_norm1"):
        full += [n for n, _ in model.named_parameters() if n.startswith(f"{t}layers.0.{sub}.")]
    full += [n for n, _ in model.named_parameters() if n.startswith(f"{t}layers.1.self_attn.")]
    params = dict(model.named_parameters())
    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in full}

    def rows(name: str, idx: list[int]) -> None:
        m = torch.zeros_like(params[name], dtype=torch.bool)
        m[idx] = True
        masks[name] = m

    rows("vision_encoder.neck.layer_norm2.weight", POS)
    rows("vision_encoder.neck.layer_norm2.bias", POS)
    m = torch.zeros_like(params["prompt_encoder.no_mask_embed.weight"], dtype=torch.bool)
    m[:, POS] = True
    masks["prompt_encoder.no_mask_embed.weight"] = m
    rows("prompt_encoder.mask_embed.conv3.weight", POS)
    rows("prompt_encoder.mask_embed.conv3.bias", POS)
    n_sign = 4 * len(CODE)
    rows(f"{t}layers.0.mlp.lin1.weight", list(range(n_sign)))
    rows(f"{t}layers.0.mlp.lin1.bias", list(range(n_sign)))
    m = torch.zeros_like(params[f"{t}layers.0.mlp.lin2.weight"], dtype=torch.bool)
    m[:, :n_sign] = True
    m[PROTECTED] = True  # the free units may write only outside the protected channels
    masks[f"{t}layers.0.mlp.lin2.weight"] = m
    rows(f"{t}layers.0.mlp.lin2.bias", PROTECTED)
    for name in (
        "layers.0.layer_norm2",
        "layers.0.layer_norm3",
        "layers.1.layer_norm1",
        "layers.1.layer_norm2",
        "layers.1.layer_norm3",
        "layer_norm_final_attn",
    ):
        rows(f"{t}{name}.weight", PROTECTED)
        rows(f"{t}{name}.bias", PROTECTED)
    written = ("layers.1.cross_attn_token_to_image.out_proj", "layers.1.mlp.lin2", "final_attn_token_to_image.out_proj")
    for name in written:
        rows(f"{t}{name}.weight", PROTECTED)
        rows(f"{t}{name}.bias", PROTECTED)
    return masks


def fix_wiring(model) -> dict[str, torch.Tensor]:
    """Keep the wired entries: parameters wired in full stop training; partly wired ones get a gradient
    mask. Returns the partial masks (their parameters must not get weight decay)."""
    partial = {}
    params = dict(model.named_parameters())
    for name, mask in wired_entries(model).items():
        p = params[name]
        if mask.all():
            p.requires_grad_(False)
        else:
            keep = (~mask).to(p.dtype)
            p.register_hook(lambda g, keep=keep: g * keep)
            partial[name] = mask
    return partial
