"""The click path on ONNX Runtime: export a SAM prompt-encoder + mask-decoder once, run it with its own threads.

Why: in ``transformers`` the decoder costs ~80 ms per click on 2 CPU cores and shares torch's thread pool
with image encoding, which starves it (~800 ms while an encode runs). Exported to ONNX and run in an
ONNX Runtime session with ``intra_op_num_threads=1`` it costs ~65 ms (ViT-B / Hiera-T decoder, quiet
2-core machine) and is barely slowed by an encode; the :class:`~maskwright.engines.sam.FastPromptDecoder`
graph ~40 ms.

The exported graph is :class:`maskwright.engines.sam.PromptDecoder` (one per multimask setting) with inputs

* ``image_embeddings`` (1, C, 64, 64) float32 (+ ``high_res_feats_0`` / ``high_res_feats_1`` for SAM 2),
* ``point_coords`` (B, T, 2) float32 XY in the model's 1024 input frame, ``point_labels`` (B, T) float32
  (1 positive, 0 negative, 2/3 box corners, -1 padding),
* ``mask_input`` (B, 1, 256, 256) float32 and ``has_mask_input`` (B, 1) float32,

and outputs ``low_res_masks`` (B, K, 256, 256) and ``iou_scores`` (B, K); B and T are dynamic.

SAM and SAM 2 click with :class:`maskwright.engines.sam.FastPromptDecoder` graphs instead (same outputs,
about half the work; inputs :func:`fast_decoder_input_names`): ``image_tokens`` (B, 4096, C) (image +
dense prompt embedding, position-major), the points as above, and for SAM 2 the high-resolution features
re-ordered once per image (``high_res_1`` (1, 4096, 4, C/4), ``high_res_0`` (1, 4096, 16, C/8)).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OUTPUT_NAMES = ["low_res_masks", "iou_scores"]


def decoder_input_names(n_high_res: int) -> list[str]:
    names = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    return names + [f"high_res_feats_{i}" for i in range(n_high_res)]


def fast_decoder_input_names(n_high_res: int) -> list[str]:
    """Inputs of a :class:`~maskwright.engines.sam.FastPromptDecoder` graph (in its ``forward`` order)."""
    return ["image_tokens", "point_coords", "point_labels"] + ["high_res_1", "high_res_0"][:n_high_res]


# Dynamic dimensions of every input that has any (B = prompts in the batch, T = sparse tokens per prompt).
DYNAMIC_AXES = {
    "image_tokens": {0: "batch"},
    "point_coords": {0: "batch", 1: "tokens"},
    "point_labels": {0: "batch", 1: "tokens"},
    "mask_input": {0: "batch"},
    "has_mask_input": {0: "batch"},
}


def onnx_path(directory: Path, multimask_output: bool) -> Path:
    return Path(directory) / ("decoder_multimask.onnx" if multimask_output else "decoder_single.onnx")


def graph_input_names(path: Path) -> list[str]:
    """Input names of an ONNX file (to tell a cached graph of another decoder layout); [] if unreadable."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # a truncated or foreign file: export again
        return []
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


EXPORTERS = ("torchscript", "dynamo")


def export_decoder(
    module,
    example_inputs: tuple,
    path: Path,
    n_high_res: int,
    exporters: tuple[str, ...] | None = None,
    input_names: list[str] | None = None,
) -> Path:
    """Export a :class:`PromptDecoder` to ``path`` (atomically: other processes never see half a file).

    ``exporters`` are tried in order (default ``MASKWRIGHT_ONNX_EXPORTER`` first if set, then TorchScript,
    then ``dynamo=True``): on a shared 2-core CPU the TorchScript exporter takes ~3 s per graph, the dynamo
    one ~15 s; both give the same graph maths (tests check ONNX == torch on varying batch and token counts).
    Raises ``RuntimeError`` when none works. ``input_names`` default to :func:`decoder_input_names`.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(input_names or decoder_input_names(n_high_res))
    dynamic_axes = {n: DYNAMIC_AXES[n] for n in names if n in DYNAMIC_AXES}
    dynamic_axes.update(low_res_masks={0: "batch"}, iou_scores={0: "batch"})
    errors = []
    start = time.perf_counter()
    if exporters is None:
        preferred = os.environ.get("MASKWRIGHT_ONNX_EXPORTER", "").strip()
        exporters = tuple(dict.fromkeys([e for e in (preferred, *EXPORTERS) if e]))
    for exporter in exporters:
        if exporter not in EXPORTERS:
            raise ValueError(f"ONNX exporter must be one of {EXPORTERS}, got {exporter!r}")
        dynamo = exporter == "dynamo"
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
        os.close(fd)
        try:
            kwargs = dict(input_names=names, output_names=OUTPUT_NAMES, opset_version=18)
            if dynamo:
                dims = {
                    "batch": torch.export.Dim("batch", min=1, max=4096),
                    "tokens": torch.export.Dim("tokens", min=1, max=64),
                }
                shapes = {
                    n: {i: dims[d] for i, d in dynamic_axes[n].items()} if n in dynamic_axes else None for n in names
                }
                program = torch.onnx.export(
                    module,
                    example_inputs,
                    dynamo=True,
                    dynamic_shapes=shapes,
                    external_data=False,
                    verbose=False,
                    **kwargs,
                )
                program.save(tmp)
            else:
                torch.onnx.export(module, example_inputs, tmp, dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
            _check_runs(tmp, example_inputs, names)
            os.replace(tmp, path)
            log.info("exported ONNX decoder to %s in %.1f s (dynamo=%s)", path, time.perf_counter() - start, dynamo)
            return path
        except Exception as exc:  # exporters fail in many ways; try the next one
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc)[:300]}")
            log.debug("ONNX export (dynamo=%s) failed: %s", dynamo, exc)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("could not export the decoder to ONNX: " + " | ".join(errors))


def _check_runs(path: str, example_inputs: tuple, names: list[str]) -> None:
    session = make_session(path, threads=1)
    feeds = {n: np.ascontiguousarray(t.detach().numpy()) for n, t in zip(names, example_inputs)}
    session.run(None, feeds)


def make_session(path: str | Path, threads: int = 1, spinning: bool = False):
    """An ONNX Runtime CPU session with its own small thread pool (not shared with torch). Its worker
    threads spin between runs only with ``spinning`` (fast on an idle CPU, wasteful on a busy one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxDecoder:
    """Runs an exported decoder: ``run(feeds) -> (low_res_masks (B,K,256,256), iou_scores (B,K))``."""

    def __init__(self, path: str | Path, threads: int = 1, spinning: bool = False) -> None:
        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.session = make_session(self.path, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        masks, scores = self.session.run(OUTPUT_NAMES, {k: feeds[k] for k in self.input_names})
        return masks, scores
