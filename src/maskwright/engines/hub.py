"""SAM model catalogue, downloads (Hugging Face hub), caches and the ONNX export location.

Light module: no torch import. ``huggingface_hub`` is imported lazily, only when a model is looked up.

Where things live:

* weights: the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
  or a directory of HF-format models named after the registry (``MASKWRIGHT_MODELS_DIR/<name>/config.json``),
  or any directory in HF format passed as the engine name;
* exported ONNX decoders: ``MASKWRIGHT_CACHE`` (default ``~/.cache/maskwright``) ``/onnx/<key>/``, keyed by
  the model's name or path and its weights' size and mtime, so a changed checkpoint gets a fresh export.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from maskwright.engines.registry import EngineUnavailableError

# safetensors first; some older checkpoints (e.g. SlimSAM) only ship pytorch_model.bin
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a model folder (safetensors, else PyTorch .bin), sorted."""
    folder = Path(folder)
    for pattern in WEIGHT_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


CONFIG_FILE = "config.json"


class ModelUnavailableError(EngineUnavailableError):
    """A model's weights are not here and cannot be fetched (offline, unreachable, unknown)."""


@dataclass(frozen=True)
class ModelInfo:
    """One downloadable model.

    ``encoder_s`` / ``encoder_gb``: approximate image-encoder seconds and peak memory on a 2-core x86_64
    CPU (fp32); ``cost_source`` says whether that was measured on this project's machine or estimated.
    """

    name: str
    hub_id: str
    family: str  # "sam", "sam-hq" or "sam2"
    download_mb: int
    encoder_s: float
    encoder_gb: float
    cost_source: str  # "measured" or "estimate"
    priority: int
    description: str


# Costs marked "measured" come from docs/benchmarks.md (2-core VM, fp32, median, shared CPU);
# the others are scaled from parameter counts and FLOPs and are estimates only.
CATALOGUE: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "sam2.1-hiera-tiny",
            "facebook/sam2.1-hiera-tiny",
            "sam2",
            156,
            2.3,
            0.9,
            "measured",
            100,
            "SAM 2.1 Hiera-T: fastest good model on CPU (default)",
        ),
        ModelInfo(
            "sam2.1-hiera-small",
            "facebook/sam2.1-hiera-small",
            "sam2",
            184,
            3.0,
            1.0,
            "estimate",
            95,
            "SAM 2.1 Hiera-S",
        ),
        ModelInfo(
            "sam2.1-hiera-base-plus",
            "facebook/sam2.1-hiera-base-plus",
            "sam2",
            323,
            6.0,
            1.5,
            "estimate",
            94,
            "SAM 2.1 Hiera-B+",
        ),
        ModelInfo(
            "sam2.1-hiera-large",
            "facebook/sam2.1-hiera-large",
            "sam2",
            898,
            18.0,
            3.0,
            "estimate",
            93,
            "SAM 2.1 Hiera-L: most accurate SAM 2.1, slow on CPU",
        ),
        ModelInfo(
            "sam-vit-base", "facebook/sam-vit-base", "sam", 375, 9.0, 1.5, "measured", 90, "SAM ViT-B (original SAM)"
        ),
        ModelInfo("sam-vit-large", "facebook/sam-vit-large", "sam", 1250, 22.0, 3.5, "estimate", 85, "SAM ViT-L"),
        ModelInfo(
            "sam-vit-huge",
            "facebook/sam-vit-huge",
            "sam",
            2560,
            37.0,
            6.5,
            "measured",
            84,
            "SAM ViT-H: largest original SAM, very slow on CPU",
        ),
        ModelInfo(
            "slimsam-77",
            "Zigeng/SlimSAM-uniform-77",
            "sam",
            38,
            1.5,
            0.5,
            "estimate",
            80,
            "SlimSAM (77% pruned ViT-B): small and fast, less accurate",
        ),
        ModelInfo(
            "sam-hq-vit-base",
            "syscv-community/sam-hq-vit-base",
            "sam-hq",
            380,
            9.5,
            1.6,
            "estimate",
            70,
            "SAM-HQ ViT-B: sharper mask boundaries",
        ),
    ]
}


