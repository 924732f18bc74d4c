"""A hand-wired start for the tiny SAM's prompt path: clicks and boxes select by *content* from step 0.

Trained from a random start, the tiny mask decoder learns "a disk around the click" and leaves it only
slowly (docs/benchmarks.md, "Tiny SAM fixture training"). Here the part of the decoder that turns prompts
into "the content to look for, and where" is set by hand and kept fixed while the rest trains
(:func:`fix_wiring`):

0. **Layout.** Every channel's role is set below from ``WIDTH`` (72 for the fixture): ``K = WIDTH / 8 - 2``
   code channels, because the upscaled per-pixel features the masks read are ``WIDTH / 8`` channels:
   the code, ``MATCH`` and a constant.
1. **Positions.** The random Fourier features get 10 designed frequencies (periods of 4 to 27 tokens,
   golden-angle directions) for finding a click, and two low ones along x and y (phase monotonic over
   the whole frame) for box edges; the others are zero, so their channels are constant. The image
   embedding is exactly zero in the positional channels (the neck's last layer norm has weight and bias
   0 there), so an attention that reads only those channels compares positions and nothing else: a
   click's attention puts > 99 % of its mass within 1.5 tokens of it.
2. **Labels.** Prompt embeddings are one-hot label codes (positive, negative, pad, box corner 1 and 2,
   output token) in constant channels. The first self-attention copies each token's label, and its
   low-frequency position code, into its state.
3. **Gather.** The first token->image attention makes every point fetch the image embedding's first
   ``CODE`` channels at its position (the channels the instance loss shapes).
4. **Sign and corners.** The first MLP writes +code for positive clicks, -2 x code for negative ones
   and 0 for anything else (four ReLUs per channel, gated by the label), and the code itself for clicks
   of either sign (``CLICKCODE``); for box corners it writes their low-frequency position code, negated
   for the bottom-right corner.
5. **Inside the box.** The image->token attentions (layer 1: x, layer 2: y) give every image token
   ``0`` inside the box and ``-1`` outside: the logit to corner k is ``-G sin(phase(token) -
   phase(corner))`` (sign flipped for the second corner), against the other tokens at logit 0.
   **Match.** Layer 1's image->token attention also compares every image token's code with each
   click's (``MATCH_GAIN * centred . centred - MATCH_OFFSET``, against 0 for the tokens that are not
   clicks) and takes +1 from a positive click, -2 from a negative one, into ``MATCH``: ~+1 where the
   image looks like a positive click, below 0 where it looks like a negative one, 0 elsewhere. Two
   clicks give an OR of their shapes here; the mean of their codes (``READ``) points between the two
   shapes, often onto a third. MATCH is not limited to the upscaled channels: with ``MATCH_EXTRA`` it
   compares ``K`` more image channels too (``CODE2``; the instance loss shapes both groups), which every
   token gathers in step 3 and only the clicks keep (the first MLP cancels them in the others).
6. **Collect.** The second self-attention makes the mask tokens average the signed codes of all clicks
   into ``READ`` (one click -> its code; clicks on A and B -> (A + B) / 2; a negative click on B ->
   (A + B - 2B) / 3) and note whether there is a box (``HASBOX``). Layer 2's token->image attention
   (``REFINE``) moves READ to the mean code of the image tokens that match it (``REFINED``: one
   mean-shift step, from the code under the click to the shape's); its query trains. The final
   token->image attention averages the image code over the tokens inside the box into ``BOX``.
7. **Read out.** The upscaling convolutions pass the image code and MATCH through, and a constant channel
   that grows outside the box; the hypernetworks start as ``alpha * centred(READ / 2 + REFINED / 2, or
   BOX if there is a box) . pixel code + MATCH_WEIGHT * MATCH - beta * constant``, with a unit that is
   on only for a box (a bias of its own, trained).

Layer norms would rescale every token by its own statistics: constant ``BALLAST`` channels (+-30) in the
tokens and in the image embedding dominate them, so they act as a fixed scale, and a ``MIRROR`` channel
keeps every token's channel sum constant, so their mean shift is the same for all tokens.

What trains: the encoder, the query of layer 2's token->image attention (from READ only), the second MLP
(writing only into free positional channels of the tokens), the upscaling, the hypernetworks and the IoU
head -- none of them reading the token channels whose values depend on how much of the image was decoded
(``CONTEXT``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 72  # decoder width the layout is made for (= image-embedding channels)
REFINE = True  # layer 2 refines the clicks' code by content (REFINED)
CLICK_MATCH = True  # layer 1's image->token attention marks every image token like a click (MATCH)
MATCH_EXTRA = True  # MATCH also compares K more image channels (CODE2), which the readout has no room for
# code channels: the upscaled pixel features are WIDTH // 8: the codes, MATCH and a constant
K = WIDTH // 8 - 1 - int(CLICK_MATCH)
HALF = WIDTH // 2
LOW = 0.2  # cycles per unit of SAM's [-1, 1] coordinate: phase range 0.8 pi over the frame (monotonic sin)
LOW_X, LOW_Y = 12, 13  # frequency slots (sin channel = slot, cos channel = slot + HALF)
GATHER_SLOTS = list(range(14, 24))  # the designed click-finding frequencies
GATHER_POS = GATHER_SLOTS + [s + HALF for s in GATHER_SLOTS]
SLOTS = [LOW_X, LOW_Y, *GATHER_SLOTS]  # the non-zero frequencies; the others' sin is 0 and cos 1
POS = SLOTS + [s + HALF for s in SLOTS]  # every channel with a non-zero frequency
LOW_COPY = [LOW_X, LOW_Y, LOW_X + HALF, LOW_Y + HALF]  # a token's own low-frequency position code
# tokens: channels with no positional code (a prompt token's own) ...
_FREE = [c for c in range(WIDTH) if c not in POS]
CODE = _FREE[:K]  # gathered at a point; the image's CODE channels
SIGNED = _FREE[K : 2 * K]  # +code (positive click), -code (negative click), 0 otherwise
MIRROR = _FREE[2 * K]  # minus the sum of the wired channels that vary, so every token's channel sum is constant
LABEL = dict(zip(("positive", "negative", "pad", "corner1", "corner2", "output"), _FREE[2 * K + 1 : 2 * K + 7]))
BALLAST = (_FREE[2 * K + 7], _FREE[2 * K + 8])  # +B, -B in every token
READ = _FREE[2 * K + 9 : 3 * K + 9]  # mask tokens: mean signed code of the clicks
CLICKCODE = _FREE[3 * K + 9 : 4 * K + 9] if CLICK_MATCH else []  # clicks (either sign): their code
KX, KY = READ[0:2], READ[2:4]  # box corners (in READ's channels, which corners do not use): edge keys
ZERO = READ[-1]  # 0 in the corners before every layer norm up to the edges, the reference for KX / KY
# ... and positional channels that only the output tokens (which have no position) use
_OUT = [c for c in POS if c not in LOW_COPY]
HASBOX = _OUT[0]  # mask tokens: 1 if the prompt has a box
BOX = _OUT[1 : K + 1]  # mask tokens: mean image code inside the box
REFINED = _OUT[K + 1 : 2 * K + 1]  # mask tokens: mean image code where the clicks' code matches
CLICKCODE2 = _FREE[4 * K + 9 : 5 * K + 9] if CLICK_MATCH and MATCH_EXTRA else []  # clicks: CODE2 there, else 0
PROTECTED = sorted(
    {*CODE, *SIGNED, MIRROR, *LABEL.values(), *BALLAST, *READ, *CLICKCODE, *CLICKCODE2, *LOW_COPY}
    | {HASBOX, *BOX, *REFINED}
)
# What an output token's state holds in these channels depends on the whole image it was decoded with (its
# uniform layer-1 gather of CODE, the box gather without a box, and MIRROR): a 512 px training crop gives
# other values than the full frame. Trained readers of the token states must not read them.
CONTEXT = CODE + [MIRROR] + BOX + CLICKCODE2
# image embedding
IX, IY = SIGNED[0], SIGNED[1]  # 0 inside the box's x (y) range, -1 outside (image channels)
MATCH = SIGNED[2]  # image: ~+1 where the code matches a positive click best, < 0 a negative one, else 0
IMAGE_ZERO = ZERO  # always 0 before the layer norms: the reference for IX / IY / MATCH after them
IMAGE_RESERVED = POS + [IX, IY, IMAGE_ZERO, *BALLAST] + ([MATCH] if CLICK_MATCH else [])  # not the encoder's
UPSCALED = CODE + ([MATCH] if CLICK_MATCH else [])  # image channels the upscaling passes on; a constant follows
# More code for MATCH alone: the readout's per-pixel code is limited to the upscaled channels, MATCH's is not
CODE2 = [c for c in range(WIDTH) if c not in IMAGE_RESERVED + CODE][: len(CLICKCODE2)]
MATCH_CODE = [CODE, CODE2] if CODE2 else [CODE]  # the image code groups MATCH compares, each centred on its own
assert len(READ) == K and len(REFINED) == K and len(set(PROTECTED)) == len(PROTECTED)

B = 30.0  # ballast
SIGMA = B / math.sqrt(HALF)  # a layer norm's standard deviation with the ballast dominating
L = 3.0  # label magnitude in the token states
M = 6.0  # ReLU gate: larger than any gated value
GATHER_GAIN = 4.0  # click attention logit per unit of the positional kernel (peak: 10)
EDGE_GAIN = 200.0  # box-edge attention logit per unit of sin(phase difference): ~8 per token
BOX_GAIN = 12.0  # box-gather attention logit per unit of IX + IY
NEGATIVE = 2.0  # a negative click's code counts twice: [A, B, -B] -> (A - B) / 3, B below zero
OUTSIDE_GAIN = 10.0  # upscaling: weight of IX + IY in the constant channel's path
REFINE_GAIN = 0.5  # content attention logit per unit of centred(READ) . centred(code) (start; it trains)
REFINE_M = 12.0  # the refined units' box gate: larger than any refined code entry
MATCH_GAIN = 0.5  # image->click attention logit per unit of centred(code) . centred(click code)
MATCH_OFFSET = 8.0  # ... minus this: a pixel matches a click only when clearly alike (vs logit 0 elsewhere)
MATCH_NEGATIVE = 2.0  # a negative click's value (a positive one's: 1): on a click's own shape, negative wins
MATCH_WEIGHT = 2.0  # the readout's start weight of MATCH
REFINED_UNITS = list(range(4 * len(CODE) + 1, 6 * len(CODE) + 1))  # hypernetwork units reading REFINED
HYPER_WIRED = 6 * len(CODE) + 1  # the hypernetworks' wired units; the others train freely


def designed_frequencies() -> torch.Tensor:
    """(2, HALF) Fourier frequencies: slots LOW_X / LOW_Y low along x / y, GATHER_SLOTS geometric
    magnitudes 1.2..8 (8 = a period of 4 tokens) in golden-angle directions, the rest zero."""
    freqs = torch.zeros(2, HALF)
    freqs[0, LOW_X] = LOW
    freqs[1, LOW_Y] = LOW
    n = len(GATHER_SLOTS)
    angle = math.pi * ((np.arange(n) * 0.6180339887) % 1.0)
    mag = np.geomspace(1.2, 8.0, n)
    freqs[:, GATHER_SLOTS] = torch.tensor(np.stack([mag * np.cos(angle), mag * np.sin(angle)]), dtype=torch.float32)
    return freqs


def _centring() -> torch.Tensor:
    """(K, K) matrix removing the mean over the code channels: codes are compared centred."""
    k = len(CODE)
    return torch.eye(k) - 1.0 / k


def _zero(*linears: nn.Linear) -> None:
    for lin in linears:
        lin.weight.zero_()
        if lin.bias is not None:
            lin.bias.zero_()


def _token_ln(ln: nn.LayerNorm) -> None:
    """Token layer norm: identity scale (the ballast fixes the statistics) and the ballast re-set."""
    ln.weight.fill_(SIGMA)
    ln.bias.zero_()
    for c, sign in zip(BALLAST, (1.0, -1.0)):
        ln.weight[c] = 0.0
        ln.bias[c] = sign * B


def _image_ln(ln: nn.LayerNorm, zero: list[int]) -> None:
    _token_ln(ln)
    ln.weight[zero] = 0.0


def wire_prompt_path(model) -> None:
    """Set the prompt path of this module in ``model`` (a fresh tiny SamModel with decoder width WIDTH,
    1 attention head, 2 two-way layers). Call :func:`fix_wiring` before training."""
    dec = model.mask_decoder
    t = dec.transformer
    if dec.iou_token.weight.shape[1] != WIDTH or len(t.layers) != 2 or t.layers[0].self_attn.num_attention_heads != 1:
        raise ValueError(f"the wired prompt path needs decoder width {WIDTH}, 2 two-way layers and 1 attention head")
    if model.config.vision_config.num_pos_feats != HALF:
        raise ValueError(f"num_pos_feats must be {HALF}")
    with torch.no_grad():
        _wire_embeddings(model)
        l0, l1 = t.layers
        _wire_copy(l0)
        _wire_gather(l0.cross_attn_token_to_image)
        _wire_mlp(l0.mlp)
        _wire_edges(l0.cross_attn_image_to_token, LOW_X, KX, IX)
        if CLICK_MATCH:
            _wire_match(l0.cross_attn_image_to_token)
        _wire_edges(l1.cross_attn_image_to_token, LOW_Y, KY, IY)
        _wire_collect(l1.self_attn)
        _wire_box_gather(t.final_attn_token_to_image)
        for ln in (l0.layer_norm2, l0.layer_norm3, l1.layer_norm1, l1.layer_norm2, l1.layer_norm3):
            _token_ln(ln)
        _token_ln(t.layer_norm_final_attn)
        _image_ln(l0.layer_norm4, [LOW_Y, LOW_Y + HALF])  # keep the y code of the keys exact for layer 2
        _image_ln(l1.layer_norm4, [])
        if REFINE:
            _wire_refine(l1.cross_attn_token_to_image)
        else:
            _zero(l1.cross_attn_token_to_image.out_proj)  # a trainable token path: starts silent
        _zero(l1.mlp.lin2)  # a trainable token path: starts silent
        _wire_readout(dec)
        _calibrate(model)
        for lin, first_free in _context_readers(model):
            lin.weight[first_free:, CONTEXT] = 0.0


def _one_hot(name: str) -> torch.Tensor:
    v = torch.zeros(WIDTH)
    v[LABEL[name]] = 1.0
    return v


def _wire_embeddings(model) -> None:
    freqs = designed_frequencies()
    model.shared_image_embedding.positional_embedding.copy_(freqs)
    model.prompt_encoder.shared_embedding.positional_embedding.copy_(freqs)
    neck_ln = model.vision_encoder.neck.layer_norm2
    neck_ln.weight[IMAGE_RESERVED] = 0.0
    neck_ln.bias[IMAGE_RESERVED] = 0.0
    neck_ln.bias[BALLAST[0]], neck_ln.bias[BALLAST[1]] = B, -B
    pe = model.prompt_encoder
    pe.no_mask_embed.weight.zero_()  # added to every image token: it would offset the gathered code
    pe.mask_embed.conv3.weight[IMAGE_RESERVED + CODE] = 0.0
    pe.mask_embed.conv3.bias[IMAGE_RESERVED + CODE] = 0.0
    # A zero frequency's cos channel is 1: cancel it in the embeddings that are added to a point's code
    # (the pad point's embedding replaces the code instead).
    cos_of_zero = [s + HALF for s in range(HALF) if s not in SLOTS]
    for i, name in ((1, "positive"), (0, "negative"), (2, "corner1"), (3, "corner2")):
        v = _one_hot(name)
        v[cos_of_zero] -= 1.0
        pe.point_embed[i].weight.copy_(v[None])
    pe.not_a_point_embed.weight.copy_(_one_hot("pad")[None])
    dec = model.mask_decoder
    dec.mask_tokens.weight.copy_(_one_hot("output")[None].expand_as(dec.mask_tokens.weight))
    dec.iou_token.weight.copy_(_one_hot("output")[None])


def _wire_copy(layer) -> None:
    """First self-attention (no residual, no positional term): each token attends to the tokens with its
    label and copies the label and the low-frequency position code; first layer norm."""
    labels = list(LABEL.values())
    n = len(labels)
    sa = layer.self_attn
    _zero(sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj)
    for r, c in enumerate(labels):
        sa.q_proj.weight[r, c] = sa.k_proj.weight[r, c] = 8.0
        sa.v_proj.weight[r, c] = 1.0
        sa.out_proj.weight[c, r] = 1.0
    for r, c in enumerate(LOW_COPY, start=n):
        sa.v_proj.weight[r, c] = 1.0
        sa.out_proj.weight[c, r] = 1.0
        sa.out_proj.weight[MIRROR, r] = -1.0
    sa.out_proj.bias[BALLAST[0]], sa.out_proj.bias[BALLAST[1]] = B, -B
    ln = layer.layer_norm1
    ln.weight.zero_()
    ln.bias.zero_()
    ln.weight[labels] = L * SIGMA
    # READ (incl. ZERO and the corners' keys) gets the same mean shift as the position copies, so that
    # "copy - ZERO" is exact from here on
    ln.weight[LOW_COPY + [MIRROR] + READ] = SIGMA
    ln.bias[BALLAST[0]], ln.bias[BALLAST[1]] = B, -B


def _wire_gather(ca) -> None:
    """Token->image attention of layer 1: match by the designed frequencies only, carry the code."""
    gain = math.sqrt(GATHER_GAIN / ca.scaling)
    _zero(ca.q_proj, ca.k_proj, ca.v_proj, ca.out_proj)
    for r, c in enumerate(GATHER_POS):
        ca.q_proj.weight[r, c] = ca.k_proj.weight[r, c] = gain
    for r, (c, out) in enumerate(zip(CODE + CODE2, CODE + CLICKCODE2)):
        ca.v_proj.weight[r, c] = 1.0
        ca.out_proj.weight[out, r] = 1.0
        ca.out_proj.weight[MIRROR, r] = -1.0


# (output channel, source channel, source sign) of the corner keys: K = [cos, -sin] of the corner's phase
_CORNER_KEYS = [
    (KX[0], LOW_X + HALF, 1.0),
    (KX[1], LOW_X, -1.0),
    (KY[0], LOW_Y + HALF, 1.0),
    (KY[1], LOW_Y, -1.0),
]


def _mlp_units() -> list[tuple[str, int, float, int, float]]:
    """The wired hidden units of the first MLP: (gate label, source channel, source sign, output channel,
    output sign). Each pair relu(s x + g) - relu(-s x + g) passes s x when the gate is open (g = 0)."""
    units = []
    for code, signed in zip(CODE, SIGNED):
        units += [("positive", code, 1.0, signed, 1.0), ("positive", code, -1.0, signed, -1.0)]
        units += [("negative", code, 1.0, signed, -NEGATIVE), ("negative", code, -1.0, signed, NEGATIVE)]
    for code, clickcode in zip(CODE, CLICKCODE):
        for gate in ("positive", "negative"):
            units += [(gate, code, 1.0, clickcode, 1.0), (gate, code, -1.0, clickcode, -1.0)]
    for gate, sign in (("corner1", 1.0), ("corner2", -1.0)):  # the bottom-right corner's key is negated
        for out, src, s in _CORNER_KEYS:
            units += [(gate, src, s * sign, out, 1.0), (gate, src, -s * sign, out, -1.0)]
    for gate in ("pad", "corner1", "corner2", "output"):  # every token gathered CODE2; only clicks keep it
        for c in CLICKCODE2:
            units += [(gate, c, 1.0, c, -1.0), (gate, c, -1.0, c, 1.0)]
    return units


def _wire_mlp(mlp) -> None:
    units = _mlp_units()
    mlp.lin1.weight[: len(units)] = 0.0
    mlp.lin1.bias[: len(units)] = 0.0
    _zero(mlp.lin2)
    for u, (gate, src, s, out, o) in enumerate(units):
        mlp.lin1.weight[u, src] = s
        if src in LOW_COPY:
            mlp.lin1.weight[u, ZERO] = -s  # the copy relative to ZERO: the layer norms' shift cancels
        mlp.lin1.weight[u, LABEL[gate]] = 1.0  # scaled, with its offset, by _calibrate
        mlp.lin2.weight[out, u] = o
        mlp.lin2.weight[MIRROR, u] = -o


def _wire_edges(ia, slot: int, keys: list[int], out: int) -> None:
    """Image->token attention: logit -EDGE_GAIN sin(phase(token) - phase(corner)) to each corner (its key
    K = [cos, -sin] of the corner's phase, negated for corner 2), 0 to every other token; value -1 at the
    corners. So an image token gets ~0 inside the corners' range, ~-1 outside."""
    inner_scale = math.sqrt(EDGE_GAIN / ia.scaling)
    _zero(ia.q_proj, ia.k_proj, ia.v_proj, ia.out_proj)
    ia.q_proj.weight[0, slot], ia.q_proj.weight[1, slot + HALF] = inner_scale, inner_scale
    # Every token's channels share the layer norms' mean shift; reading K - ZERO cancels it exactly, so a
    # token that is not a corner has logit 0, however the trained parts move the shift.
    for r, key in enumerate(keys):
        ia.k_proj.weight[r, key], ia.k_proj.weight[r, ZERO] = -inner_scale, inner_scale
    ia.v_proj.weight[0, LABEL["corner1"]] = ia.v_proj.weight[0, LABEL["corner2"]] = 1.0 / L
    ia.out_proj.weight[out, 0] = -1.0


def _wire_match(ia) -> None:
    """Layer 1's image->token attention also matches every image token against the clicks (their CLICKCODE):
    logit MATCH_GAIN * centred(code) . centred(click code) - MATCH_OFFSET to each click, 0 to the tokens that
    are not clicks (corners: their edge logits -- with a box and clicks, MATCH stays ~0 outside the box's
    x range), and value +1 for a positive click, -MATCH_NEGATIVE for a negative one, into MATCH. Per image
    token: which click it resembles, if any -- the union of two clicks' shapes is an OR here, not a mean of
    their codes. With MATCH_EXTRA the code compared is CODE and CODE2 (CLICKCODE and CLICKCODE2 in the
    clicks), each centred on its own, at the same logit scale per unit of the mean of the two products."""
    k = len(CODE)
    off = 2 + k  # rows 0, 1: the edges; 2..off: the code; off: the offset; then CODE2
    gain = math.sqrt(MATCH_GAIN / (len(MATCH_CODE) * ia.scaling))  # the same logit scale for any code length
    centre = gain * _centring()  # each group centred on its own: the token layer norms shift them differently
    for first, image, clicks in ((2, CODE, CLICKCODE), (off + 1, CODE2, CLICKCODE2)):
        for r in range(len(image)):
            ia.q_proj.weight[first + r, image] = centre[r]
            ia.k_proj.weight[first + r, clicks] = centre[r]
    # the offset: image ballast (exactly B) times the clicks' labels (L in the state + 1 in the key)
    ia.q_proj.weight[off, BALLAST[0]] = 1.0
    for name in ("positive", "negative"):
        ia.k_proj.weight[off, LABEL[name]] = -MATCH_OFFSET / (ia.scaling * B * (L + 1))
    ia.v_proj.weight[1, LABEL["positive"]] = 1.0 / L
    ia.v_proj.weight[1, LABEL["negative"]] = -MATCH_NEGATIVE / L
    ia.v_proj.weight[1, ZERO] = (MATCH_NEGATIVE - 1.0) / L  # labels relative to ZERO: the mean shift cancels
    ia.out_proj.weight[MATCH, 1] = 1.0


def match_offset_entries() -> list[tuple[int, int]]:
    """(row, column) of layer 1's image->token ``k_proj.weight`` entries that hold MATCH's offset (one per
    click sign): the threshold a pixel's code must pass to count as a click's shape."""
    return [(2 + len(CODE), LABEL[name]) for name in ("positive", "negative")]


def scale_match_offset(model, factor: float) -> None:
    """Multiply MATCH's offset by ``factor`` (> 1: a pixel must resemble a click more closely to match it)."""
    weight = model.mask_decoder.transformer.layers[0].cross_attn_image_to_token.k_proj.weight
    with torch.no_grad():
        for row, col in match_offset_entries():
            weight[row, col] *= factor


def _wire_collect(sa) -> None:
    """Second self-attention: output tokens attend to the clicks and corners, averaging the signed codes
    into READ and the corner labels into HASBOX."""
    _zero(sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj)
    sa.q_proj.weight[0, LABEL["output"]] = 2.6
    for name in ("positive", "negative", "corner1", "corner2"):
        sa.k_proj.weight[0, LABEL[name]] = 2.6
    for r, (s, rd) in enumerate(zip(SIGNED, READ)):
        sa.v_proj.weight[r, s] = 1.0
        sa.out_proj.weight[rd, r] = 1.0
        sa.out_proj.weight[MIRROR, r] = -1.0
    r = len(SIGNED)
    sa.v_proj.weight[r, LABEL["corner1"]] = sa.v_proj.weight[r, LABEL["corner2"]] = 1.0 / L
    sa.out_proj.weight[HASBOX, r] = 1.0
    sa.out_proj.weight[MIRROR, r] = -1.0


def _wire_refine(ca) -> None:
    """Token->image attention of layer 2: the mask tokens look for the image tokens whose code matches the
    clicks' mean code (logit REFINE_GAIN * centred(READ) . centred(code)) and average their centred code
    into REFINED -- one mean-shift step from the code under the click to the code of the whole shape it
    lies on (for A and B: of both; A and not B: of A). The query trains (the gain, the metric); keys,
    values and the output stay. Without clicks READ is 0 and the attention uniform: the readout gates
    REFINED off for box prompts."""
    k = len(CODE)
    centre = _centring()
    gain = math.sqrt(REFINE_GAIN / ca.scaling)
    _zero(ca.q_proj, ca.k_proj, ca.v_proj, ca.out_proj)
    ca.q_proj.weight[:k, READ] = gain * centre
    ca.k_proj.weight[:k, CODE] = gain * centre
    ca.v_proj.weight[:k, CODE] = centre  # centred: sums to 0, so no MIRROR term
    for r, c in enumerate(REFINED):
        ca.out_proj.weight[c, r] = 1.0


def _wire_box_gather(fa) -> None:
    """Final token->image attention: output tokens average the image code over the tokens inside the box
    (logit BOX_GAIN * (IX + IY)) into BOX."""
    _zero(fa.q_proj, fa.k_proj, fa.v_proj, fa.out_proj)
    g = math.sqrt(BOX_GAIN / (fa.scaling * (L + 1)))  # the output label is ~L in the state, 1 in the embedding
    fa.q_proj.weight[0, LABEL["output"]] = g
    fa.k_proj.weight[0, IX] = fa.k_proj.weight[0, IY] = g
    fa.k_proj.weight[0, IMAGE_ZERO] = -2 * g  # cancels the image layer norms' per-token mean shift
    for r, (c, b) in enumerate(zip(CODE, BOX)):
        fa.v_proj.weight[r, c] = 1.0
        fa.out_proj.weight[b, r] = 1.0
        fa.out_proj.weight[MIRROR, r] = -1.0


def _wire_readout(dec, alpha: float = 2.0, beta: float = 1.0) -> None:
    """Upscaling passes the image's CODE and MATCH through (plus a constant channel); hypernetworks read
    the mask token: mask = alpha * centred(READ / 2 + REFINED / 2, or gated BOX) . code + MATCH_WEIGHT *
    MATCH - beta (the gates' offsets: _calibrate)."""
    k = len(CODE)
    const = len(UPSCALED)
    c8 = const + 1
    w1 = torch.zeros_like(dec.upscale_conv1.weight)  # (C, C/4, 2, 2)
    w2 = torch.zeros_like(dec.upscale_conv2.weight)  # (C/4, C/8, 2, 2)
    for i, c in enumerate(UPSCALED):
        w1[c, i], w1[c, i + c8] = 1.0, -1.0
        if c == MATCH:  # relative to IMAGE_ZERO: the layer norms' mean shift cancels
            w1[IMAGE_ZERO, i], w1[IMAGE_ZERO, i + c8] = -1.0, 1.0
        w2[i, i], w2[i + c8, i] = 0.5, -0.5
    # Outside the box, the constant channel grows (more of -beta) and the layer norm shrinks the code:
    # upscaled channel ``const`` carries OUTSIDE_GAIN * (IX + IY) (0 inside, < 0 outside, 0 without a box).
    w1[IX, const] = w1[IY, const] = OUTSIDE_GAIN
    w1[IMAGE_ZERO, const] = -2 * OUTSIDE_GAIN
    w2[const, const] = -3.0
    dec.upscale_conv1.weight.copy_(w1)
    dec.upscale_conv1.bias.zero_()
    dec.upscale_layer_norm.weight.fill_(0.4)
    dec.upscale_layer_norm.bias.fill_(2.5)
    dec.upscale_conv2.weight.copy_(w2)
    dec.upscale_conv2.bias.fill_(2.5)
    dec.upscale_conv2.bias[const] = 2.5 + 3.0 * float(F.gelu(torch.tensor(2.5)))  # inside: GELU(2.5), as before
    centre = _centring()
    for mlp in dec.output_hypernetworks_mlps:
        # units: relu(+-READ) [0, 2k), relu(+-BOX + gate) [2k, 4k), relu(gate + M) 4k (box indicator),
        # relu(+-REFINED + gate) [4k + 1, 6k + 1) (open without a box)
        w_in = torch.zeros_like(mlp.proj_in.weight)
        for i, (r, b, f) in enumerate(zip(READ, BOX, REFINED)):
            w_in[i, r], w_in[k + i, r] = 1.0, -1.0
            w_in[2 * k + i, b], w_in[3 * k + i, b] = 1.0, -1.0
            w_in[2 * k + i, HASBOX] = w_in[3 * k + i, HASBOX] = 1.0  # scaled by _calibrate
            w_in[4 * k + 1 + i, f], w_in[5 * k + 1 + i, f] = 1.0, -1.0  # gated by _calibrate
        mlp.proj_in.weight.copy_(w_in)
        mlp.proj_in.bias.zero_()
        for layer in mlp.layers:
            layer.weight.copy_(torch.eye(layer.weight.shape[0]))
            layer.bias.zero_()
        w_out = torch.zeros_like(mlp.proj_out.weight)
        # a click's READ and REFINED each count half of a box's code (both are about the clicked code)
        r = 0.5 if REFINE else 0.0
        for start, scale in ((0, alpha * (1 - r)), (2 * k, alpha), (4 * k + 1, alpha * r)):
            w_out[:k, start : start + k] = scale * centre
            w_out[:k, start + k : start + 2 * k] = -scale * centre
        mlp.proj_out.weight.copy_(w_out)
        mlp.proj_out.bias.zero_()
        mlp.proj_out.bias[const] = -beta
        if CLICK_MATCH:  # MATCH, whatever the prompt (0 without clicks); both channels rest at GELU(2.5)
            mlp.proj_out.bias[k] = MATCH_WEIGHT
            mlp.proj_out.bias[const] -= MATCH_WEIGHT


class _Capture:
    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.value = output.detach().clone()


def _token_states(model, module, points=None, labels=None, box=None) -> torch.Tensor:
    """(tokens, C) output of ``module`` for one prompt on an all-zero image embedding."""
    cap = _Capture(module)
    try:
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else torch.tensor([[points]], dtype=torch.float32),
            input_labels=None if labels is None else torch.tensor([[labels]]),
            input_boxes=None if box is None else torch.tensor([[box]], dtype=torch.float32),
            input_masks=None,
        )
        emb = torch.zeros(1, WIDTH, 64, 64)
        emb[:, BALLAST[0]], emb[:, BALLAST[1]] = B, -B
        model.mask_decoder(emb, model.get_image_wide_positional_embeddings(), sparse, dense, multimask_output=True)
    finally:
        cap.handle.remove()
    return cap.value[0, 0]


