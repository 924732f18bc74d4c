"""SAM engines on CPU: the plain ``transformers`` recipe vs maskwright, side by side.

Per model config (real-size ``sam-vit-base`` and ``sam2.1-hiera-tiny`` architectures with random weights,
re-initialised to a realistic scale -- the hub is unreachable here; speed does not depend on the values):

* ``set_image`` seconds: plain recipe = processor + ``get_image_embeddings`` in fp32 (as the docs show);
  maskwright = numpy preprocessing + encoder with bf16 weights where the CPU has AMX / AVX512-BF16 (SAM 2:
  maskwright's lean Hiera forward with fused oneDNN linears);
* ``predict`` milliseconds for 1 click, 3 clicks and a box: plain = processor + ``model(...)`` +
  ``post_process_masks`` (SAM 2: its processor needs torchvision, so plain = ``model(...)`` +
  ``F.interpolate``); maskwright = ``Predictor.predict`` (``FastPromptDecoder`` on ONNX Runtime, 1 thread);
* ``predict`` while another process encodes images in a loop (the situation of a server);
* mask agreement of maskwright's bf16 embedding vs the fp32 one (IoU of each returned mask);
* components, old vs new path side by side in this process (interleaved, medians): the click decoder graph
  (``PromptDecoder`` exported as is, maskwright <= 8049d0b, vs ``FastPromptDecoder``) and, for SAM 2, the
  bf16 encoder (``transformers``' ``Sam2VisionModel`` forward vs maskwright's lean Hiera forward).

Goals: predict median <= 50 ms and p95 <= 100 ms with a concurrent encode; set_image >= 2x faster than
the plain recipe with IoU >= 0.98. Usage::

    .venv/bin/python benchmarks/bench_sam.py                       # both models, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_sam.py --models sam2.1-hiera-tiny --repeats 3 --clicks 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRABCUT = Path(os.environ.get("MASKWRIGHT_GRABCUT", REPO.parent / "shared" / "datasets" / "grabcut"))


def build_model(kind: str, path: Path) -> Path:
    """Save a real-size model with random weights (N(0, 1/fan_in)) in HF format to ``path``."""
    import torch

    if kind == "sam-vit-base":
        from transformers import SamConfig, SamModel

        model = SamModel(SamConfig())
    elif kind == "sam2.1-hiera-tiny":
        from transformers import Sam2Config, Sam2Model

        model = Sam2Model(Sam2Config())
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.zero_()
    model.save_pretrained(path)
    return path


def load_image() -> np.ndarray:
    from maskwright.imageio import read_image

    images = sorted((GRABCUT / "images").glob("*")) if (GRABCUT / "images").is_dir() else []
    if images:
        return read_image(images[0])
    from PIL import Image

    rng = np.random.default_rng(0)
    return np.asarray(Image.fromarray(rng.integers(0, 256, (50, 75, 3), np.uint8)).resize((1500, 1000)))


def prompts_for(h: int, w: int) -> dict[str, dict]:
    return {
        "1 click": dict(point_coords=[[w * 0.5, h * 0.5]], point_labels=[1]),
        "3 clicks": dict(
            point_coords=[[w * 0.5, h * 0.5], [w * 0.3, h * 0.4], [w * 0.8, h * 0.2]], point_labels=[1, 1, 0]
        ),
        "box": dict(box=[w * 0.2, h * 0.2, w * 0.8, h * 0.85]),
    }


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def stats_ms(times: list[float]) -> dict:
    a = np.asarray(times) * 1000
    return {"median_ms": round(float(np.median(a)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1), "n": len(a)}


class PlainRecipe:
    """The ``transformers`` documentation recipe (processor + model + post_process_masks), fp32."""

    def __init__(self, kind: str, model_dir: Path) -> None:
        import torch

        self.torch = torch
        self.kind = kind
        if kind == "sam-vit-base":
            from transformers import SamModel, SamProcessor
            from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

            self.model = SamModel.from_pretrained(model_dir).eval()
            self.processor = SamProcessor(image_processor=SamImageProcessorPil())
        else:
            from transformers import Sam2Model

            self.model = Sam2Model.from_pretrained(model_dir).eval()
            self.processor = None

    def set_image(self, image: np.ndarray) -> None:
        torch = self.torch
        self.image = image
        with torch.no_grad():
            if self.processor is not None:
                pixel = self.processor(images=image, return_tensors="pt")["pixel_values"]
            else:  # Sam2Processor needs torchvision (not installed): same maths with PIL + numpy
                from maskwright.engines.sam_common import preprocess_sam2

                pixel = torch.from_numpy(preprocess_sam2(image))
            self.embeddings = self.model.get_image_embeddings(pixel)

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        torch = self.torch
        h, w = self.image.shape[:2]
        with torch.no_grad():
            if self.processor is not None:
                kwargs = {}
                if point_coords is not None:
                    kwargs.update(input_points=[[point_coords]], input_labels=[[point_labels]])
                if box is not None:
                    kwargs.update(input_boxes=[[box]])
                inputs = self.processor(images=self.image, return_tensors="pt", **kwargs)
                inputs.pop("pixel_values")
                out = self.model(
                    image_embeddings=self.embeddings,
                    multimask_output=multimask_output,
                    **{k: v for k, v in inputs.items() if k.startswith("input_")},
                )
                masks = self.processor.post_process_masks(
                    out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
                )[0][0]
            else:
                scale = torch.tensor([1024 / w, 1024 / h])
                kwargs = {}
                if point_coords is not None:
                    kwargs.update(
                        input_points=torch.tensor(point_coords)[None, None] * scale,
                        input_labels=torch.tensor(point_labels)[None, None],
                    )
                if box is not None:
                    kwargs.update(input_boxes=(torch.tensor(box).reshape(2, 2) * scale).reshape(1, 1, 4))
                out = self.model(image_embeddings=self.embeddings, multimask_output=multimask_output, **kwargs)
                masks = torch.nn.functional.interpolate(out.pred_masks[0], (h, w), mode="bilinear")[0] > 0
        return masks.numpy(), out.iou_scores[0, 0].numpy()


ENCODER_LOOP = """
import os, sys, torch
from transformers import AutoModel
os.nice(int(sys.argv[2]))
torch.set_num_threads(int(sys.argv[3]))
model = AutoModel.from_pretrained(sys.argv[1]).eval()
x = torch.randn(1, 3, 1024, 1024)
print("ready", flush=True)
with torch.no_grad():
    while True:
        model.get_image_embeddings(x)
