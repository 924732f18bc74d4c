"""Segment-everything for the weight-free ``classic`` family: a hierarchy of merged superpixels.

A click of the classic engine costs a geodesic distance transform, so a 32x32 grid of clicks is far too
slow on a CPU. Instead, at a reduced working size:

1. over-segment the image into superpixels (SLIC on Lab colour);
2. build the region adjacency graph, each edge carrying the length of the shared boundary and the summed
   edge strength (Lab gradient) along it;
3. merge greedily, always the pair with the weakest link (mean boundary edge strength plus colour
   distance, discounted for small regions so specks go first); every merge creates a node of a binary
   tree, born at the merge *level* (levels are made monotone, so the tree is a proper hierarchy);
4. every node of the tree is a candidate mask (plus connected sets of a border-saliency map);
5. the best distinct candidates are re-cut by GrabCut twice, from their box and from their own pixels;
   region candidates that nearly equal a cut (mask IoU > ``REFINE_SUPERSEDE``) give way to it.

Scores use the same ``[0, 1]`` scales as SAM so the generator's filters apply unchanged:

* predicted IoU proxy: a global linear ranking score (``RANK_WEIGHTS``: edge strength along the outline
  and inside, colour contrast to the neighbours, stability, graph cut or not, size, contact with the
  image border) mapped through a logistic so that ``RANK_THRESHOLD`` lands on SAM's default 0.88;
* stability proxy, the analogue of SAM's IoU between masks at logit ``+offset`` and ``-offset``: the
  IoU between the region that contains this node slightly *above* its level and the part of it that
  exists slightly *below* (regions that survive a wide band of merge levels score 1); for a cut, the IoU
  of the cut before and after its last GrabCut iteration.

Proposals ask the generator for mask-aware NMS (``NMS_MASK_IOU``): two candidates with nearly the same
box are duplicates only if their pixels agree too, so an object is not lost to a same-box candidate that
bled into the background. Output masks are free of islands and holes under ``OUTPUT_SPECK_FRACTION``.
"""

from __future__ import annotations

import heapq
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

from maskwright.automask.amg import box_nms
from maskwright.automask.generator import Proposals

WORK_SIDE = 320  # longest side of the working resolution, pixels
N_SUPERPIXELS = 400  # SLIC target count
COLOUR_SCALE = 25.0  # Lab distance that weighs as much as a full-strength edge
SMALL_REGION_FRACTION = 0.01  # regions under this fraction of the image have their links discounted
LEVEL_BAND = 0.08  # half-width of the band of merge levels for stability, per unit of offset
MIN_AREA_FRACTION = 0.005  # candidates smaller than this fraction of the image are not proposed
MAX_AREA_FRACTION = 0.95  # nor larger than this (the whole image is not an object)
SALIENCY_SUPERPIXELS = 400  # superpixels of the border-saliency candidates (0 disables them)
SALIENCY_LEVELS = tuple(np.linspace(0.1, 0.9, 17))  # thresholds of the saliency map, in [0, 1]
SALIENCY_BAND = 0.05  # half-width of the saliency band for stability, per unit of offset
REFINE_SEEDS = 12  # best region candidates (distinct boxes) refined by graph cuts (0 disables)
REFINE_BOX_NMS = 0.7  # box IoU above which a lower-ranked seed is a duplicate of a chosen one
REFINE_SUPERSEDE = 0.9  # region candidates whose mask IoU with a cut is above this give way to it
REFINE_AREA_FRACTION = (0.02, 0.8)  # seeds outside this range of the image's area are not refined
REFINE_MARGIN = 0.1  # the graph cut's box is the seed's box grown by this fraction of its size per side
REFINE_ITERATIONS = 3  # GrabCut iterations; stability compares the cut before and after the last one
CUT_MIN_PART_FRACTION = 0.002  # islands and holes of a cut under this fraction of the image are specks
OUTPUT_SPECK_FRACTION = 0.001  # islands and holes under this fraction of the image are removed from outputs
NMS_MASK_IOU = 0.75  # same-box candidates are duplicates only if their masks overlap more than this
#: ranking of candidates (their predicted-IoU proxy): weights of a linear score over
#: (mean edge strength on the outline, mean edge strength on superpixel borders inside, Lab contrast to
#: the neighbours / COLOUR_SCALE, stability, 1 for a graph cut, log of the area fraction, border contact).
#: Fitted once, on the even-indexed GrabCut photos only, so that of two overlapping candidates of the
#: annotated object the better-fitting one scores higher (pairwise logistic loss); global constants.
RANK_WEIGHTS = (3.9, 2.4, 0.6, 0.5, 1.0, 1.4, -8.3)
RANK_THRESHOLD = -1.4  # the score mapped to predicted IoU 0.88 (SAM's default pred_iou_thresh)
#: merge orders pooled for candidates:
#: (superpixel count, Lab distance scale, small-region fraction, weight of border saliency in Lab units)
HIERARCHIES: tuple[tuple[int, float, float, float], ...] = (
    (400, 25.0, 0.01, 0.0),
    (400, 50.0, 0.03, 0.0),
    (200, 1e9, 0.01, 0.0),
    (400, 25.0, 0.01, 100.0),
    (400, 50.0, 0.03, 100.0),
)


