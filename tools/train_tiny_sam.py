"""Train the tiny SAM test fixture (``tests/fixtures/tiny-sam``) on synthetic shapes, on a CPU.

    OMP_NUM_THREADS=2 .venv/bin/python tools/train_tiny_sam.py --out /tmp/tiny-sam   # the fixture's recipe

A ``transformers.SamModel`` with real SAM geometry (1024x1024 input, 16 px patches -> 64x64 embedding,
256x256 low-res logits) and everything else tiny, trained with the *real* maskwright pre-processing
(:func:`maskwright.engines.sam_common.preprocess_sam`: longest side -> 1024, ImageNet normalisation,
zero padding at the bottom/right; points scaled to the 1024 frame) on scenes from
``tools/synthetic_shapes.py``. Prompts are mixed as in SAM's interactive training: a first prompt (one
positive click, a jittered box, or clicks on two shapes whose union is the target), then correction
clicks sampled from the error region of the previous prediction, with that prediction's low-res logits
fed back as ``mask_input`` half of the time. Multimask outputs are trained with the min loss over the 3
candidates; the IoU head regresses the true IoU of every candidate.

The schedule is step-based (cosine over ``--steps``, so the same command gives the same model on a busy or
an idle CPU); the model is saved every few minutes, so a cut-off run still leaves a usable fixture. At the
end the model is evaluated on fresh scenes through ``maskwright.Predictor`` and the numbers are written into
the fixture's README.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_shapes import interior_point, make_scene, mask_box  # noqa: E402

from maskwright.engines import sam_common  # noqa: E402
from maskwright.engines.base import LOWRES  # noqa: E402
from maskwright.engines.transforms import longest_side_shape  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INPUT = sam_common.INPUT_SIZE  # 1024


def tiny_sam_config(
    width: int = 32, vit_hidden: int = 32, vit_layers: int = 3, window: int = 16, downsample: int = 2, heads: int = 2
):
    """SamConfig with SAM's geometry (1024 input, 16 px patches, 256 low-res) and tiny widths/depths.

    Only windowed attention in the ViT: one global layer over 64x64 tokens costs ~4x the rest on a CPU,
    and the two-way transformer of the mask decoder already mixes information across the whole image.
    """
    from transformers import SamConfig

    # width: output channels of the image encoder = prompt/decoder width
    return SamConfig(
        vision_config=dict(
            hidden_size=vit_hidden,
            output_channels=width,
            num_hidden_layers=vit_layers,
            num_attention_heads=2,
            window_size=window,
            global_attn_indexes=[],
            num_pos_feats=width // 2,
            mlp_ratio=2.0,
            image_size=INPUT,
            patch_size=16,
        ),
        prompt_encoder_config=dict(hidden_size=width, mask_input_channels=16, image_size=INPUT, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=width,
            mlp_dim=4 * width,
            num_hidden_layers=2,
            num_attention_heads=heads,
            attention_downsample_rate=downsample,
            iou_head_hidden_dim=32,
            iou_head_depth=3,
        ),
    )


def new_model(seed: int, gain: float = 2.0, width: int = 32, vit_hidden: int = 32, **config):
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(tiny_sam_config(width, vit_hidden, **config))
    with torch.no_grad():
        # SamVisionConfig.initializer_range is 1e-10 (pretrained weights are expected to overwrite it): the
        # encoder would start dead. Use PyTorch's default initialisation everywhere, as segment-anything does.
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding, nn.LayerNorm)):
                module.reset_parameters()
        # transformers initialises the random Fourier features with std = vision hidden // 2 (meant to be
        # overwritten by pretrained weights); SAM's own scale is 1, which gives a smooth point encoding.
        model.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
        align_prompt_attention(model, gain)
    # SAM keeps the random Fourier features fixed (a buffer); transformers makes them a Parameter.
    model.shared_image_embedding.positional_embedding.requires_grad_(False)
    model.prompt_encoder.shared_embedding.positional_embedding.requires_grad_(False)
    return model


def align_prompt_attention(model, gain: float = 2.0, values: bool = True) -> None:
    """Start every token<->image attention of the mask decoder as a positional match.

    Queries and keys carry the same Fourier encoding (prompt points and image tokens), but with
    independent random projections the attention starts uniform, and a tiny decoder then spends hundreds
    of steps on a plateau where it segments everything salient and ignores the prompt. Sharing one scaled
    orthonormal projection for q and k makes the first attention peak where the prompt is (on a
    'disk around the click' task this halved the plateau: ~100 instead of ~230 steps). With ``values``,
    the value/output projections start as the matching projection back, so what a prompt token gathers
    is the image embedding's own content (its appearance at the click), not a random mix of it.
    """
    for name, module in model.mask_decoder.named_modules():
        if not (name.endswith("attn_token_to_image") or name.endswith("attn_image_to_token")):
            continue
        out_dim, in_dim = module.q_proj.weight.shape
        weight = torch.linalg.qr(torch.randn(in_dim, out_dim))[0].T * gain
        module.q_proj.weight.copy_(weight)
        module.k_proj.weight.copy_(weight)
        module.q_proj.bias.zero_()
        module.k_proj.bias.zero_()
        if values:
            module.v_proj.weight.copy_(weight / gain)
            module.out_proj.weight.copy_(weight.T / gain)
            module.v_proj.bias.zero_()
            module.out_proj.bias.zero_()


# --- data ----------------------------------------------------------------------------------------------
def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(H, W) with the longest side in [192, 720] and aspect ratios up to 3:1 either way."""
    longest = int(rng.integers(192, 721))
    shortest = int(longest * rng.uniform(1 / 3, 1.0))
    return (longest, shortest) if rng.random() < 0.5 else (shortest, longest)