"""


def interleaved(fns: dict, n: int) -> dict:
    """Median seconds of each function, runs interleaved (old, new, old, new, ...) after one warm-up."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_components(engine, embedding, image: np.ndarray, workdir: Path, clicks: int, repeats: int) -> dict:
    """Old vs new click decoder graph (1 click, ONNX Runtime, 1 thread) and old vs new encoder forward (SAM's ViT
    in the engine's dtype; SAM 2's Hiera in bf16)."""
    import torch

    from maskwright.engines.onnx_decoder import OnnxDecoder, decoder_input_names, export_decoder
    from maskwright.engines.sam import PromptDecoder
    from maskwright.predictor import validate_prompt

    out: dict = {}
    h, w = image.shape[:2]
    prompt = validate_prompt((h, w), [[w * 0.5, h * 0.5]], [1])
    coords, labels = engine._tokens(prompt, (h, w))
    n_high = len(engine.high_res_names)
    old_path = workdir / f"{engine.family}-prompt-decoder.onnx"
    export_decoder(PromptDecoder(engine.model, engine.family, True).eval(), engine._example_inputs(), old_path, n_high)
    old = OnnxDecoder(old_path, engine.decoder_threads)
    arrays = embedding.arrays
    feeds = dict(zip(decoder_input_names(n_high), [arrays["image_embeddings"], coords[None], labels[None]]))
    feeds.update(mask_input=np.zeros((1, 1, 256, 256), np.float32), has_mask_input=np.zeros((1, 1), np.float32))
    feeds.update({n: arrays[n] for n in engine.high_res_names})
    new = engine._onnx_session(True, False)
    prepared = engine._prepare(embedding)
    new_feeds = {"image_tokens": prepared["no_mask"], "point_coords": coords[None], "point_labels": labels[None]}
    new_feeds.update({k: v for k, v in prepared.items() if k.startswith("high_res_")})
    a, b = old.run(feeds)[0], new.run(new_feeds)[0]
    med = interleaved({"old": lambda: old.run(feeds), "new": lambda: new.run(new_feeds)}, clicks)
    out["decoder_graph_1_click_ms"] = {
        "PromptDecoder (old)": round(med["old"] * 1000, 1),
        "FastPromptDecoder (new)": round(med["new"] * 1000, 1),
        "speedup": round(med["old"] / med["new"], 2),
        "max_abs_logit_diff": float(np.abs(a - b).max()),
    }
    if engine.family == "sam":
        from maskwright.engines.sam_common import preprocess_sam
        from maskwright.engines.sam_vit import vit_image_embeddings

        dtype = torch.bfloat16 if engine.encoder_dtype == "bfloat16" else torch.float32
        pixel = torch.from_numpy(preprocess_sam(image)[0]).to(dtype)
        model = engine.model

        def old_vit():
            with torch.inference_mode():
                return model.get_image_embeddings(pixel)

        def new_vit():
            with torch.inference_mode():
                return vit_image_embeddings(model.vision_encoder, pixel)

        diff = float((old_vit().float() - new_vit().float()).abs().max())
        med = interleaved({"old": old_vit, "new": new_vit}, repeats)
        out[f"sam_vit_{engine.encoder_dtype}_encoder_s"] = {
            "transformers get_image_embeddings (old)": round(med["old"], 2),
            "lean ViT attention (new)": round(med["new"], 2),
            "speedup": round(med["old"] / med["new"], 2),
            "max_abs_diff": diff,
        }
    if engine.family == "sam2" and engine.encoder_dtype == "bfloat16":
        from maskwright.engines.sam2 import hiera_fpn_features
        from maskwright.engines.sam_common import preprocess_sam2

        pixel = torch.from_numpy(preprocess_sam2(image)).to(torch.bfloat16)
        encoder, cache = engine.model.vision_encoder, {}

        def old_encoder():
            with torch.inference_mode():
                return encoder(pixel).fpn_hidden_states

        def new_encoder():
            with torch.inference_mode():
                return hiera_fpn_features(encoder, pixel, cache)

        med = interleaved({"old": old_encoder, "new": new_encoder}, repeats)
        out["sam2_bf16_encoder_s"] = {
            "transformers Sam2VisionModel (old)": round(med["old"], 2),
            "lean Hiera forward (new)": round(med["new"], 2),
            "speedup": round(med["old"] / med["new"], 2),
        }
    return out