# --- cache locations --------------------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (tests change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def maskwright_cache_dir() -> Path:
    """maskwright's own cache (exported ONNX decoders): ``MASKWRIGHT_CACHE`` or ``~/.cache/maskwright``."""
    if os.environ.get("MASKWRIGHT_CACHE"):
        return Path(os.environ["MASKWRIGHT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))).expanduser() / "maskwright"


def local_models_dir() -> Path | None:
    """``MASKWRIGHT_MODELS_DIR``: a folder of HF-format model folders named like the registry."""
    value = os.environ.get("MASKWRIGHT_MODELS_DIR")
    return Path(value).expanduser() if value else None


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --- model directories ------------------------------------------------------------------------------


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a model in Hugging Face format (config.json + weights)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and bool(weight_files(p))


def read_model_type(model_dir: str | os.PathLike) -> str:
    """``model_type`` from a model directory's config.json (e.g. ``"sam"``, ``"sam_hq"``, ``"sam2"``)."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable model config: {exc}") from None
    return str(config.get("model_type", ""))


def _cached_snapshot(hub_id: str) -> Path | None:
    """The HF-cache snapshot folder holding ``hub_id``'s config and weights, without loading anything."""
    from huggingface_hub import try_to_load_from_cache

    cache = str(hf_cache_dir())
    config = try_to_load_from_cache(hub_id, CONFIG_FILE, cache_dir=cache)
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if weight_files(snapshot) else None


def find_local(name: str) -> Path | None:
    """Directory holding registry model ``name`` here (models dir first, then the HF cache), or None."""
    info = CATALOGUE.get(name)
    if info is None:
        return None
    models = local_models_dir()
    if models is not None:
        for candidate in (models / name, models / info.hub_id.split("/")[-1]):
            if is_model_dir(candidate):
                return candidate
    return _cached_snapshot(info.hub_id)


def availability(name: str) -> tuple[bool, str]:
    """(available, reason) for a registry model; checks files only, never loads weights."""
    for module in ("torch", "transformers", "huggingface_hub"):
        if importlib.util.find_spec(module) is None:  # find_spec does not import (cheap)
            return False, f"missing dependency {module}; install maskwright[sam]"
    path = find_local(name)
    if path is None:
        return False, f"weights not downloaded: run `maskwright models pull {name}`"
    return True, str(path)


def resolve_model_dir(name_or_path: str) -> Path:
    """A local model directory for a registry name or an HF-format directory path; raises if absent."""
    if is_model_dir(name_or_path):
        return Path(name_or_path)
    if name_or_path not in CATALOGUE:
        raise ValueError(
            f"unknown model {name_or_path!r}: expected one of {', '.join(CATALOGUE)} "
            "or a directory with config.json and weights (*.safetensors or pytorch_model.bin)"
        )
    path = find_local(name_or_path)
    if path is None:
        raise ModelUnavailableError(unavailable_message(name_or_path, "weights are not downloaded"))
    return path


def unavailable_message(name: str, why: str) -> str:
    """One clear message: which model, from where, and how to place it here offline."""
    info = CATALOGUE[name]
    return (
        f"model {name!r} is not available: {why}. It comes from https://huggingface.co/{info.hub_id} "
        f"(hub id {info.hub_id}). On a connected machine run `huggingface-cli download {info.hub_id}` "
        f"(or `maskwright models pull {name}`), then copy its Hugging Face cache to {hf_cache_dir()} "
        f"here, or copy the downloaded folder and pass it as the engine (`--engine /path/to/folder`), "
        "or put it in $MASKWRIGHT_MODELS_DIR/" + name
    )


def pull(name: str, timeout_s: float = 30.0) -> Path:
    """Download registry model ``name`` into the HF cache (with the hub's progress bar); return its folder.

    Respects ``HF_HOME`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE``. Raises :class:`ModelUnavailableError`
    with :func:`unavailable_message` when the model cannot be had.
    """
    if name not in CATALOGUE:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(CATALOGUE)}")
    # huggingface_hub reads its timeouts from the environment when first imported (find_local imports it).
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(max(1, timeout_s))))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(max(1, timeout_s))))
    existing = find_local(name)
    if existing is not None:
        return existing
    if is_offline():
        raise ModelUnavailableError(unavailable_message(name, "HF_HUB_OFFLINE is set and it is not in the cache"))
    try:
        from huggingface_hub import snapshot_download

        # One weight format only: safetensors when the repo has them, else the .bin files.
        for pattern in WEIGHT_PATTERNS:
            folder = snapshot_download(
                CATALOGUE[name].hub_id, cache_dir=str(hf_cache_dir()), allow_patterns=[CONFIG_FILE, "*.json", pattern]
            )
            if weight_files(folder):
                break
    except Exception as exc:  # network errors come in many types (httpx, OSError, hub errors)
        reason = f"download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        raise ModelUnavailableError(unavailable_message(name, reason)) from None
    if not is_model_dir(folder):
        raise ModelUnavailableError(unavailable_message(name, f"download in {folder} has no config.json/weights"))
    return Path(folder)


def dir_size_bytes(path: str | os.PathLike) -> int:
    """Size of the files in a model folder (symlinks into the HF blob store are followed)."""
    total = 0
    for p in Path(path).iterdir():
        if p.is_file():
            total += p.stat().st_size
    return total


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """A short key for a model folder: its resolved path and its weights' sizes and mtimes."""
    model_dir = Path(model_dir).resolve()
    h = hashlib.blake2b(digest_size=8)
    h.update(str(model_dir).encode())
    for p in weight_files(model_dir) + [model_dir / CONFIG_FILE]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def onnx_dir(model_dir: str | os.PathLike) -> Path:
    """Where the exported ONNX decoders of the model in ``model_dir`` live (not created here)."""
    model_dir = Path(model_dir)
    label = model_dir.resolve().name
    if label.startswith(("snapshot", "main")) or len(label) == 40:  # HF snapshot folders are commit hashes
        label = model_dir.resolve().parent.parent.name.replace("models--", "")
    return maskwright_cache_dir() / "onnx" / f"{label}-{weights_fingerprint(model_dir)}"