def lowres_target(mask: np.ndarray) -> np.ndarray:
    """Bool HxW mask -> (256, 256) float32 0/1 target in the padded low-res frame of SAM's logits."""
    h, w = mask.shape
    vh, vw = longest_side_shape(h, w, LOWRES)
    out = np.zeros((LOWRES, LOWRES), np.float32)
    out[:vh, :vw] = cv2.resize(mask.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA) > 0.5
    return out


def error_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> tuple[float, float, int]:
    """A correction click as a clicker would place it: (x, y, label) inside the error region.

    The error type (missed object -> positive, spill -> negative) is drawn in proportion to its area; the
    point is drawn among pixels at least half as deep in that region as its deepest one.
    """
    fn, fp = gt & ~pred, pred & ~gt
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn + n_fp == 0:
        x, y = interior_point(gt, rng)
        return x, y, 1
    positive = rng.random() < n_fn / (n_fn + n_fp)
    x, y = interior_point(fn if positive else fp, rng)
    return x, y, int(positive)


def jittered_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """XYXY box of ``mask`` with each side moved by noise of ~5% of the box side (SAM uses 10%, <= 20 px)."""
    h, w = mask.shape
    x0, y0, x1, y1 = mask_box(mask)
    bw, bh = x1 - x0, y1 - y0
    noise = rng.normal(0, 0.05, 4) * np.array([bw, bh, bw, bh])
    box = np.array([x0, y0, x1, y1]) + np.clip(noise, -20, 20)
    box = np.clip(box, 0, [w, h, w, h])
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return np.array([x0, y0, x1, y1], np.float32)
    return box.astype(np.float32)


class Task:
    """One target in one image across the rounds of a step: prompt so far, ground truth per round."""

    def __init__(self, image_index: int, mode: str, scene, rng: np.random.Generator) -> None:
        self.image_index = image_index
        self.mode = mode
        self.size = scene.masks.shape[1:]
        n = len(scene.masks)
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self.box = None
        a = int(rng.integers(n))
        self.gt = scene.masks[a]
        if mode == "click":
            self.points.append(interior_point(self.gt, rng))
            self.labels.append(1)
        elif mode == "box":
            self.box = jittered_box(self.gt, rng)
        elif mode == "union":  # clicks on two shapes -> their union; the next round says "not this one"
            b = int(rng.choice([i for i in range(n) if i != a]))
            self.points += [interior_point(self.gt, rng), interior_point(scene.masks[b], rng)]
            self.labels += [1, 1]
            self.first_gt = self.gt | scene.masks[b]
            self.removed = scene.masks[b]
        else:
            raise ValueError(f"unknown mode {mode!r}")

    def target(self, round_index: int) -> np.ndarray:
        if self.mode == "union" and round_index == 0:
            return self.first_gt
        return self.gt

    def add_correction(self, round_index: int, pred: np.ndarray, rng: np.random.Generator) -> None:
        if self.mode == "union" and round_index == 1:
            x, y = interior_point(self.removed, rng)
            self.points.append((x, y))
            self.labels.append(0)
            return
        x, y, label = error_click(pred, self.gt, rng)
        self.points.append((x, y))
        self.labels.append(label)