def bench_model(kind: str, workdir: Path, repeats: int, clicks: int) -> dict:
    import torch

    from maskwright import Predictor
    from maskwright.engines.sam_common import cpu_bf16_support
    from maskwright.engines.sam_registry import load_sam_engine
    from maskwright.masks import iou

    model_dir = build_model(kind, workdir / kind)
    image = load_image()
    h, w = image.shape[:2]
    result: dict = {
        "model": kind,
        "image": f"{w}x{h}",
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_support() or "no",
    }

    plain = PlainRecipe(kind, model_dir)
    plain.set_image(image)  # warm-up

    t = time.perf_counter()
    engine = load_sam_engine(str(model_dir), decoder="onnx")
    result["maskwright_load_and_onnx_export_s"] = round(time.perf_counter() - t, 1)
    result["maskwright_engine"] = engine.describe()
    predictor = Predictor(engine, cache_size=0)
    predictor.set_image(image)  # warm-up
    # Interleaved (plain, maskwright, plain, ...) so a change of load on a shared machine hits both alike.
    both = {"plain": [], "maskwright": []}
    for _ in range(repeats):
        both["plain"] += timed(lambda: plain.set_image(image), 1)
        both["maskwright"] += timed(lambda: predictor.set_image(image), 1)
    result["plain_set_image_s"] = [round(t, 2) for t in both["plain"]]
    result["maskwright_set_image_s"] = [round(t, 2) for t in both["maskwright"]]
    result["set_image_speedup"] = round(
        float(np.median(result["plain_set_image_s"]) / np.median(result["maskwright_set_image_s"])), 2
    )

    # Mask agreement: maskwright (its encoder dtype) vs the fp32 plain embedding, decoded the same way.
    fp32 = load_sam_engine(str(model_dir), decoder="onnx", encoder_dtype="float32")
    ref = Predictor(fp32, cache_size=0)
    ref.set_image(image)
    ious = []
    for prompt in prompts_for(h, w).values():
        a, _, _ = predictor.predict(**prompt)
        b, _, _ = ref.predict(**prompt)
        ious += [iou(x, y) for x, y in zip(a, b)]
    result["mask_iou_vs_fp32"] = {"min": round(float(np.min(ious)), 4), "mean": round(float(np.mean(ious)), 4)}

    predict = {}
    for label, prompt in prompts_for(h, w).items():
        plain.predict(**prompt)
        predictor.predict(**prompt)
        p_times, m_times = [], []
        for _ in range(clicks):  # interleaved, as set_image
            p_times += timed(lambda prompt=prompt: plain.predict(**prompt), 1)
            m_times += timed(lambda prompt=prompt: predictor.predict(**prompt), 1)
        p, m = stats_ms(p_times), stats_ms(m_times)
        predict[label] = {"plain": p, "maskwright": m, "speedup": round(p["median_ms"] / m["median_ms"], 2)}
    result["predict"] = predict
    # The same clicks with nothing else computing (the interleaved plain calls above leave torch's threads
    # spinning, which makes maskwright see a busy CPU and decode on one thread): an annotator's usual case.
    time.sleep(1.0)
    result["predict_alone"] = {
        label: stats_ms(timed(lambda prompt=prompt: predictor.predict(**prompt), clicks))
        for label, prompt in prompts_for(h, w).items()
    }

    result["components_old_vs_new"] = bench_components(
        engine, predictor.get_image_embedding(), image, workdir, clicks, repeats
    )

    # Segment-everything style: 32 single-point prompts, a loop of decode vs one decode_batch.
    from maskwright.predictor import validate_prompt

    emb = predictor.get_image_embedding()
    grid = [validate_prompt((h, w), [[x, y]], [1]) for x in np.linspace(5, w - 5, 8) for y in np.linspace(5, h - 5, 4)]
    engine.decode_batch(emb, grid[:2], True)  # warm-up (creates the batch session)
    loop = timed(lambda: [engine.decode(emb, p, True) for p in grid], 1)[0]
    batch = timed(lambda: engine.decode_batch(emb, grid, True), 1)[0]
    result["decode_32_prompts_ms_per_prompt"] = {
        "loop_of_decode": round(loop * 1000 / len(grid), 1),
        f"decode_batch ({engine.batch_threads} threads)": round(batch * 1000 / len(grid), 1),
    }

    # A second process encodes in a loop (torch default threads = all cores) while we click; then with the
    # encoder at nice 10, and with the encoder capped at cores - 1 threads (as maskwright's server does).
    prompt = prompts_for(h, w)["1 click"]
    cores = os.cpu_count() or 1
    variants = (
        ("predict_during_encode", 0, cores),
        ("predict_during_encode_nice10", 10, cores),
        (f"predict_during_encode_{max(1, cores - 1)}_thread", 0, max(1, cores - 1)),
    )
    for label, nice, threads in variants:
        cmd = [sys.executable, "-c", ENCODER_LOOP, str(model_dir), str(nice), str(threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            proc.stdout.readline()
            time.sleep(2.0)
            result[label] = {"maskwright": stats_ms(timed(lambda: predictor.predict(**prompt), clicks))}
            if nice == 0:
                result[label]["plain"] = stats_ms(timed(lambda: plain.predict(**prompt), max(5, clicks // 2)))
        finally:
            proc.kill()
            proc.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sam-vit-base", "sam2.1-hiera-tiny"])
    parser.add_argument("--repeats", type=int, default=3, help="set_image repetitions (after one warm-up)")
    parser.add_argument("--clicks", type=int, default=30, help="predict repetitions per prompt type")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MASKWRIGHT_CACHE", str(Path(tmp) / "cache"))
        for kind in args.models:
            res = bench_model(kind, Path(tmp), args.repeats, args.clicks)
            print(json.dumps(res, indent=1), flush=True)
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