@dataclass
class RegionTree:
    """A binary merge tree over superpixels; nodes ``0 .. n_leaves - 1`` are the superpixels.

    ``children[k]`` is ``(-1, -1)`` for leaves; ``level[k]`` is the merge level at which node ``k`` was
    born (0 for leaves) and ``parent[k]`` is -1 for the root(s).
    """

    labels: np.ndarray  # (h, w) int32 superpixel id per pixel
    children: np.ndarray  # (n_nodes, 2) int64
    parent: np.ndarray  # (n_nodes,) int64
    level: np.ndarray  # (n_nodes,) float64
    area: np.ndarray  # (n_nodes,) float64 pixels
    boundary_edge: np.ndarray  # (n_nodes,) mean edge strength along the node's outer boundary
    inner_edge: np.ndarray  # (n_nodes,) mean edge strength along superpixel borders inside the node
    colour_contrast: np.ndarray  # (n_nodes,) Lab distance to the boundary-weighted mean of its neighbours

    @property
    def n_leaves(self) -> int:
        return int(self.labels.max()) + 1

    def leaves_of(self, node: int) -> list[int]:
        out, stack = [], [node]
        while stack:
            k = stack.pop()
            a, b = self.children[k]
            if a < 0:
                out.append(k)
            else:
                stack.extend((a, b))
        return out


def edge_strength(lab: np.ndarray) -> np.ndarray:
    """``(h, w)`` edge strength in ``[0, 1]`` of a float Lab image: Sobel magnitude at two scales."""
    total = np.zeros(lab.shape[:2], np.float32)
    for sigma in (1.0, 2.0):
        blur = cv2.GaussianBlur(lab, (0, 0), sigma)
        gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
        total += np.sqrt((gx**2 + gy**2).sum(axis=2))
    return np.clip(total / (np.percentile(total, 99) + 1e-6), 0, 1)


