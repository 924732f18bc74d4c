"""``classic``: a weight-free interactive segmenter (OpenCV / scikit-image / SciPy / PyMaxflow), CPU only.

Per image (:meth:`ClassicEngine.embed`, at a reduced working scale whose longest side is ``WORK_SIDE``):
8-bit Lab colours, their quantised colour-histogram bin, a texture class (edge density x lightness
spread), contrast-sensitive edge weights between neighbouring pixels, a normalised gradient magnitude and
the geodesic distance from the image border.

Per prompt (:meth:`ClassicEngine.decode`): a binary graph cut (max-flow) whose data term combines

- colour (and, for first clicks and boxes, texture) log-likelihood ratios from smoothed histograms learnt
  from the clicks, the box and the previous mask (local to a region of interest around the object),
- the previous mask (``mask_input``) as a prior that saturates away from its boundary and is relaxed around
  the newest click, so a click fixes the error region it lands in without undoing the rest,
- geodesic proximity (edge-aware path length) to the clicks, a star-convexity-like shape cue,
- hard constraints: small disks at clicks, the outside of a box,

and whose smoothness term follows image edges. The first click without a mask (no prior yet) runs two
GrabCut-style iterations seeded by a geodesic competition between the click and the image border, with
three weightings of the click's distance (part / object / object with context); the middle one is ranked
first unless the others' boundary/colour quality is clearly better. Components of the result that no
click supports, and small holes without a negative click, are cleaned up. Low-res logits are signed
distances to the mask boundary (in working pixels), so feeding them back as ``mask_input`` gives a prior
that is confident far from the boundary.
"""

from __future__ import annotations

import cv2
import maxflow
import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.graph import MCP_Geometric

from maskwright.engines.base import Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.registry import EngineSpec, register
from maskwright.engines.transforms import logits_to_lowres, lowres_to_logits

WORK_SIDE = 400  # longest side of the working resolution (pixels)
L_BINS, AB_BINS = 16, 32  # colour histogram bins for L and for each of a, b (8-bit Lab)
N_BINS = L_BINS * AB_BINS * AB_BINS

SMOOTHNESS = 24.0  # weight of the pairwise (edge-following) term relative to colour log-likelihoods
COLOUR_CLIP = 4.0  # colour log-likelihood ratios are clipped to +-this (nats)
PRIOR_WEIGHT = 3.0  # pull towards the previous mask where it is confident
PRIOR_SATURATION = 6.0  # distance (working pixels) from the previous boundary at which the prior is full
RELAX_FACTOR = 4.0  # the prior is relaxed within RELAX_FACTOR x (click's distance to the error boundary)
GEO_EDGE = 20.0  # extra geodesic cost of crossing a strong edge (per pixel, times gradient^2)
FIRST_SMOOTHNESS = 16.0  # smoother first guesses: no previous mask to keep them in place
GEO_WEIGHT = 0.5  # strength of the click-vs-border geodesic competition (first click)
CLICK_WEIGHT = 5.0  # strength of the newest click's geodesic neighbourhood (refinement)
CORE_FRACTION = 0.55  # soft "click label" disk radius, x the click's distance to the previous mask
SEED_RADIUS = 3  # hard-constraint disk radius at clicks (working pixels)
FIRST_CLICK_STRETCH = (3.0, 1.5, 0.7)  # weight of the click's geodesic distance vs the border's, per candidate
GRABCUT_ITERS = 2  # colour-model re-estimations for a first click (a third one measured no better)
BOX_GRABCUT_ITERS = 3  # ... for a box (a third one measured better)
LOGIT_CLIP = 20.0
STRAY_FRACTION = 0.2  # unclicked components of the previous mask smaller than this x the clicked one go
TEX_LEVELS = 8  # texture classes per axis (edge density, lightness spread)
TEXTURE_WEIGHT = 0.5  # texture log-likelihoods count this much relative to colour (first click, box)
BOX_CENTRE_WEIGHT = 1.5  # pull of the box centre towards object (its rim is more likely background)
REFINE_TEXTURE_WEIGHT = 0.0  # ... when correcting a previous mask (measured: texture hurt there)