def _set_gate(lin: nn.Linear, units: list[int], channel: int, hi: float, lo: float, m: float = M) -> None:
    """Gate units on ``channel``: offset 0 at the value ``hi`` (open), <= -m at ``lo`` and beyond."""
    scale = m / (hi - lo)
    for u in units:
        lin.weight[u, channel] = scale
        lin.bias[u] = -scale * hi


def _calibrate(model) -> None:
    """Set every label gate from the values the layer norms actually give."""
    t = model.mask_decoder.transformer
    mlp = t.layers[0].mlp
    units = _mlp_units()
    # tokens: iou, 4 mask, then the prompt's
    clicks = _token_states(model, t.layers[0].layer_norm2, [[100.0, 100.0], [500.0, 500.0]], [1, 0])
    boxed = _token_states(model, t.layers[0].layer_norm2, [[300.0, 300.0]], [1], box=[200.0, 200.0, 600.0, 700.0])
    rows = {"positive": (clicks, 5), "negative": (clicks, 6), "corner1": (boxed, 6), "corner2": (boxed, 7)}
    rows |= {"pad": (clicks, 7), "output": (clicks, 1)}  # the iou token and the 4 mask tokens are "output"
    for gate, (states, row) in rows.items():
        c = LABEL[gate]
        hi = float(states[row, c])
        lo = float(states[(states[:, c] - hi).abs() > L / 2, c].max())  # the tokens without this label
        _set_gate(mlp.lin1, [u for u, unit in enumerate(units) if unit[0] == gate], c, hi, lo)
    final = t.layer_norm_final_attn
    with_box = float(_token_states(model, final, box=[200.0, 200.0, 600.0, 700.0])[1, HASBOX])
    without = float(_token_states(model, final, [[300.0, 300.0]], [1])[1, HASBOX])
    k = len(CODE)
    for hyper in model.mask_decoder.output_hypernetworks_mlps:
        _set_gate(hyper.proj_in, [*range(2 * k, 4 * k), 4 * k], HASBOX, with_box, without)
        _set_gate(hyper.proj_in, REFINED_UNITS, HASBOX, without, with_box, REFINE_M)
        # unit 4k: M with a box, 0 without -- a bias of its own for box prompts, whose mean code also holds
        # some background (trained; starts at 0 in proj_out)
        hyper.proj_in.bias[4 * k] += M
    # Without a box IX and IY are not exactly 0 (the non-corner tokens' labels carry the layer norms' mean
    # shift): cancel that in the constant channel's path, which the upscaling's layer norm would magnify
    keys = _token_states(model, t.layers[1].layer_norm4, [[300.0, 300.0]], [1])
    leak = float((keys[:, IX] + keys[:, IY] - 2 * keys[:, IMAGE_ZERO]).mean())
    model.mask_decoder.upscale_conv1.bias[len(UPSCALED)] = -OUTSIDE_GAIN * leak  # the constant channel