def adjacency(labels: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of 4-adjacent labels with their shared boundary length and summed edge strength.

    Returns ``(pairs (M, 2) with pairs[:, 0] < pairs[:, 1], lengths (M,), edge_sums (M,))``.
    """
    n = int(labels.max()) + 1
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    e = np.concatenate(
        [np.maximum(edges[:, :-1], edges[:, 1:]).ravel(), np.maximum(edges[:-1, :], edges[1:, :]).ravel()]
    )
    differ = a != b
    lo, hi, e = np.minimum(a, b)[differ], np.maximum(a, b)[differ], e[differ]
    keys, inverse = np.unique(lo * n + hi, return_inverse=True)
    lengths = np.bincount(inverse).astype(np.float64)
    sums = np.bincount(inverse, weights=e).astype(np.float64)
    return np.stack([keys // n, keys % n], axis=1), lengths, sums


def build_region_tree(
    lab: np.ndarray,
    labels: np.ndarray,
    edges: np.ndarray,
    colour_scale: float = COLOUR_SCALE,
    small_fraction: float = SMALL_REGION_FRACTION,
) -> RegionTree:
    """Greedy pairwise merging of the regions of ``labels`` into a binary tree (see module docstring).

    Args:
        lab: ``(h, w, 3)`` float Lab image; labels: ``(h, w)`` superpixel ids ``0 .. n - 1`` (all present);
        edges: ``(h, w)`` edge strength in ``[0, 1]``.
    """
    n = int(labels.max()) + 1
    total_area = float(labels.size)
    flat = labels.ravel()
    n_nodes = 2 * n - 1
    areas = np.zeros(n_nodes, np.float64)
    areas[:n] = np.bincount(flat, minlength=n)
    colours = np.zeros((n_nodes, lab.shape[2]), np.float64)  # Lab (+ extra feature) sums
    for c in range(lab.shape[2]):
        colours[:n, c] = np.bincount(flat, weights=lab[..., c].ravel(), minlength=n)
    children = np.full((n_nodes, 2), -1, np.int64)
    parent = np.full(n_nodes, -1, np.int64)
    level = np.zeros(n_nodes, np.float64)
    inner_len = np.zeros(n_nodes, np.float64)
    inner_sum = np.zeros(n_nodes, np.float64)
    boundary_edge = np.zeros(n_nodes, np.float64)
    colour_contrast = np.zeros(n_nodes, np.float64)
    # neighbours[k] = {j: [shared boundary length, summed edge strength]}
    neighbours: list[dict[int, list[float]]] = [{} for _ in range(n_nodes)]
    pairs, lengths, sums = adjacency(labels, edges)
    for (i, j), length, s in zip(pairs.tolist(), lengths.tolist(), sums.tolist()):
        neighbours[i][j] = [length, s]
        neighbours[j][i] = [length, s]

    def mean_colour(k: int) -> np.ndarray:
        return colours[k] / areas[k]

    def describe_boundary(k: int) -> None:
        # The outer boundary of k at its birth (its neighbours merge further later; that is fine: the
        # boundary as a set of pixels does not change until k itself is merged).
        nbs = neighbours[k]
        length = sum(e[0] for e in nbs.values())
        if length == 0:
            return
        boundary_edge[k] = sum(e[1] for e in nbs.values()) / length
        ring = sum(e[0] * mean_colour(nb) for nb, e in nbs.items()) / length
        colour_contrast[k] = float(np.linalg.norm(mean_colour(k) - ring))

    def weight(i: int, j: int) -> float:
        length, s = neighbours[i][j]
        colour_dist = float(np.linalg.norm(mean_colour(i) - mean_colour(j))) / colour_scale
        small = min(areas[i], areas[j]) / (small_fraction * total_area)
        return (s / length + colour_dist) * min(1.0, small) ** 0.5

    for k in range(n):
        describe_boundary(k)
    heap = [(weight(i, j), i, j) for i, j in pairs.tolist()]
    heapq.heapify(heap)
    alive = np.zeros(n_nodes, bool)
    alive[:n] = True
    k = n
    while heap:
        w, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # a stale link: one end was merged already
        alive[i] = alive[j] = False
        alive[k] = True
        children[k] = (i, j)
        parent[i] = parent[j] = k
        level[k] = max(w, level[i], level[j])  # monotone levels make the tree a proper hierarchy
        areas[k] = areas[i] + areas[j]
        colours[k] = colours[i] + colours[j]
        shared_len, shared_sum = neighbours[i][j]
        inner_len[k] = inner_len[i] + inner_len[j] + shared_len
        inner_sum[k] = inner_sum[i] + inner_sum[j] + shared_sum
        merged: dict[int, list[float]] = {}
        for src in (i, j):
            for nb, (length, s) in neighbours[src].items():
                if nb in (i, j):
                    continue
                entry = merged.setdefault(nb, [0.0, 0.0])
                entry[0] += length
                entry[1] += s
                del neighbours[nb][src]
            neighbours[src] = {}
        neighbours[k] = merged
        for nb, entry in merged.items():
            neighbours[nb][k] = entry
            heapq.heappush(heap, (weight(k, nb), k, nb))
        describe_boundary(k)
        k += 1
    used = slice(0, k)
    inner_edge = np.where(inner_len > 0, inner_sum / np.maximum(inner_len, 1), 0.0)
    return RegionTree(
        labels=labels,
        children=children[used],
        parent=parent[used],
        level=level[used],
        area=areas[used],
        boundary_edge=boundary_edge[used],
        inner_edge=inner_edge[used],
        colour_contrast=colour_contrast[used],
    )


def stability_scores(tree: RegionTree, band: float) -> np.ndarray:
    """Stability proxy per node: IoU between the region containing the node at ``t + band`` and the
    part of it alive at ``t - band``, where ``t`` is the middle of the node's life ``[birth, death)``.

    Both are nested in each other, so the IoU is an area ratio; the part below is found by following the
    larger child, the region above by climbing to the last ancestor born at or under ``t + band``.
    """
    n_nodes = len(tree.level)
    top = tree.level.max() if n_nodes else 0.0
    death = np.where(tree.parent >= 0, tree.level[np.maximum(tree.parent, 0)], top + 2 * band)
    out = np.ones(n_nodes, np.float32)
    for k in range(n_nodes):
        t = 0.5 * (tree.level[k] + death[k])
        above = k
        while tree.parent[above] >= 0 and tree.level[tree.parent[above]] <= t + band:
            above = tree.parent[above]
        below = k
        while tree.children[below, 0] >= 0 and tree.level[below] > t - band:
            a, b = tree.children[below]
            below = a if tree.area[a] >= tree.area[b] else b
        out[k] = tree.area[below] / tree.area[above]
    return out


def objectness(features: np.ndarray) -> np.ndarray:
    """Seed ranking for graph-cut refinement, in ``[0, 1]``, from ``(N, 3)`` features: mean edge strength
    along the outer boundary, mean edge strength along superpixel borders inside, Lab contrast to the
    neighbours (the output's predicted IoU is the ranking of ``RANK_WEIGHTS`` instead)."""
    boundary, inside, colour = np.asarray(features, np.float64).reshape(-1, 3).T
    del inside  # measured, but penalising inner edges favoured flat parts over whole textured objects
    z = 6.0 * (boundary + colour / COLOUR_SCALE) - 4.0
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def tree_features(tree: RegionTree) -> np.ndarray:
    """``(n_nodes, 3)`` objectness features of every node (see :func:`objectness`)."""
    return np.stack([tree.boundary_edge, tree.inner_edge, tree.colour_contrast], axis=1)


def representative_points(labels: np.ndarray) -> np.ndarray:
    """``(n, 2)`` XY per superpixel: its pixel farthest from any superpixel border (inside it)."""
    n = int(labels.max()) + 1
    border = np.zeros(labels.shape, bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    dist = ndimage.distance_transform_edt(~border)
    flat = labels.ravel()
    order = np.lexsort((-dist.ravel(), flat))  # by label, then by decreasing distance
    first = order[np.searchsorted(flat[order], np.arange(n))]
    ys, xs = np.unravel_index(first, labels.shape)
    return np.stack([xs, ys], axis=1).astype(np.float32)


def superpixels(small_rgb: np.ndarray, n_segments: int = N_SUPERPIXELS) -> np.ndarray:
    """SLIC superpixels with consecutive ids ``0 .. n - 1``."""
    labels = slic(small_rgb, n_segments=n_segments, compactness=10.0, start_label=0, convert2lab=True)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(small_rgb.shape[:2]).astype(np.int32)


@dataclass
class _Candidates:
    labels: np.ndarray  # (h, w) superpixel ids at the working size
    leaf_sets: list[np.ndarray]  # superpixel ids of each candidate
    features: np.ndarray  # (N, 3) objectness features
    stability: np.ndarray
    points: np.ndarray  # XY at the working size


def _tree_candidates(tree: RegionTree, stability_offset: float) -> _Candidates:
    frac = tree.area / tree.labels.size
    nodes = np.flatnonzero((frac >= MIN_AREA_FRACTION) & (frac <= MAX_AREA_FRACTION))
    leaf_points = representative_points(tree.labels)
    main_leaf = np.empty(len(nodes), np.int64)
    for n_, k in enumerate(nodes):
        while tree.children[k, 0] >= 0:  # the node's largest leaf holds its representative point
            a, b = tree.children[k]
            k = a if tree.area[a] >= tree.area[b] else b
        main_leaf[n_] = k
    return _Candidates(
        tree.labels,
        [np.asarray(tree.leaves_of(int(k)), np.int64) for k in nodes],
        tree_features(tree)[nodes],
        stability_scores(tree, LEVEL_BAND * stability_offset)[nodes],
        leaf_points[main_leaf],
    )


def border_saliency(labels: np.ndarray, lab: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per superpixel, how far (geodesically) it is from the image border, in ``[0, 1]``.

    Distances run over the superpixel graph with links weighted by colour distance (small differences
    clamped to 0, so texture does not accumulate) plus the edge strength along the shared boundary.
    Distances from each of the four sides are computed separately and the second smallest is kept, so a
    region touching one side (a person cut by the bottom edge) still counts as far from the border.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    n = int(labels.max()) + 1
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    mean = np.stack([np.bincount(flat, weights=lab[..., c].ravel(), minlength=n) for c in range(3)], 1)
    mean /= area[:, None]
    pairs, lengths, sums = adjacency(labels, edges)
    colour = np.linalg.norm(mean[pairs[:, 0]] - mean[pairs[:, 1]], axis=1) / COLOUR_SCALE
    weight = np.maximum(colour - 0.1, 0.0) + sums / lengths + 1e-3
    graph = coo_matrix((weight, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    sides = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    dist = np.stack([dijkstra(graph, directed=False, indices=np.unique(side), min_only=True) for side in sides])
    second = np.sort(dist, axis=0)[1]
    return second / (second.max() + 1e-9)


def _saliency_candidates(
    labels: np.ndarray, lab: np.ndarray, edges: np.ndarray, stability_offset: float
) -> _Candidates:
    """Connected superlevel sets of the border saliency, at evenly spaced levels, as candidates.

    Stability is exactly SAM's, on the saliency map instead of logits: the part of the candidate above
    ``t + band`` over the connected set containing it above ``t - band``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(labels.max()) + 1
    saliency = border_saliency(labels, lab, edges)
    area = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    pairs, lengths, sums = adjacency(labels, edges)
    flat = labels.ravel()
    colour_sum = np.stack([np.bincount(flat, weights=lab[..., c].ravel(), minlength=n) for c in range(3)], 1)
    leaf_points = representative_points(labels)
    band = SALIENCY_BAND * stability_offset

    def components(t: float) -> np.ndarray:
        on = saliency >= t
        keep = on[pairs[:, 0]] & on[pairs[:, 1]]
        graph = coo_matrix((np.ones(int(keep.sum())), (pairs[keep, 0], pairs[keep, 1])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        return np.where(on, comp, -1)

    seen: set[bytes] = set()
    leaf_sets, ious, stabs, points = [], [], [], []
    total = float(labels.size)
    for t in SALIENCY_LEVELS:
        comp = components(t)
        lower = components(t - band)
        for c in np.unique(comp[comp >= 0]):
            member = comp == c
            frac = area[member].sum() / total
            key = np.packbits(member).tobytes()
            if not MIN_AREA_FRACTION <= frac <= MAX_AREA_FRACTION or key in seen:
                continue
            seen.add(key)
            above = member & (saliency >= t + band)
            container = lower == lower[np.flatnonzero(member)[0]]
            stabs.append(area[above].sum() / area[container].sum())
            ious.append(_set_features(member, pairs, lengths, sums, area, colour_sum))
            leaf_sets.append(np.flatnonzero(member))
            points.append(leaf_points[leaf_sets[-1][np.argmax(saliency[leaf_sets[-1]])]])
    return _Candidates(
        labels,
        leaf_sets,
        np.asarray(ious, np.float64).reshape(-1, 3),
        np.asarray(stabs, np.float32),
        np.asarray(points, np.float32).reshape(-1, 2),
    )


def _set_features(member, pairs, lengths, sums, area, colour_sum) -> tuple[float, float, float]:
    """:func:`objectness` features of an arbitrary set of superpixels."""
    a, b = member[pairs[:, 0]], member[pairs[:, 1]]
    outer, inner = a != b, a & b
    out_len = lengths[outer].sum()
    boundary = sums[outer].sum() / out_len if out_len else 0.0
    inside = sums[inner].sum() / lengths[inner].sum() if inner.any() else 0.0
    outside_leaf = np.where(a[outer], pairs[outer, 1], pairs[outer, 0])
    mean_in = colour_sum[member].sum(0) / area[member].sum()
    ring = (colour_sum[outside_leaf] / area[outside_leaf, None] * lengths[outer, None]).sum(0) / max(out_len, 1)
    return float(boundary), float(inside), float(np.linalg.norm(mean_in - ring))


def _boxes_of_sets(labels: np.ndarray, leaf_sets: list[np.ndarray]) -> np.ndarray:
    """``(N, 4)`` XYXY (exclusive ends) box of each set of superpixels, at the labels' size."""
    slices = ndimage.find_objects(labels + 1)
    leaf_boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], np.float64)
    out = np.zeros((len(leaf_sets), 4), np.float64)
    for n_, leaves in enumerate(leaf_sets):
        b = leaf_boxes[leaves]
        out[n_] = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    return out


def graph_cut_refine(bgr: np.ndarray, box: np.ndarray, margin: float = REFINE_MARGIN) -> tuple[np.ndarray, float]:
    """Snap a candidate to object boundaries: GrabCut from the candidate's XYXY box grown by ``margin``.

    Returns ``(mask (h, w) bool, stability)``; stability is the IoU of the cut before and after the
    last iteration (a settled cut scores 1). An empty mask and 0 when the cut cannot run (the box
    covers the whole image, leaving no background sample).
    """
    h, w = bgr.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0) + 2, margin * (y1 - y0) + 2
    rx0, ry0 = int(max(0, x0 - mx)), int(max(0, y0 - my))
    rx1, ry1 = int(min(w, x1 + mx)), int(min(h, y1 + my))
    empty = np.zeros((h, w), bool)
    if (rx1 - rx0) * (ry1 - ry0) >= 0.97 * h * w or rx1 - rx0 < 4 or ry1 - ry0 < 4:
        return empty, 0.0
    state = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means on OpenCV's global RNG: reproducible cuts
    try:
        cv2.grabCut(
            bgr, state, (rx0, ry0, rx1 - rx0, ry1 - ry0), bgd, fgd, REFINE_ITERATIONS - 1, cv2.GC_INIT_WITH_RECT
        )
        before = (state == cv2.GC_FGD) | (state == cv2.GC_PR_FGD)
        cv2.grabCut(bgr, state, None, bgd, fgd, 1, cv2.GC_EVAL)
    except cv2.error:  # too few pixels on one side to fit the colour models
        return empty, 0.0
    after = (state == cv2.GC_FGD) | (state == cv2.GC_PR_FGD)
    union = np.count_nonzero(before | after)
    return after, (np.count_nonzero(before & after) / union if union else 0.0)


def graph_cut_from_mask(
    bgr: np.ndarray, seed: np.ndarray, box: np.ndarray, margin: float = REFINE_MARGIN
) -> tuple[np.ndarray, float]:
    """Snap a candidate to object boundaries: GrabCut initialised from its own pixels.

    The seed's pixels start as probable foreground, the rest of its XYXY box grown by ``margin`` as
    probable background and everything outside that box as sure background. Returns ``(mask (h, w)
    bool, stability)`` as :func:`graph_cut_refine` does.
    """
    h, w = bgr.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0) + 2, margin * (y1 - y0) + 2
    rx0, ry0 = int(max(0, x0 - mx)), int(max(0, y0 - my))
    rx1, ry1 = int(min(w, x1 + mx)), int(min(h, y1 + my))
    state = np.full((h, w), cv2.GC_BGD, np.uint8)
    state[ry0:ry1, rx0:rx1] = cv2.GC_PR_BGD
    state[seed] = cv2.GC_PR_FGD
    empty = np.zeros((h, w), bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(bgr, state, None, bgd, fgd, REFINE_ITERATIONS - 1, cv2.GC_INIT_WITH_MASK)
        before = (state == cv2.GC_FGD) | (state == cv2.GC_PR_FGD)
        cv2.grabCut(bgr, state, None, bgd, fgd, 1, cv2.GC_EVAL)
    except cv2.error:  # too few pixels on one side to fit the colour models
        return empty, 0.0
    after = (state == cv2.GC_FGD) | (state == cv2.GC_PR_FGD)
    union = np.count_nonzero(before | after)
    return after, (np.count_nonzero(before & after) / union if union else 0.0)


def _parallel_cuts(
    bgr: np.ndarray, boxes: list[np.ndarray], seed_masks: list[np.ndarray]
) -> list[tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]]:
    """Both cuts of every seed (box-initialised, mask-initialised), in seed order.

    The cuts are independent and GrabCut releases the GIL, so they run on as many threads as OpenCV is
    allowed (``cv2.getNumThreads()``, all cores by default; ``cv2.setNumThreads(1)`` keeps one). Each
    cut seeds OpenCV's RNG on its own thread, so the result does not depend on the thread count.
    """

    def both(k: int) -> tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]:
        return graph_cut_refine(bgr, boxes[k]), graph_cut_from_mask(bgr, seed_masks[k], boxes[k])

    workers = max(1, min(len(boxes), cv2.getNumThreads(), os.cpu_count() or 1))
    if workers == 1:
        return [both(k) for k in range(len(boxes))]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(both, range(len(boxes))))