# --- embedding ------------------------------------------------------------------------------------------
def colour_bins(lab: np.ndarray) -> np.ndarray:
    """Histogram bin index (H, W) uint16 of an 8-bit Lab image (H, W, 3)."""
    lab = lab.astype(np.uint16)
    return (
        (lab[..., 0] * L_BINS // 256) * (AB_BINS * AB_BINS)
        + (lab[..., 1] * AB_BINS // 256) * AB_BINS
        + (lab[..., 2] * AB_BINS // 256)
    )


def contrast_weights(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge weights exp(-beta |dLab|^2) to the right and down neighbours, each (H, W) float32 in (0, 1].

    ``beta`` adapts to the image's mean contrast (as in GrabCut); the last column / row is 0.
    """
    lab = lab.astype(np.float32)
    dx = ((lab[:, 1:] - lab[:, :-1]) ** 2).sum(-1)
    dy = ((lab[1:] - lab[:-1]) ** 2).sum(-1)
    mean_sq = (dx.sum() + dy.sum()) / max(1, dx.size + dy.size)
    beta = 1.0 / (2.0 * mean_sq + 1e-6)
    wx = np.zeros(lab.shape[:2], np.float32)
    wy = np.zeros(lab.shape[:2], np.float32)
    wx[:, :-1] = np.exp(-beta * dx)
    wy[:-1] = np.exp(-beta * dy)
    return wx, wy


def gradient_magnitude(lab: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (H, W) float32, normalised so its 95th percentile is ~0.5, clipped to [0, 1]."""
    blur = cv2.GaussianBlur(lab.astype(np.float32), (0, 0), 0.8)
    gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt((gx**2 + gy**2).sum(axis=2))
    return np.clip(grad / (2.0 * np.percentile(grad, 95) + 1e-6), 0, 1).astype(np.float32)


def texture_bins(lab: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Texture class (H, W) uint8 in [0, TEX_LEVELS^2): local edge density x local lightness spread (7x7).

    Tells smooth surfaces from busy ones of the same colour (fur vs wall, rock vs plumage).
    """
    light = lab[..., 0].astype(np.float32)
    mean = cv2.blur(light, (7, 7))
    spread = np.sqrt(np.maximum(cv2.blur(light * light, (7, 7)) - mean * mean, 0))
    density = cv2.blur(grad.astype(np.float32), (7, 7))
    # fixed, image-independent quantisation (log-like steps)
    d = np.clip(np.log1p(density * 20.0) / np.log1p(20.0) * TEX_LEVELS, 0, TEX_LEVELS - 1).astype(np.uint8)
    v = np.clip(np.log1p(spread) / np.log1p(64.0) * TEX_LEVELS, 0, TEX_LEVELS - 1).astype(np.uint8)
    return d * TEX_LEVELS + v


def texture_llr(tex: np.ndarray, fg_weight: np.ndarray, bg_weight: np.ndarray) -> np.ndarray:
    """Per-pixel log-likelihood ratio (H, W) of the texture class under object vs background, clipped."""
    n = TEX_LEVELS * TEX_LEVELS
    flat = tex.ravel()
    hf = np.bincount(flat, weights=fg_weight.ravel(), minlength=n).reshape(TEX_LEVELS, TEX_LEVELS)
    hb = np.bincount(flat, weights=bg_weight.ravel(), minlength=n).reshape(TEX_LEVELS, TEX_LEVELS)
    hf = gaussian_filter(hf, 0.7, mode="nearest")
    hb = gaussian_filter(hb, 0.7, mode="nearest")
    pf = hf / (hf.sum() + 1e-9) + 1e-4
    pb = hb / (hb.sum() + 1e-9) + 1e-4
    table = np.clip(np.log(pf / pb), -COLOUR_CLIP, COLOUR_CLIP).astype(np.float32).ravel()
    return table[flat].reshape(tex.shape)


# --- building blocks of decode -------------------------------------------------------------------------
def colour_llr(bins: np.ndarray, fg_weight: np.ndarray, bg_weight: np.ndarray) -> np.ndarray:
    """Per-pixel log p(colour | object) - log p(colour | background), clipped, (H, W) float32.

    ``fg_weight`` / ``bg_weight`` (H, W) weight each pixel as a sample of either model.
    """
    flat = bins.ravel()
    hf = np.bincount(flat, weights=fg_weight.ravel(), minlength=N_BINS).reshape(L_BINS, AB_BINS, AB_BINS)
    hb = np.bincount(flat, weights=bg_weight.ravel(), minlength=N_BINS).reshape(L_BINS, AB_BINS, AB_BINS)
    # smoothing lets similar colours share evidence (a cheap kernel density estimate)
    hf = gaussian_filter(hf, 1.0, mode="constant")
    hb = gaussian_filter(hb, 1.0, mode="constant")
    pf = hf / (hf.sum() + 1e-9) + 1e-5
    pb = hb / (hb.sum() + 1e-9) + 1e-5
    table = np.clip(np.log(pf / pb), -COLOUR_CLIP, COLOUR_CLIP).astype(np.float32).ravel()
    return table[flat].reshape(bins.shape)


def geodesic_distance(grad: np.ndarray, seeds: list[tuple[int, int]]) -> np.ndarray:
    """Edge-aware path length (H, W) from the nearest of ``seeds`` (row, col); cost 1 + GEO_EDGE * grad^2."""
    cost = 1.0 + GEO_EDGE * grad.astype(np.float64) ** 2
    dist, _ = MCP_Geometric(cost).find_costs(seeds)
    return dist.astype(np.float32)


def border_pixels(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, col) of every pixel on the image border."""
    h, w = shape
    rows = [(0, x) for x in range(w)] + [(h - 1, x) for x in range(w)]
    cols = [(y, 0) for y in range(h)] + [(y, w - 1) for y in range(h)]
    return rows + cols


def disks(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """Bool (H, W) union of disks of ``radius`` around ``centres`` (row, col).

    The radius shrinks on tiny images (at most an eighth of the short side) so disks never swallow them.
    """
    out = np.zeros(shape, np.uint8)
    r = max(0, min(int(round(radius)), min(shape) // 8))
    for y, x in centres:
        cv2.circle(out, (int(x), int(y)), r, 1, -1)
    return out.astype(bool)


def graph_cut(
    unary: np.ndarray, hard_fg: np.ndarray, hard_bg: np.ndarray, wx: np.ndarray, wy: np.ndarray, smoothness: float
) -> np.ndarray:
    """Minimum cut: bool (H, W) object mask.

    ``unary`` > 0 favours object (in nats); ``wx``/``wy`` are edge weights to the right/down neighbours;
    ``hard_fg``/``hard_bg`` pixels are fixed (``hard_bg`` wins where both are set).
    """
    u = unary.astype(np.float64)
    big = 1e6
    u = np.where(hard_fg, big, u)
    u = np.where(hard_bg, -big, u)
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(u.shape)
    right = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    down = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    g.add_grid_edges(nodes, weights=smoothness * wx.astype(np.float64), structure=right, symmetric=True)
    g.add_grid_edges(nodes, weights=smoothness * wy.astype(np.float64), structure=down, symmetric=True)
    g.add_grid_tedges(nodes, np.maximum(u, 0), np.maximum(-u, 0))
    g.maxflow()
    return ~g.get_grid_segments(nodes)  # source side = object


def keep_supported_components(mask: np.ndarray, pos: list[tuple[int, int]], prior: np.ndarray | None) -> np.ndarray:
    """Keep the connected components of ``mask`` that hold a positive click or mostly lie in ``prior``.

    Prior-supported components smaller than ``STRAY_FRACTION`` of the largest clicked one are dropped.
    Without either kind of support, keep components at least a tenth of the largest one.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    keep = np.zeros(n, bool)
    for y, x in pos:
        keep[labels[y, x]] = True
    keep[0] = False
    if prior is not None:
        inside = np.bincount(labels.ravel(), weights=prior.ravel().astype(np.float64), minlength=n)
        supported = inside > 0.5 * stats[:, cv2.CC_STAT_AREA]
        if keep.any():
            # small stray blobs of the previous mask that no click vouches for are dropped
            supported &= stats[:, cv2.CC_STAT_AREA] >= STRAY_FRACTION * stats[keep, cv2.CC_STAT_AREA].max()
        keep |= supported
    keep[0] = False
    if not keep.any():
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep[1:] = areas >= 0.1 * areas.max()
    return keep[labels]


def fill_small_holes(mask: np.ndarray, neg: list[tuple[int, int]], max_fraction: float = 0.05) -> np.ndarray:
    """Fill holes of ``mask`` smaller than ``max_fraction`` of its area that hold no negative click (row, col).

    Holes are background components that do not touch the image border.
    """
    if not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    h, w = mask.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    touches = (x == 0) | (y == 0) | (x + stats[:, cv2.CC_STAT_WIDTH] == w) | (y + stats[:, cv2.CC_STAT_HEIGHT] == h)
    fill = ~touches & (stats[:, cv2.CC_STAT_AREA] < max_fraction * mask.sum())
    for r, c in neg:
        fill[labels[r, c]] = False
    fill[0] = False  # label 0 is the mask itself
    return mask | fill[labels]


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (H, W) float32 to the mask boundary: > 0 inside, < 0 outside (pixels), clipped."""
    m = mask.astype(np.uint8)
    if m.all():
        return np.full(mask.shape, LOGIT_CLIP, np.float32)
    if not m.any():
        return np.full(mask.shape, -LOGIT_CLIP, np.float32)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    sd = np.where(m > 0, inside - 0.5, 0.5 - outside)
    return np.clip(sd, -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)


def boundary_score(mask: np.ndarray, grad: np.ndarray, fg_bg_llr: np.ndarray) -> float:
    """Predicted quality in [0, 1]: edge strength along the boundary and colour separation of the two sides."""
    if not mask.any() or mask.all():
        return 0.0
    m = mask.astype(np.uint8)
    edge = (cv2.dilate(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)
    edge_strength = float(np.clip(grad[edge].mean() * 2.0, 0, 1))
    agree = np.where(mask, fg_bg_llr, -fg_bg_llr)
    separation = float(np.clip(agree.mean() / COLOUR_CLIP, 0, 1))
    return 0.5 * edge_strength + 0.5 * separation


def rank_middle_first(results: list[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
    """Rescale the scores of three candidates so the middle one (the balanced setting) wins unless the
    quality estimate of another is clearly better; the boundary/colour score alone ranks poorly."""
    if len(results) != 3:
        return results
    bonus = (0.0, 0.25, 0.0)
    return [(m, 0.25 + 0.5 * s + b) for (m, s), b in zip(results, bonus)]


class _Work:
    """The embedding's arrays cropped to a region of interest (rows y0:y1, cols x0:x1) of the working image."""

    def __init__(self, arrays: dict[str, np.ndarray], roi: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = roi
        self.roi = roi
        self.bins = arrays["bins"][y0:y1, x0:x1]
        self.texture = arrays["texture"][y0:y1, x0:x1]
        self.grad = arrays["grad"][y0:y1, x0:x1].astype(np.float32)
        self.wx = arrays["edge_x"][y0:y1, x0:x1].astype(np.float32).copy()
        self.wy = arrays["edge_y"][y0:y1, x0:x1].astype(np.float32).copy()
        self.wx[:, -1] = 0  # no edges across the crop border
        self.wy[-1] = 0
        self.shape = self.bins.shape

    def appearance_llr(self, fg_weight: np.ndarray, bg_weight: np.ndarray, texture_weight: float) -> np.ndarray:
        """Colour + texture log-likelihood ratio (object vs background), (H, W) float32, clipped."""
        llr = colour_llr(self.bins, fg_weight, bg_weight)
        if texture_weight > 0:
            llr += texture_weight * texture_llr(self.texture, fg_weight, bg_weight)
        return np.clip(llr, -COLOUR_CLIP, COLOUR_CLIP)

    def local(self, points: list[tuple[int, int]]) -> list[tuple[int, int]]:
        y0, _, x0, _ = self.roi
        h, w = self.shape
        return [(min(h - 1, max(0, y - y0)), min(w - 1, max(0, x - x0))) for y, x in points]


def _roi_around(
    mask: np.ndarray | None, points: list[tuple[int, int]], box: tuple[int, int, int, int] | None, shape
) -> tuple[int, int, int, int]:
    """Bounding rows/cols (y0, y1, x0, x1) of the object evidence, grown by a margin; whole image if none."""
    h, w = shape
    ys, xs = [], []
    if mask is not None and mask.any():
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        ys += [rows[0], rows[-1]]
        xs += [cols[0], cols[-1]]
    for y, x in points:
        ys.append(y)
        xs.append(x)
    if box is not None:
        ys += [box[1], box[3]]
        xs += [box[0], box[2]]
    if not ys:
        return 0, h, 0, w
    y0, y1, x0, x1 = min(ys), max(ys), min(xs), max(xs)
    margin = max(16, int(0.3 * max(y1 - y0, x1 - x0)))
    return max(0, y0 - margin), min(h, y1 + margin + 1), max(0, x0 - margin), min(w, x1 + margin + 1)


# --- the engine ---------------------------------------------------------------------------------------
class ClassicEngine(Engine):
    name = "classic"
    version = "0.4"

    def embed(self, image: np.ndarray) -> Embedding:
        """Working-scale features of an HxWx3 uint8 RGB image (longest side at most ``WORK_SIDE``)."""
        h, w = image.shape[:2]
        scale = min(1.0, WORK_SIDE / max(h, w))
        sh, sw = max(2, round(h * scale)), max(2, round(w * scale))
        small = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB)
        wx, wy = contrast_weights(lab)
        grad = gradient_magnitude(lab)
        arrays = {
            "lab": lab,
            "bins": colour_bins(lab),
            "texture": texture_bins(lab, grad),
            "edge_x": wx.astype(np.float16),
            "edge_y": wy.astype(np.float16),
            "grad": grad.astype(np.float16),
            "geo_border": geodesic_distance(grad, border_pixels(grad.shape)).astype(np.float16),
        }
        return Embedding(self.name, self.version, (h, w), arrays, {"scale_y": sh / h, "scale_x": sw / w})

    def decode(self, embedding: Embedding, prompt: Prompt, multimask_output: bool) -> MaskPrediction:
        arrays = embedding.arrays
        shape = arrays["bins"].shape
        sh, sw = shape
        sy, sx = embedding.meta["scale_y"], embedding.meta["scale_x"]
        pos, neg = [], []
        if prompt.point_coords is not None:
            for (x, y), label in zip(prompt.point_coords.tolist(), prompt.point_labels.tolist()):
                p = (min(sh - 1, int(y * sy)), min(sw - 1, int(x * sx)))
                (pos if label == 1 else neg).append(p)
        newest = None
        if prompt.point_coords is not None:
            x, y = prompt.point_coords[-1].tolist()
            newest = ((min(sh - 1, int(y * sy)), min(sw - 1, int(x * sx))), int(prompt.point_labels[-1]))
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box.tolist()
            box = (
                max(0, int(x0 * sx)),
                max(0, int(y0 * sy)),
                min(sw, int(np.ceil(x1 * sx))),
                min(sh, int(np.ceil(y1 * sy))),
            )
        prior = None
        if prompt.mask_input is not None:
            prior = lowres_to_logits(prompt.mask_input, shape)[0]

        n_out = 3 if multimask_output else 1
        if prior is not None and (prior > 0).any():
            results = self._refine(arrays, prior, pos, neg, newest, box, n_out)
        elif box is not None:
            results = self._from_box(arrays, box, pos, neg, n_out)
        elif pos:
            results = self._from_clicks(arrays, pos, neg, n_out)
        else:
            # only negative clicks and/or an empty previous mask: nothing is object
            results = [(np.zeros(shape, bool), 0.0)] * n_out
        return self._finish(embedding, results)

    # --- prompt kinds ---------------------------------------------------------------------------------
    def _from_clicks(self, arrays, pos, neg, n_out) -> list[tuple[np.ndarray, float]]:
        """Clicks without a previous mask: GrabCut-like iterations seeded by a geodesic competition.

        A pixel starts as object when it is geodesically closer to a positive click than to the image
        border (a weak background seed: annotated objects rarely fill the whole border) or to a negative
        click. Candidates weigh the click's distance differently (part / object / object with context).
        """
        shape = arrays["bins"].shape
        work = _Work(arrays, (0, shape[0], 0, shape[1]))
        pos_l, neg_l = work.local(pos), work.local(neg)
        geo_pos = geodesic_distance(work.grad, pos_l)
        geo_bg = arrays["geo_border"].astype(np.float32)
        if neg_l:
            geo_bg = np.minimum(geo_bg, geodesic_distance(work.grad, neg_l))
        hard_fg = disks(shape, pos_l, SEED_RADIUS)
        hard_bg = disks(shape, neg_l, SEED_RADIUS)
        norm = float(np.sqrt(shape[0] * shape[1])) * 0.1
        stretches = FIRST_CLICK_STRETCH if n_out == 3 else FIRST_CLICK_STRETCH[1:2]
        results = []
        for stretch in stretches:
            competition = np.clip((geo_bg - stretch * geo_pos) / norm, -1.0, 1.0)
            geo_term = GEO_WEIGHT * competition
            fg_w = np.clip(competition, 0, 1) + 4.0 * disks(shape, pos_l, 2 * SEED_RADIUS)
            bg_w = np.clip(-competition, 0, 1) + 4.0 * disks(shape, neg_l, 2 * SEED_RADIUS)
            for _ in range(GRABCUT_ITERS):
                llr = work.appearance_llr(fg_w, bg_w, TEXTURE_WEIGHT)
                mask = graph_cut(llr + geo_term, hard_fg, hard_bg, work.wx, work.wy, FIRST_SMOOTHNESS)
                mask = fill_small_holes(keep_supported_components(mask, pos_l, None), neg_l)
                fg_w = mask.astype(np.float32)
                bg_w = (~mask).astype(np.float32) + 4.0 * hard_bg
            llr = work.appearance_llr(fg_w, bg_w, TEXTURE_WEIGHT)
            results.append((mask, boundary_score(mask, work.grad, llr)))
        return rank_middle_first(results)

    def _from_box(self, arrays, box, pos, neg, n_out) -> list[tuple[np.ndarray, float]]:
        """A box (with optional clicks): GrabCut inside the box; candidates differ in smoothness."""
        shape = arrays["bins"].shape
        work = _Work(arrays, (0, shape[0], 0, shape[1]))
        x0, y0, x1, y1 = box
        inside = np.zeros(shape, bool)
        inside[y0:y1, x0:x1] = True
        hard_fg = disks(shape, pos, SEED_RADIUS)
        hard_bg = disks(shape, neg, SEED_RADIUS) | ~inside
        # the box centre is more likely object than its rim
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        ry, rx = max(1.0, (y1 - y0) / 2), max(1.0, (x1 - x0) / 2)
        centrality = np.clip(1.0 - np.maximum(np.abs(yy - cy) / ry, np.abs(xx - cx) / rx), 0, 1).astype(np.float32)
        shape_term = BOX_CENTRE_WEIGHT * (centrality - 0.3)
        smooth = (SMOOTHNESS * 0.5, SMOOTHNESS, SMOOTHNESS * 2.0) if n_out == 3 else (SMOOTHNESS,)
        results = []
        for lam in smooth:
            fg_w = inside * (0.5 + centrality) + 4.0 * disks(shape, pos, 2 * SEED_RADIUS)
            bg_w = (~inside).astype(np.float32) + 4.0 * disks(shape, neg, 2 * SEED_RADIUS)
            mask = inside
            for _ in range(BOX_GRABCUT_ITERS):
                llr = work.appearance_llr(fg_w, bg_w, TEXTURE_WEIGHT)
                mask = graph_cut(llr + shape_term, hard_fg, hard_bg, work.wx, work.wy, lam)
                mask = keep_supported_components(mask, pos, None)
                fg_w = mask.astype(np.float32)
                bg_w = (~mask).astype(np.float32)
            results.append((mask, boundary_score(mask, work.grad, work.appearance_llr(fg_w, bg_w, TEXTURE_WEIGHT))))
        return results

    def _refine(self, arrays, prior, pos, neg, newest, box, n_out) -> list[tuple[np.ndarray, float]]:
        """Correct the previous mask with the clicks; candidates differ in how far the newest click reaches."""
        shape = arrays["bins"].shape
        prev = prior > 0
        roi = _roi_around(prev, pos + neg, box, shape)
        work = _Work(arrays, roi)
        y0, y1, x0, x1 = roi
        prior_l = prior[y0:y1, x0:x1]
        prev_l = prev[y0:y1, x0:x1]
        pos_l, neg_l = work.local(pos), work.local(neg)
        hard_fg = disks(work.shape, pos_l, SEED_RADIUS)
        hard_bg = disks(work.shape, neg_l, SEED_RADIUS)
        if box is not None:
            outside = np.ones(shape, bool)
            outside[box[1] : box[3], box[0] : box[2]] = False
            hard_bg |= outside[y0:y1, x0:x1]
        prior_term = PRIOR_WEIGHT * np.clip(prior_l / PRIOR_SATURATION, -1.0, 1.0)
        # colour samples: the previous mask, trusted more away from its boundary, and the clicks
        confidence = np.clip(np.abs(prior_l) / PRIOR_SATURATION, 0.2, 1.0)
        fg_prev, bg_prev = prev_l * confidence, ~prev_l * confidence
        fg_clicks = 4.0 * disks(work.shape, pos_l, 2 * SEED_RADIUS)
        bg_clicks = 4.0 * disks(work.shape, neg_l, 2 * SEED_RADIUS)
        fg_w, bg_w = fg_prev + fg_clicks, bg_prev + bg_clicks

        click_extent = None
        if newest is not None:
            (cy, cx), label = newest
            (cy, cx) = work.local([(cy, cx)])[0]
            if bool(prev_l[cy, cx]) != bool(label):
                # distance from the click to the nearest pixel the previous mask already labels as the click does
                same = prev_l if label == 1 else ~prev_l
                if same.any():
                    dist = cv2.distanceTransform((~same).astype(np.uint8), cv2.DIST_L2, 3)
                    click_extent = max(float(dist[cy, cx]), 2.0)
                else:
                    click_extent = float(max(work.shape))
        factors = (RELAX_FACTOR * 0.5, RELAX_FACTOR, RELAX_FACTOR * 2.0) if n_out == 3 else (RELAX_FACTOR,)
        results = []
        for factor in factors:
            unary_prior = prior_term
            fg_wk, bg_wk = fg_w, bg_w
            geo_term = 0.0
            relax = 1.0
            if click_extent is not None:
                (cy, cx), label = newest
                (cy, cx) = work.local([(cy, cx)])[0]
                reach = factor * click_extent
                # relax the prior along the click's homogeneous surroundings (geodesic, so it follows
                # elongated error regions and stops at edges)
                geo = geodesic_distance(work.grad, [(cy, cx)])
                relax = 1.0 - np.exp(-((geo / reach) ** 2))
                unary_prior = prior_term * relax
                sign = 1.0 if label == 1 else -1.0
                geo_term = sign * CLICK_WEIGHT * np.clip(1.0 - geo / reach, 0.0, 1.0)
                # the click sits in the middle of its error region: a disk around it, a fraction of its
                # distance to the error boundary, very likely has the click's label, whatever its texture
                yy, xx = np.ogrid[0 : work.shape[0], 0 : work.shape[1]]
                core = np.clip(1.0 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (CORE_FRACTION * click_extent), 0, 1)
                geo_term = geo_term + sign * 2.0 * COLOUR_CLIP * core
                # the click's neighbourhood is a strong colour sample of its label
                sample = (geo < 0.5 * click_extent).astype(np.float32) * 4.0
                # the previous labels near the click are suspect: they teach neither colour model
                fg_wk = fg_prev * relax + fg_clicks + (sample if label == 1 else 0.0)
                bg_wk = bg_prev * relax + bg_clicks + (sample if label == 0 else 0.0)
            llr = work.appearance_llr(fg_wk, bg_wk, REFINE_TEXTURE_WEIGHT)
            mask_l = graph_cut(llr + unary_prior + geo_term, hard_fg, hard_bg, work.wx, work.wy, SMOOTHNESS)
            mask_l = keep_supported_components(mask_l, pos_l, prev_l)
            mask_l = fill_small_holes(mask_l, neg_l)
            mask = np.zeros(shape, bool)
            mask[y0:y1, x0:x1] = mask_l
            results.append((mask, boundary_score(mask_l, work.grad, llr)))
        return results

    # --- outputs ----------------------------------------------------------------------------------------
    def _finish(self, embedding: Embedding, results: list[tuple[np.ndarray, float]]) -> MaskPrediction:
        h, w = embedding.original_size
        sd = np.stack([signed_distance(m) for m, _ in results])
        if sd.shape[1:] == (h, w):
            full = sd > 0
        else:
            full = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) > 0 for s in sd])
        scores = np.asarray([float(np.clip(s, 0, 1)) for _, s in results], np.float32)
        return MaskPrediction(full, scores, logits_to_lowres(sd, pad_value=-LOGIT_CLIP))


register(
    EngineSpec(
        name="classic",
        family="classic",
        description="weight-free graph-cut engine (colour models, geodesic cues, previous-mask prior); runs anywhere",
        factory=ClassicEngine,
        priority=0,
    )
)