def _context_readers(model) -> list[tuple[nn.Linear, int]]:
    """The trained layers that read token states (see CONTEXT), with the first row that is not wired."""
    dec = model.mask_decoder
    t = dec.transformer
    readers = [(t.layers[0].mlp.lin1, len(_mlp_units())), (t.layers[1].mlp.lin1, 0)]
    readers += [(t.layers[1].cross_attn_token_to_image.q_proj, 0), (dec.iou_prediction_head.proj_in, 0)]
    readers += [(h.proj_in, HYPER_WIRED) for h in dec.output_hypernetworks_mlps]
    return readers


def wired_entries(model, train_match_offset: bool = False) -> dict[str, torch.Tensor]:
    """Parameter name -> bool mask of the entries :func:`wire_prompt_path` set and training must keep; with
    ``train_match_offset``, MATCH's offset (:func:`match_offset_entries`) trains."""
    params = dict(model.named_parameters())
    t = "mask_decoder.transformer."
    masks: dict[str, torch.Tensor] = {}

    def full(prefix: str) -> None:
        for n, p in params.items():
            if n.startswith(prefix):
                masks[n] = torch.ones_like(p, dtype=torch.bool)

    def mark(name: str, rows: list[int] | None = None, cols: list[int] | None = None) -> None:
        m = masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))
        if rows is not None:
            m[rows] = True
        if cols is not None:
            m[:, cols] = True

    def rows_of(module: str, rows: list[int]) -> None:
        """The same rows of a module's weight and bias."""
        mark(f"{module}.weight", rows)
        mark(f"{module}.bias", rows)

    for name in ("point_embed", "not_a_point_embed"):
        full(f"prompt_encoder.{name}.")
    full("mask_decoder.mask_tokens.")
    full("mask_decoder.iou_token.")
    for sub in ("self_attn", "layer_norm1", "cross_attn_token_to_image", "cross_attn_image_to_token"):
        full(f"{t}layers.0.{sub}.")
    if train_match_offset:
        for row, col in match_offset_entries():
            masks[f"{t}layers.0.cross_attn_image_to_token.k_proj.weight"][row, col] = False
    for sub in ("self_attn", "cross_attn_image_to_token"):
        full(f"{t}layers.1.{sub}.")
    full(f"{t}final_attn_token_to_image.")
    rows_of("vision_encoder.neck.layer_norm2", IMAGE_RESERVED)
    # the dense prompt must not move the codes the clicks gather
    mark("prompt_encoder.no_mask_embed.weight", cols=IMAGE_RESERVED + CODE)
    rows_of("prompt_encoder.mask_embed.conv3", IMAGE_RESERVED + CODE)
    n_wired = len(_mlp_units())
    rows_of(f"{t}layers.0.mlp.lin1", list(range(n_wired)))
    mark(f"{t}layers.0.mlp.lin2.weight", cols=list(range(n_wired)))
    rows_of(f"{t}layers.0.mlp.lin2", PROTECTED)  # the free units may write only elsewhere
    refine = f"{t}layers.1.cross_attn_token_to_image"
    for sub in ("k_proj", "v_proj", "out_proj"):  # the refinement (silent without REFINE); its query trains,
        full(f"{refine}.{sub}.")  # from READ alone (from anything else it would look for one code in every prompt)
    mark(f"{refine}.q_proj.weight", cols=[c for c in range(WIDTH) if c not in READ])
    mark(f"{refine}.q_proj.bias", list(range(params[f"{refine}.q_proj.bias"].shape[0])))
    token_writers = ("layers.1.mlp.lin2",)
    token_norms = ("layers.0.layer_norm2", "layers.0.layer_norm3", "layers.1.layer_norm1", "layers.1.layer_norm2")
    for name in token_writers + token_norms + ("layers.1.layer_norm3", "layer_norm_final_attn"):
        rows_of(f"{t}{name}", PROTECTED)
    image_keep = [IX, IY, IMAGE_ZERO, *BALLAST] + ([MATCH] if CLICK_MATCH else [])
    rows_of(f"{t}layers.0.layer_norm4", image_keep + [LOW_Y, LOW_Y + HALF])
    rows_of(f"{t}layers.1.layer_norm4", image_keep)
    for j in range(len(model.mask_decoder.output_hypernetworks_mlps)):
        hyper = f"mask_decoder.output_hypernetworks_mlps.{j}.proj_in"
        mark(f"{hyper}.bias", REFINED_UNITS)  # the refined units' box gate stays shut for boxes
        mark(f"{hyper}.weight")
        masks[f"{hyper}.weight"][REFINED_UNITS, HASBOX] = True
    names = {id(p): n for n, p in params.items()}
    for lin, _ in _context_readers(model):
        mark(names[id(lin.weight)], cols=CONTEXT)  # the wired rows keep theirs (0, or BOX for the box units)
    return masks


def fix_wiring(model, train_match_offset: bool = False) -> dict[str, torch.Tensor]:
    """Keep the wired entries: parameters wired in full stop training; partly wired ones get a gradient
    mask. Returns the partial masks (their parameters must not get weight decay)."""
    partial = {}
    params = dict(model.named_parameters())
    for name, mask in wired_entries(model, train_match_offset).items():
        p = params[name]
        if mask.all():
            p.requires_grad_(False)
        else:
            keep = (~mask).to(p.dtype)
            p.register_hook(lambda g, keep=keep: g * keep)
            partial[name] = mask
    return partial
