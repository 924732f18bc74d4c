"""The tiny SAM trainer's step: a baseline commit's ``tools/train_tiny_sam.py`` vs the working tree's, side by side.

Both trainers build the default recipe's model (same seed) and take the same batches (made beforehand, so
batch synthesis is not timed); their steps alternate in this process, each batch ``--rounds`` times, and
each trainer's time is the sum over batches of its fastest take (robust to a busy or drifting VM). A step
is ``train_step`` + backward + gradient clipping + optimizer step, as ``main`` runs it: the baseline with its
own optimizer settings (AdamW, per-tensor), the working tree with fused AdamW and ``encoder_threads=2``
(the image encoder on two torch threads; here the second core is idle, while in a real run the batch
worker shares it). The trainer modules import the working tree's ``synthetic_shapes``,
``tiny_sam_wiring`` and ``maskwright``: compare commits where those compute the same. Usage::

    .venv/bin/python benchmarks/bench_train_step.py --baseline b63f4b5      # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))


def load_trainer(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_step(trainer, model_from_args, fast: bool):
    """One optimizer step of the default recipe's model, as ``trainer.main`` takes it."""
    import torch
    from tiny_sam_wiring import MATCH_CODE, fix_wiring, wire_prompt_path

    args = trainer.build_parser().parse_args([])
    model = model_from_args(args)  # the same initial model for both trainers
    wire_prompt_path(model)
    fix_wiring(model)
    model.train()
    for name in ("fast_mask_decoder", "fast_upscaling", "contiguous_upscaling"):  # the trainer's training-only speed-up
        if hasattr(trainer, name):
            getattr(trainer, name)(model)
            break
    subcell_head = torch.nn.Linear(args.width, 16)
    probe = trainer.TokenAttentionProbe(model)
    params = [p for p in [*model.parameters(), *subcell_head.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, **({"fused": True} if fast else {}))
    rng = np.random.default_rng(0)
    kwargs = dict(
        rounds=args.rounds,
        aux=args.aux,
        subcell_head=subcell_head,
        modes=tuple(args.modes.split(",")),
        probe=probe,
        loc_weight=args.loc_weight,
        candidate_weight=args.candidate_weight,
        aux_channels=MATCH_CODE,
        aux_centred=True,
        aux_across=args.aux_across,
    )
    if "encoder_threads" in inspect.signature(trainer.train_step).parameters:
        kwargs["encoder_threads"] = args.encoder_threads

    def step(batch) -> None:
        loss, _ = trainer.train_step(model, batch, rng, **kwargs)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.set_num_threads(1)
        torch.nn.utils.clip_grad_norm_(params, 1.0, **({"foreach": True} if fast else {}))
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b63f4b5", help="git commit of the baseline trainer")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4, help="takes of each batch by each trainer")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "train_tiny_sam_baseline.py"
        source = subprocess.run(
            ["git", "show", f"{args.baseline}:tools/train_tiny_sam.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        old.write_text(source)
        trainers = {
            f"baseline {args.baseline}": load_trainer("train_tiny_sam_baseline", old),
            "working tree": load_trainer("train_tiny_sam_now", REPO / "tools" / "train_tiny_sam.py"),
        }
    current = trainers["working tree"]
    data_rng = np.random.default_rng(1)
    recipe = current.build_parser().parse_args([])
    batches = [current.step_batch(recipe, i, data_rng) for i in range(args.batches)]
    steps = {
        name: make_step(t, current.new_model_from_args, fast=(name == "working tree")) for name, t in trainers.items()
    }
    for step in steps.values():  # warm-up: first calls allocate and pick kernels
        step(batches[0])
    times = {name: np.full((args.rounds, len(batches)), np.inf) for name in steps}
    order = list(steps)
    for r in range(args.rounds):
        for i, batch in enumerate(batches):
            for name in order if (r + i) % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                steps[name](batch)
                times[name][r, i] = time.perf_counter() - start
    print(f"{len(batches)} batches x {args.rounds} takes each, interleaved; 1 torch thread unless stated")
    for name, t in times.items():
        fastest, median = t.min(0).mean() * 1000, np.median(t) * 1000
        print(f"{name:>22}: {fastest:6.0f} ms/step (mean of per-batch minima), median {median:.0f} ms")
    base, now = (times[name].min(0).sum() for name in order)
    print(f"working tree / baseline: {now / base:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