def _pixel_features(mask: np.ndarray, lab: np.ndarray, edges: np.ndarray) -> tuple[float, float, float]:
    """:func:`objectness` features of a pixel mask: edge strength on its outline, inner edges, Lab
    contrast to a ring around it."""
    m8 = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    outline = mask & ~cv2.erode(m8, kernel).astype(bool)
    ring = cv2.dilate(m8, kernel, iterations=3).astype(bool) & ~mask
    if not outline.any() or not ring.any():
        return 0.0, 0.0, 0.0
    inside = mask & ~outline
    colour = float(np.linalg.norm(lab[mask].mean(0) - lab[ring].mean(0)))
    return float(edges[outline].mean()), float(edges[inside].mean()) if inside.any() else 0.0, colour


def propose_regions(image: np.ndarray, stability_offset: float = 1.0, work_side: int = WORK_SIDE) -> Proposals:
    """Candidate regions of an HxWx3 uint8 RGB image (a crop) as :class:`Proposals` at its size.

    Several hierarchies (see ``HIERARCHIES``) are built and their nodes pooled: no single merge order
    finds every object, and NMS in the generator removes the duplicates they share.

    Args:
        image: the crop, HxWx3 uint8 RGB.
        stability_offset: scales the band of merge levels of the stability proxy (SAM's logit offset).
        work_side: longest side of the working resolution in pixels.
    """
    h, w = image.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    sw, sh = max(2, round(w * scale)), max(2, round(h * scale))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else image
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    edges = edge_strength(lab)
    labels_by_count: dict[int, np.ndarray] = {}
    pools: list[_Candidates] = []
    for n_segments, colour_scale, small_fraction, saliency_weight in HIERARCHIES:
        if n_segments not in labels_by_count:
            labels_by_count[n_segments] = superpixels(small, n_segments)
        labels = labels_by_count[n_segments]
        features = lab
        if saliency_weight:  # border saliency as a 4th colour channel: parts of one object merge first
            saliency = border_saliency(labels, lab, edges)[labels]
            features = np.concatenate([lab, (saliency * saliency_weight)[..., None].astype(np.float32)], axis=2)
        tree = build_region_tree(features, labels, edges, colour_scale, small_fraction)
        pools.append(_tree_candidates(tree, stability_offset))
    if SALIENCY_SUPERPIXELS:
        if SALIENCY_SUPERPIXELS not in labels_by_count:
            labels_by_count[SALIENCY_SUPERPIXELS] = superpixels(small, SALIENCY_SUPERPIXELS)
        pools.append(_saliency_candidates(labels_by_count[SALIENCY_SUPERPIXELS], lab, edges, stability_offset))
    owner = np.concatenate([np.full(len(p.leaf_sets), i) for i, p in enumerate(pools)])
    local = np.concatenate([np.arange(len(p.leaf_sets)) for p in pools])
    features = np.concatenate([p.features for p in pools])
    stab = np.concatenate([p.stability for p in pools]).astype(np.float32)
    points = (np.concatenate([p.points for p in pools]) + 0.5) * np.array([w / sw, h / sh], np.float32)
    points = np.minimum(points, np.array([w - 1, h - 1], np.float32))
    shape_features = np.concatenate([_set_shape_features(p.labels, p.leaf_sets) for p in pools])
    is_cut = np.zeros(len(owner), bool)

    # Graph-cut refinement of the best distinct candidates: a region hierarchy rarely has a node that
    # follows the whole object's outline, but its box and its pixels are good GrabCut prompts. Each seed
    # is cut twice (from its box, and from its own pixels): either can fail where the other holds.
    refined: list[np.ndarray] = []
    if REFINE_SEEDS:
        boxes = np.concatenate([_boxes_of_sets(p.labels, p.leaf_sets) for p in pools])
        frac = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(sw * sh)
        lo, hi = REFINE_AREA_FRACTION
        eligible = np.flatnonzero((frac >= lo) & (frac <= hi))
        rank = (objectness(features) * stab)[eligible]
        seeds = eligible[box_nms(boxes[eligible], rank, REFINE_BOX_NMS)[:REFINE_SEEDS]]
        bgr = np.ascontiguousarray(small[..., ::-1])
        extra_features, extra_stab, extra_points = [], [], []
        min_part = max(1, round(CUT_MIN_PART_FRACTION * sw * sh))
        seed_masks = [np.isin(pools[owner[i]].labels, pools[owner[i]].leaf_sets[local[i]]) for i in seeds]
        cuts = _parallel_cuts(bgr, [boxes[i] for i in seeds], seed_masks)
        for pair in cuts:
            for cut, cut_stab in pair:
                cut = _clean(cut, min_part)
                if cut.sum() < MIN_AREA_FRACTION * cut.size:
                    continue
                refined.append(cut)
                extra_features.append(_pixel_features(cut, lab, edges))
                extra_stab.append(cut_stab)
                inner = ndimage.distance_transform_edt(cut)
                y, x = np.unravel_index(np.argmax(inner), inner.shape)
                extra_points.append(((x + 0.5) * w / sw, (y + 0.5) * h / sh))
        if refined:
            # A cut supersedes the region candidates with nearly its pixels: it is the same object snapped
            # to its edges, so NMS must not keep a ragged copy next to it. (Comparing boxes instead also
            # threw away good regions whenever a cut with a similar box bled into the background.)
            kept = np.flatnonzero(
                np.concatenate([_set_mask_iou(p.labels, p.leaf_sets, refined) for p in pools]) <= REFINE_SUPERSEDE
            )
            owner, local = owner[kept], local[kept]
            cut_shape = np.stack([_mask_shape_features(c) for c in refined])
            features = np.concatenate([features[kept], np.asarray(extra_features, np.float64)])
            stab = np.concatenate([stab[kept], np.asarray(extra_stab, np.float32)])
            points = np.concatenate([points[kept], np.asarray(extra_points, np.float32)])
            shape_features = np.concatenate([shape_features[kept], cut_shape])
            is_cut = np.concatenate([np.zeros(len(kept), bool), np.ones(len(refined), bool)])
    n_regions = len(owner)
    rank_features = np.column_stack(
        [features[:, 0], features[:, 1], features[:, 2] / COLOUR_SCALE, stab, is_cut, shape_features]
    )
    iou = rank_to_predicted_iou(rank_features @ np.asarray(RANK_WEIGHTS))
    full_speck = max(1, round(OUTPUT_SPECK_FRACTION * h * w))

    def masks(indices: np.ndarray) -> np.ndarray:
        out = np.zeros((len(indices), h, w), bool)
        for n_, i in enumerate(indices):
            if i >= n_regions:
                soft = refined[i - n_regions].astype(np.float32)
            else:
                pool = pools[owner[i]]
                member = np.zeros(int(pool.labels.max()) + 1, np.float32)
                member[pool.leaf_sets[local[i]]] = 1.0
                soft = member[pool.labels]
            if scale < 1:  # upsample the soft membership, then cut: smoother than nearest-neighbour
                soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
                # the cut can pinch off single pixels where the region touches itself diagonally
                out[n_] = _clean(soft > 0.5, full_speck)
            else:
                out[n_] = soft > 0.5
        return out

    return Proposals(iou, stab, points.astype(np.float32), masks, features=rank_features, nms_mask_iou=NMS_MASK_IOU)