def task_tokens(task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Points (N, 2) and labels (N,) in the 1024 frame, box (4,) in the 1024 frame or None."""
    pts = np.asarray(task.points, np.float32).reshape(-1, 2)
    pts = sam_common.transform_coords_sam(pts, task.size)
    labels = np.asarray(task.labels, np.int64)
    box = None
    if task.box is not None:
        box = sam_common.transform_coords_sam(task.box.reshape(2, 2), task.size).reshape(4)
    return pts, labels, box


def token_labels(scene, grid: int = 64) -> np.ndarray:
    """(grid, grid) int64 instance label of each image-embedding token: 0 background, k + 1 for shape k,
    -1 for tokens that straddle a boundary or lie in the padding (ignored by the auxiliary loss)."""
    h, w = scene.masks.shape[1:]
    vh, vw = longest_side_shape(h, w, grid)
    cover = [cv2.resize(m.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA) for m in scene.masks]
    cover = np.stack(cover) if cover else np.zeros((0, vh, vw), np.float32)
    labels = np.full((grid, grid), -1, np.int64)
    valid = np.full((vh, vw), -1, np.int64)
    valid[cover.sum(0) <= 0.2] = 0
    if len(cover):
        best = cover.argmax(0)
        valid[cover.max(0) >= 0.8] = best[cover.max(0) >= 0.8] + 1
    labels[:vh, :vw] = valid
    return labels


AUX_CHANNELS = 16  # without a head, the contrastive loss shapes these channels of the embedding directly


def instance_embedding_loss(head: nn.Module | None, emb: torch.Tensor, scenes, rng, samples: int = 384) -> torch.Tensor:
    """Supervised contrastive loss on image-embedding tokens: tokens of the same shape (or of the background)
    close, of different shapes apart.

    Dense supervision of the encoder on every token of every image, where the prompt losses reach it only
    through a few decoded masks; it gives the decoder features in which "the same object as the click" is a
    similarity it can read with one attention step. ``head`` is an auxiliary projection, not saved.
    """
    total = torch.zeros(())
    for i, scene in enumerate(scenes):
        labels = token_labels(scene, emb.shape[-1]).ravel()
        valid = np.flatnonzero(labels >= 0)
        if len(np.unique(labels[valid])) < 2:
            continue
        idx = torch.from_numpy(rng.choice(valid, min(samples, len(valid)), replace=False))
        tokens = emb[i].flatten(1).T[idx]
        z = F.normalize(head(tokens) if head is not None else tokens[:, :AUX_CHANNELS], dim=1)
        y = torch.from_numpy(labels)[idx]
        sim = z @ z.T / 0.1
        eye = torch.eye(len(idx), dtype=torch.bool)
        log_prob = sim - torch.logsumexp(sim.masked_fill(eye, -1e9), dim=1, keepdim=True)
        positive = (y[:, None] == y[None, :]) & ~eye
        has = positive.any(1)
        per_token = -(log_prob * positive).sum(1)[has] / positive.sum(1)[has]
        total = total + per_token.mean()
    return total / len(scenes)


def subcell_labels(scene, grid: int = 64, sub: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Instance label (0 background, k + 1 shape k) of every ``sub x sub`` sub-cell of every image-embedding
    token -- 4 px of the 1024 frame, the resolution of SAM's low-res logits -- as (grid, grid, sub*sub)
    int64, and a (grid, grid) bool validity (False in the padding)."""
    h, w = scene.masks.shape[1:]
    size = grid * sub
    vh, vw = longest_side_shape(h, w, size)
    labels = np.full((size, size), 0, np.int64)
    inst = np.zeros((h, w), np.int64)
    for k, m in enumerate(scene.masks):
        inst[m] = k + 1
    labels[:vh, :vw] = cv2.resize(inst.astype(np.int32), (vw, vh), interpolation=cv2.INTER_NEAREST)
    cells = labels.reshape(grid, sub, grid, sub).transpose(0, 2, 1, 3).reshape(grid, grid, sub * sub)
    gh, gw = -(-vh // sub), -(-vw // sub)
    valid = np.zeros((grid, grid), bool)
    valid[:gh, :gw] = True
    return cells, valid


def subcell_targets(scene, grid: int = 64, sub: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per image-embedding token, which of its sub-cells belong to the token's majority instance:
    (grid, grid, sub*sub) float32 0/1 targets and the (grid, grid) validity of :func:`subcell_labels`.

    SAM's mask decoder upsamples each token to its 4x4 sub-cells with stride-2 transposed convolutions, so
    a mask boundary inside a token can only come from what that token's embedding says about it; the
    instance loss ignores exactly those boundary tokens.
    """
    cells, valid = subcell_labels(scene, grid, sub)
    counts = np.stack([(cells == k).sum(-1) for k in range(len(scene.masks) + 1)], -1)
    majority = counts.argmax(-1)
    return (cells == majority[..., None]).astype(np.float32), valid


def object_colour_targets(scene, grid: int = 64, sub: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per token, the mean colour of the object (or background) under each of its sub-cells, normalised
    as the encoder's input: (grid, grid, sub*sub*3) float32 targets and the (grid, grid) validity.

    "Same object as the click" is, on these scenes, mostly "same underlying colour, texture aside"; a
    token that states its sub-cells' object colours gives the decoder that comparison at the resolution of
    the low-res logits, where the prompt losses alone teach it slowly.
    """
    cells, valid = subcell_labels(scene, grid, sub)
    inst = np.zeros(scene.masks.shape[1:], np.int64)
    for k, m in enumerate(scene.masks):
        inst[m] = k + 1
    table = np.zeros((len(scene.masks) + 1, 3), np.float32)
    for k in range(len(table)):
        region = scene.image[inst == k]
        if len(region):
            table[k] = region.mean(0)
    table = (table / 255.0 - sam_common.IMAGENET_MEAN) / sam_common.IMAGENET_STD
    return table[cells].reshape(grid, grid, sub * sub * 3), valid


def object_colour_loss(head: nn.Module, emb: torch.Tensor, scenes) -> torch.Tensor:
    """MSE of a linear head (discarded after training) predicting :func:`object_colour_targets`."""
    total = torch.zeros(())
    for i, scene in enumerate(scenes):
        target, valid = object_colour_targets(scene, emb.shape[-1])
        tokens = emb[i].permute(1, 2, 0)[torch.from_numpy(valid)]
        total = total + F.mse_loss(head(tokens), torch.from_numpy(target[valid]))
    return total / len(scenes)


def subcell_loss(head: nn.Module, emb: torch.Tensor, scenes) -> torch.Tensor:
    """BCE of a linear head (discarded after training) predicting :func:`subcell_targets` from the tokens."""
    total = torch.zeros(())
    for i, scene in enumerate(scenes):
        target, valid = subcell_targets(scene, emb.shape[-1])
        tokens = emb[i].permute(1, 2, 0)[torch.from_numpy(valid)]
        target = torch.from_numpy(target[valid])
        per_token = F.binary_cross_entropy_with_logits(head(tokens), target, reduction="none").mean(1)
        # Only ~3% of tokens straddle a boundary; weigh them as much as all the uniform ones together.
        boundary = target.min(1).values < 0.5
        total = total + per_token[~boundary].mean()
        if boundary.any():
            total = total + per_token[boundary].mean()
    return total / len(scenes)


# --- model calls ---------------------------------------------------------------------------------------
def decode(model, image_embeddings, image_pe, tasks, masks_in, multimask: bool):
    """Decoder on one group of tasks with the same prompt structure; returns (N, K, 256, 256), (N, K)."""
    toks = [task_tokens(t) for t in tasks]
    n = len(tasks)
    points = torch.from_numpy(np.stack([t[0] for t in toks]))[:, None] if toks[0][0].size else None
    labels = torch.from_numpy(np.stack([t[1] for t in toks]))[:, None] if toks[0][0].size else None
    boxes = torch.from_numpy(np.stack([t[2] for t in toks]))[:, None] if toks[0][2] is not None else None
    sparse, dense = model.prompt_encoder(
        input_points=points, input_labels=labels, input_boxes=boxes, input_masks=masks_in
    )
    if dense.shape[0] != n:
        dense = dense.expand(n, -1, -1, -1)
    masks, iou = model.mask_decoder(
        image_embeddings=image_embeddings,
        image_positional_embeddings=image_pe.expand(n, -1, -1, -1),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    return masks[:, 0], iou[:, 0]


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-candidate BCE + dice: logits (N, K, 256, 256), target (N, 1, 256, 256) -> (N, K)."""
    t = target.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean((-1, -2))
    prob = logits.sigmoid()
    inter = (prob * t).sum((-1, -2))
    dice = 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + t.sum((-1, -2)) + 1)
    return bce + dice


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    t = target.expand_as(pred) > 0.5
    inter = (pred & t).sum((-1, -2)).float()
    union = (pred | t).sum((-1, -2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def lowres_to_mask(lowres: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return sam_common.sam_masks(lowres[None], size)[0]


MODES = ("click", "box", "union")


def train_step(
    model,
    scenes,
    rng,
    rounds: int,
    targets: int = 1,
    aux: str = "none",
    aux_head=None,
    subcell_head=None,
    colour_head=None,
) -> tuple[torch.Tensor, dict]:
    pixel = np.concatenate([sam_common.preprocess_sam(s.image)[0] for s in scenes])
    emb = model.vision_encoder(torch.from_numpy(pixel)).last_hidden_state
    aux = instance_embedding_loss(aux_head, emb, scenes, rng) if aux != "none" else torch.zeros(())
    if subcell_head is not None:
        aux = aux + subcell_loss(subcell_head, emb, scenes)
    if colour_head is not None:
        aux = aux + object_colour_loss(colour_head, emb, scenes)
    image_pe = model.get_image_wide_positional_embeddings()
    groups: dict[str, list[Task]] = {}
    for i, scene in enumerate(scenes):
        for mode in MODES * targets:
            if mode == "union" and len(scene.masks) < 2:
                mode = "click"
            groups.setdefault(mode, []).append(Task(i, mode, scene, rng))
    total = aux.clone()
    per_round: list[list[float]] = [[] for _ in range(rounds)]
    for tasks in groups.values():
        prev_logits = None
        for r in range(rounds):
            idx = torch.tensor([t.image_index for t in tasks])
            masks_in = None
            if prev_logits is not None and rng.random() < 0.5:
                masks_in = prev_logits[:, None]
            # As in SAM: several candidates only for the ambiguous first prompt (one click); a box or
            # several clicks ask for one mask (token 0), which is what the box test and users get.
            multimask = r == 0 and tasks[0].mode == "click" or rng.random() < 0.25
            logits, iou_pred = decode(model, emb[idx], image_pe, tasks, masks_in, multimask)
            target = torch.from_numpy(np.stack([lowres_target(t.target(r)) for t in tasks]))[:, None]
            losses = mask_losses(logits, target)
            best = losses.argmin(1)
            with torch.no_grad():
                true_iou = hard_iou(logits, target)
            loss = losses.gather(1, best[:, None]).mean() + F.mse_loss(iou_pred, true_iou)
            total = total + loss
            per_round[r].append(float(true_iou.gather(1, best[:, None]).mean()))
            chosen = logits.detach()[torch.arange(len(tasks)), best]
            prev_logits = chosen
            if r + 1 < rounds:
                low = chosen.numpy()
                for t, lg in zip(tasks, low):
                    t.add_correction(r + 1, lowres_to_mask(lg, t.size), rng)
    stats = {"loss": float(total.detach()), "aux": float(aux.detach()), "iou": [float(np.mean(v)) for v in per_round]}
    return total, stats


# --- evaluation through the real engine ----------------------------------------------------------------
EVAL_SIZES = ((300, 500), (700, 240), (480, 480))


def evaluate(model_dir: Path, seed: int = 12345, scenes_per_size: int = 4, decoder: str = "torch") -> dict:
    """Click / box / negative-click IoUs of the saved model via ``maskwright.Predictor`` on fresh scenes."""
    from maskwright import Predictor
    from maskwright.engines.sam_registry import load_sam_engine

    predictor = Predictor(load_sam_engine(str(model_dir), decoder=decoder))
    rng = np.random.default_rng(seed)
    click, click_best, box, union_ok, removed = [], [], [], [], []
    for h, w in EVAL_SIZES:
        for _ in range(scenes_per_size):
            scene = make_scene(rng, h, w)
            predictor.set_image(scene.image)
            for k, gt in enumerate(scene.masks):
                x, y = interior_point(gt)
                masks, scores, _ = predictor.predict(np.array([[x, y]]), np.array([1]))
                click.append(iou(masks[int(np.argmax(scores))], gt))
                click_best.append(max(iou(m, gt) for m in masks))
                masks, _, _ = predictor.predict(box=mask_box(gt), multimask_output=False)
                box.append(iou(masks[0], gt))
                if k + 1 < len(scene.masks):
                    other = scene.masks[k + 1]
                    pts = np.array([interior_point(gt), interior_point(other)])
                    masks, _, _ = predictor.predict(pts, np.array([1, 1]), multimask_output=False)
                    union_ok.append(iou(masks[0], gt | other))
                    pts = np.concatenate([pts, pts[1:]])
                    masks, _, _ = predictor.predict(pts, np.array([1, 1, 0]), multimask_output=False)
                    removed.append(iou(masks[0], gt))
    return {
        "click_iou_mean": float(np.mean(click)),
        "click_iou_min": float(np.min(click)),
        "click_best_of_3_iou_mean": float(np.mean(click_best)),
        "box_iou_mean": float(np.mean(box)),
        "box_iou_min": float(np.min(box)),
        "two_clicks_union_iou_mean": float(np.mean(union_ok)),
        "negative_click_iou_mean": float(np.mean(removed)),
        "n_shapes": len(click),
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def save(model, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)


def write_readme(out: Path, args, steps: int, seconds: float, metrics: dict) -> None:
    size = (out / "model.safetensors").stat().st_size
    n_params = metrics.pop("n_params")
    lines = [
        "# tiny-sam: a SamModel trained by this project, for tests of the real SAM path",
        "",
        "A `transformers.SamModel` with SAM's geometry (1024x1024 input, 16 px patches, 64x64 image embedding,",
        f"256x256 low-res logits) and tiny widths: ViT hidden {args.vit_hidden}, {args.vit_layers} windowed layers "
        f"(window {args.window},",
        f"no global attention), {args.width} output channels, mask decoder width {args.width} with 2 two-way layers "
        f"({args.decoder_heads} heads, cross-attention downsampled {args.attn_downsample}x).",
        f"{n_params:,} parameters, `model.safetensors` {size / 1e6:.2f} MB (float32).",
        "",
        "Trained from scratch on synthetic scenes (`tools/synthetic_shapes.py`: textured ellipses, polygons and",
        "rectangles on textured backgrounds) with maskwright's real SAM pre-processing, mixed prompts (click,",
        "jittered box, two clicks -> union then a negative click), correction clicks from the error region and",
        "previous logits as `mask_input`, plus a supervised-contrastive instance loss on the image embedding"
        + (" and a loss making each token predict its 4x4 sub-cell mask" if args.subcells else "")
        + (" and the object colour under each sub-cell" if args.colour else "")
        + ",",
        "and a decoder whose prompt<->image attention starts as a positional/appearance match, by:",
        "",
        "```bash",
        f"OMP_NUM_THREADS={args.threads} .venv/bin/python tools/train_tiny_sam.py --steps {args.steps} "
        f"--minutes {args.minutes:g} --batch {args.batch} --targets {args.targets} "
        f"--width {args.width} --vit-hidden {args.vit_hidden} --vit-layers {args.vit_layers} --window {args.window} "
        f"--attn-downsample {args.attn_downsample} --decoder-heads {args.decoder_heads} "
        f"--{'' if args.subcells else 'no-'}subcells --{'' if args.colour else 'no-'}colour "
        f"--aux {args.aux} --attn-gain {args.attn_gain:g} --lr {args.lr:g} --threads {args.threads} "
        f"--seed {args.seed} --out {args.out}",
        "```",
        "",
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {steps} steps of {args.batch} image(s) "
        f"({args.targets} prompts of each kind per image) in {seconds / 60:.1f} min on a 2-core x86_64 VM",
        f"(no GPU, {args.threads} torch thread(s); other jobs may have shared the CPU, so the time is an upper bound).",
        "",
        "Evaluation through `maskwright.Predictor` on fresh scenes (seed 12345, sizes "
        + ", ".join(f"{h}x{w}" for h, w in EVAL_SIZES)
        + "), click at the deepest interior point, exact box:",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    lines += ["", "Not a segmentation model for real photos: it only knows synthetic shapes.", ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "tiny-sam"))
    parser.add_argument("--steps", type=int, default=2300, help="optimizer steps (the learning-rate schedule's length)")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock cap; stops early if reached")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--rounds", type=int, default=2, help="decoder rounds per target (1 prompt + corrections)")
    parser.add_argument("--targets", type=int, default=1, help="prompts of each kind per image per step")
    parser.add_argument(
        "--aux",
        choices=("channels", "head", "none"),
        default="channels",
        help="instance-embedding loss on the embedding's first channels, through a discarded head, or none",
    )
    parser.add_argument(
        "--subcells",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="auxiliary loss: each token predicts its 4x4 sub-cell mask",
    )
    parser.add_argument(
        "--colour",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="auxiliary loss: each token predicts the object colour under each of its 4x4 sub-cells",
    )
    parser.add_argument("--vit-hidden", type=int, default=64, help="hidden size of the tiny ViT")
    parser.add_argument("--width", type=int, default=48, help="image-embedding / decoder width")
    parser.add_argument("--vit-layers", type=int, default=3, help="windowed attention layers of the tiny ViT")
    parser.add_argument("--window", type=int, default=16, help="ViT attention window, in tokens")
    parser.add_argument("--attn-downsample", type=int, default=2, help="mask decoder cross-attention downsample rate")
    parser.add_argument("--decoder-heads", type=int, default=2, help="mask decoder attention heads")
    parser.add_argument("--attn-gain", type=float, default=2.0, help="q/k projection gain of the aligned init")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a shared CPU)")
    parser.add_argument("--save-every", type=float, default=3.0, help="minutes between checkpoints")
    parser.add_argument("--resume", action="store_true", help="start from the model already in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rng = np.random.default_rng(args.seed)
    if args.resume:
        from transformers import SamModel

        model = SamModel.from_pretrained(out, dtype=torch.float32)
    else:
        model = new_model(
            args.seed,
            args.attn_gain,
            args.width,
            args.vit_hidden,
            vit_layers=args.vit_layers,
            window=args.window,
            downsample=args.attn_downsample,
            heads=args.decoder_heads,
        )
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}", flush=True)
    channels = model.config.vision_config.output_channels
    aux_head = nn.Linear(channels, 16) if args.aux == "head" else None
    subcell_head = nn.Linear(channels, 16) if args.subcells else None
    colour_head = nn.Linear(channels, 48) if args.colour else None
    params = list(model.parameters())
    for head in (aux_head, subcell_head, colour_head):
        params += list(head.parameters()) if head is not None else []
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    budget = args.minutes * 60
    start = last_save = time.time()
    step, recent = 0, []
    while step < args.steps:
        elapsed = time.time() - start
        if elapsed >= budget:
            print(f"time budget of {args.minutes:g} min reached at step {step} of {args.steps}", flush=True)
            break
        # Schedule by steps, not wall clock: the same command gives the same model on a busy or idle CPU.
        frac = step / args.steps
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        scenes = [make_scene(rng, *random_size(rng)) for _ in range(args.batch)]
        loss, stats = train_step(
            model, scenes, rng, args.rounds, args.targets, args.aux, aux_head, subcell_head, colour_head
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        recent.append(stats["iou"])
        if step % 20 == 0:
            ious = np.mean(recent[-20:], axis=0)
            print(
                f"step {step} {elapsed / 60:.1f} min lr {lr:.2e} loss {stats['loss']:.3f} aux {stats['aux']:.3f} "
                f"train IoU per round {np.round(ious, 3).tolist()}",
                flush=True,
            )
        if time.time() - last_save > args.save_every * 60:
            save(model, out)
            last_save = time.time()
    seconds = time.time() - start
    model.eval()
    save(model, out)
    print(f"trained {step} steps in {seconds / 60:.1f} min; evaluating", flush=True)
    metrics = evaluate(out)
    print(metrics, flush=True)
    metrics["n_params"] = n_params
    write_readme(out, args, step, seconds, metrics)


if __name__ == "__main__":
    main()
