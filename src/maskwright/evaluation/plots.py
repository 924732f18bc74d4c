"""IoU-vs-clicks plot (matplotlib, Agg backend so it runs headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_iou_vs_clicks(curves: dict[str, np.ndarray], path: str | Path, title: str = "") -> None:
    """Write a PNG with one mean-IoU curve per engine.

    Args:
        curves: engine name -> (K,) mean IoU after 1..K clicks.
        path: output ``.png`` file.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot import
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise ValueError("curves must hold at least one engine's IoU curve")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, curve in curves.items():
        curve = np.asarray(curve, dtype=np.float64)
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    for level in (0.85, 0.90):  # the NoC thresholds
        ax.axhline(level, color="grey", linewidth=0.6, linestyle="--")
        ax.text(1.1, level + 0.005, f"IoU {level:.2f}", color="grey", fontsize=7, va="bottom")
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mean IoU")
    ax.set_ylim(0, 1)
    ax.set_xlim(1, max(len(c) for c in curves.values()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