def rank_to_predicted_iou(score: np.ndarray) -> np.ndarray:
    """Map ranking scores to the predicted-IoU scale: ``RANK_THRESHOLD`` lands on SAM's default
    ``pred_iou_thresh`` (0.88), so the generator's default filter keeps the candidates scored above it."""
    z = np.asarray(score, np.float64) - RANK_THRESHOLD + np.log(0.88 / 0.12)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def _border_contact(mask: np.ndarray) -> float:
    """Mean fraction of each of the four image edges covered by ``mask`` (0: floats inside, 1: everything)."""
    return float((mask[0].mean() + mask[-1].mean() + mask[:, 0].mean() + mask[:, -1].mean()) / 4)


def _mask_shape_features(mask: np.ndarray) -> np.ndarray:
    """``[log area fraction, border contact]`` of a ``(h, w)`` bool mask (see ``RANK_WEIGHTS``)."""
    return np.array([np.log(mask.mean() + 1e-4), _border_contact(mask)])


def _set_shape_features(labels: np.ndarray, leaf_sets: list[np.ndarray]) -> np.ndarray:
    """``(N, 2)`` :func:`_mask_shape_features` of sets of superpixels, from per-superpixel sums."""
    n = int(labels.max()) + 1
    area = np.bincount(labels.ravel(), minlength=n) / labels.size
    sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    edge = sum(np.bincount(side, minlength=n) / len(side) for side in sides)
    out = np.zeros((len(leaf_sets), 2))
    for k, leaves in enumerate(leaf_sets):
        out[k] = (np.log(area[leaves].sum() + 1e-4), edge[leaves].sum() / 4)
    return out


def _set_mask_iou(labels: np.ndarray, leaf_sets: list[np.ndarray], cuts: list[np.ndarray]) -> np.ndarray:
    """``(N,)`` highest mask IoU of each set of superpixels with any of ``cuts`` (bool masks at the labels' size)."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    overlap = np.stack([np.bincount(flat, weights=c.ravel().astype(np.float64), minlength=n) for c in cuts], 1)
    cut_area = np.array([c.sum() for c in cuts], np.float64)
    out = np.zeros(len(leaf_sets))
    for k, leaves in enumerate(leaf_sets):
        inter = overlap[leaves].sum(0)
        out[k] = (inter / (area[leaves].sum() + cut_area - inter)).max()
    return out


def _clean(mask: np.ndarray, min_part: int) -> np.ndarray:
    """Drop islands and fill holes under ``min_part`` pixels: graph cuts leave specks in busy textures."""
    from maskwright.masks.cleanup import remove_small_regions

    mask, _ = remove_small_regions(mask, min_part, "islands")
    mask, _ = remove_small_regions(mask, min_part, "holes")
    return mask
