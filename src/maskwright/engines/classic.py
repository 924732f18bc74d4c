"""``classic``: a weight-free engine (OpenCV / scikit-image), usable offline on any machine.

Baseline: geodesic distance on an edge-weighted colour image at reduced scale; a pixel is object
when it is geodesically closer to a positive seed than to a negative seed.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.graph import MCP_Geometric

from maskwright.engines.base import Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.registry import EngineSpec, register
from maskwright.engines.transforms import logits_to_lowres, lowres_to_logits

WORK_SIDE = 384  # longest side of the working resolution


class ClassicEngine(Engine):
    name = "classic"
    version = "0.1"

    def embed(self, image: np.ndarray) -> Embedding:
        h, w = image.shape[:2]
        s = min(1.0, WORK_SIDE / max(h, w))
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        blur = cv2.GaussianBlur(lab, (0, 0), 1.0)
        gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.sqrt((gx**2 + gy**2).sum(axis=2))
        grad /= np.percentile(grad, 99) + 1e-6
        return Embedding(self.name, self.version, (h, w), {"lab": lab, "grad": np.clip(grad, 0, 1)}, {"scale": s})

    def decode(self, embedding: Embedding, prompt: Prompt, multimask_output: bool) -> MaskPrediction:
        grad = embedding.arrays["grad"]
        sh, sw = grad.shape
        s = embedding.meta["scale"]
        pos, neg = [], []
        if prompt.point_coords is not None:
            for (x, y), lab in zip(prompt.point_coords, prompt.point_labels):
                p = (min(sh - 1, int(y * s)), min(sw - 1, int(x * s)))
                (pos if lab == 1 else neg).append(p)
        prior = None
        if prompt.box is not None:
            x0, y0, x1, y1 = (prompt.box * s).tolist()
            x0, y0 = max(0, int(x0)), max(0, int(y0))
            x1, y1 = min(sw - 1, int(np.ceil(x1))), min(sh - 1, int(np.ceil(y1)))
            ring = np.zeros((sh, sw), bool)
            ring[y0 : y1 + 1, x0 : x1 + 1] = True
            ring[y0 + 1 : y1, x0 + 1 : x1] = False
            neg += list(zip(*np.nonzero(ring)))
            if not pos:
                pos.append(((y0 + y1) // 2, (x0 + x1) // 2))
        if prompt.mask_input is not None:
            prior = lowres_to_logits(prompt.mask_input, (sh, sw))[0] > 0
        if not pos and prior is not None and prior.any():
            ys, xs = np.nonzero(prior)
            pos.append((int(ys[len(ys) // 2]), int(xs[len(xs) // 2])))
        if not neg:
            border = np.zeros((sh, sw), bool)
            border[[0, -1], :] = True
            border[:, [0, -1]] = True
            neg += list(zip(*np.nonzero(border)))
        weights = (4.0, 16.0, 64.0) if multimask_output else (16.0,)
        masks, scores = [], []
        for wgt in weights:
            cost = 1e-2 + wgt * grad**2
            dpos, _ = MCP_Geometric(cost).find_costs(pos)
            dneg, _ = MCP_Geometric(cost).find_costs(neg)
            margin = (dneg - dpos) / (dneg + dpos + 1e-6)
            logit = np.clip(margin * 20.0, -20, 20).astype(np.float32)
            masks.append(logit)
            fg = logit > 0
            # Score: how decisive the boundary is (mean |margin| near it), a weak IoU proxy.
            scores.append(float(np.clip(0.5 + np.abs(margin[fg]).mean() if fg.any() else 0.0, 0, 1)))
        small_logits = np.stack(masks)
        h, w = embedding.original_size
        full = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 0 for m in small_logits])
        return MaskPrediction(full, np.asarray(scores, np.float32), logits_to_lowres(small_logits))


register(
    EngineSpec(
        name="classic",
        family="classic",
        description="weight-free geodesic/graph engine (OpenCV, scikit-image); runs anywhere",
        factory=ClassicEngine,
        priority=0,
    )
)
