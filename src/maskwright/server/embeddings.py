"""Image embeddings for the server: memory LRU, disk cache and a background worker.

The worker is one thread that encodes the images of the open project in order, ahead of the annotator,
with encoder threads limited so the click path (decode of another image) keeps a core. Embeddings are
cached on disk keyed by image hash + engine name + engine version (``Embedding.to_bytes``), and the
most recent ones in memory. A predict on an image without an embedding computes it on demand; the
worker then skips that image and carries on with the images after it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass

from maskwright.engines.base import Embedding, Engine
from maskwright.imageio import decode_image
from maskwright.store.files import FileStore

log = logging.getLogger(__name__)

EMBEDDING_STATUSES = ("none", "queued", "computing", "ready", "failed")


@dataclass(frozen=True)
class ImageRef:
    """What the worker needs to find an image's bytes (no database access in the worker)."""

    image_id: int
    sha256: str
    format: str


def thread_counts() -> tuple[int | None, int | None]:
    """Current (OpenCV, torch) intra-op thread counts; None for a library not loaded."""
    try:
        import cv2

        ocv = cv2.getNumThreads()
    except Exception:  # pragma: no cover
        ocv = None
    torch = sys.modules.get("torch")  # never import torch just for this
    return ocv, (torch.get_num_threads() if torch is not None else None)


def limit_encoder_threads(n: int | tuple[int | None, int | None]) -> None:
    """Set the intra-op threads of OpenCV and torch to ``n`` (or to a pair from :func:`thread_counts`).

    Both settings are process-wide, so the worker caps them only while it encodes (see
    :func:`encoder_thread_cap`): an encode then leaves a core to the click path, and an idle worker
    leaves every core to it.
    """
    ocv, tch = (n, n) if isinstance(n, int) else n
    if ocv is not None:
        try:
            import cv2

            cv2.setNumThreads(ocv)
        except Exception as exc:  # pragma: no cover - best effort only
            log.debug("could not set OpenCV threads: %s", exc)
    torch = sys.modules.get("torch")
    if tch is not None and torch is not None and torch.get_num_threads() != tch:
        try:
            torch.set_num_threads(tch)
        except Exception as exc:  # pragma: no cover
            log.debug("could not set torch threads: %s", exc)


@contextmanager
def encoder_thread_cap(n: int):
    """Cap OpenCV/torch threads at ``n`` for the duration of one encode (``n = 0``: no cap)."""
    if not n:
        yield
        return
    before = thread_counts()
    limit_encoder_threads(n)
    try:
        yield
    finally:
        limit_encoder_threads(before)


def default_encoder_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class EmbeddingService:
    """Get embeddings fast, computing each at most once (worker and requests share in-flight work)."""

    def __init__(
        self, engine: Engine, files: FileStore, memory_items: int = 8, encoder_threads: int | None = None
    ) -> None:
        self.engine = engine
        self.files = files
        self.memory_items = max(1, int(memory_items))
        # None: cores - 1; 0: leave the libraries' thread settings alone (e.g. inside a test run).
        self.encoder_threads = default_encoder_threads() if encoder_threads is None else max(0, int(encoder_threads))
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._status: dict[str, str] = {}  # sha256 -> queued | computing | failed (ready is derived)
        self._errors: dict[str, str] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._queue: deque[ImageRef] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.project_id: int | None = None  # the open project whose images the worker goes through
        self.computed = 0  # encodes done (by worker or on demand), for tests and logs

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="maskwright-embedder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- status ----------------------------------------------------------------------------------
    def _is_ready(self, sha256: str) -> bool:
        return sha256 in self._memory or self.files.has_embedding(sha256, self.engine.name, self.engine.version)

    def status(self, sha256: str) -> str:
        """One of ``none | queued | computing | ready | failed``."""
        with self._cond:
            st = self._status.get(sha256)
            if st == "computing":
                return st
        if self._is_ready(sha256):
            return "ready"
        return st or "none"

    def error(self, sha256: str) -> str | None:
        return self._errors.get(sha256)

    def queued(self) -> list[int]:
        with self._cond:
            return [r.image_id for r in self._queue]

    # --- scheduling ------------------------------------------------------------------------------
    def enqueue(self, refs: list[ImageRef], front: bool = False) -> None:
        """Queue images not ready yet, in the given order (``front``: before everything already queued)."""
        todo = [r for r in refs if not self._is_ready(r.sha256)]
        with self._cond:
            keys = {r.sha256 for r in todo}
            kept = [r for r in self._queue if r.sha256 not in keys]
            self._queue = deque(todo + kept if front else kept + todo)
            for r in todo:
                if self._status.get(r.sha256) != "computing":
                    self._status[r.sha256] = "queued"
                    self._errors.pop(r.sha256, None)
            self._cond.notify_all()

    def open_project(self, refs: list[ImageRef], project_id: int | None = None) -> None:
        """Make ``refs`` (a project's images, in annotation order) the worker's whole queue."""
        with self._cond:
            self.project_id = project_id
            for r in self._queue:
                if self._status.get(r.sha256) == "queued":
                    self._status.pop(r.sha256, None)
            self._queue.clear()
        self.enqueue(refs)

    def move_on_after(self, sha256: str) -> None:
        """The annotator is on this image (encoded on demand): drop it from the queue and go on with the
        images after it; those queued before it move to the back (the annotator may come back to them)."""
        with self._cond:
            items = list(self._queue)
            idx = next((i for i, r in enumerate(items) if r.sha256 == sha256), None)
            if idx is None:
                return
            if self._status.get(sha256) == "queued":
                self._status.pop(sha256, None)
            self._queue = deque(items[idx + 1 :] + items[:idx])
            self._cond.notify_all()

    # --- access ----------------------------------------------------------------------------------
    def get(self, ref: ImageRef) -> Embedding:
        """The embedding of ``ref``: memory, disk, work in flight, or computed now in the caller's thread."""
        while True:
            with self._cond:
                emb = self._memory.get(ref.sha256)
                if emb is not None:
                    self._memory.move_to_end(ref.sha256)
                    return emb
                waiting = self._inflight.get(ref.sha256)
                if waiting is None:
                    done = self._inflight[ref.sha256] = threading.Event()
                    self._status[ref.sha256] = "computing"
                    break
            waiting.wait()  # the worker (or another request) is computing it right now
            if self._status.get(ref.sha256) == "failed":
                raise RuntimeError(f"embedding of image {ref.image_id} failed: {self._errors.get(ref.sha256)}")
        try:
            emb = self._load_or_compute(ref)
            return emb
        except Exception as exc:
            with self._cond:
                self._status[ref.sha256] = "failed"
                self._errors[ref.sha256] = str(exc)
            raise
        finally:
            with self._cond:
                if self._status.get(ref.sha256) == "computing":
                    self._status.pop(ref.sha256, None)
                self._inflight.pop(ref.sha256, None)
            done.set()

    def _remember(self, sha256: str, emb: Embedding) -> None:
        with self._cond:
            self._memory[sha256] = emb
            self._memory.move_to_end(sha256)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _load_or_compute(self, ref: ImageRef) -> Embedding:
        name, version = self.engine.name, self.engine.version
        data = self.files.get_embedding(ref.sha256, name, version)
        if data is not None:
            try:
                emb = Embedding.from_bytes(data)
                self._remember(ref.sha256, emb)
                return emb
            except ValueError:
                log.warning("cached embedding of image %s is unreadable; recomputing", ref.image_id)
        rgb = decode_image(self.files.read_image(ref.sha256, ref.format), max_pixels=2**62)
        emb = self.engine.embed(rgb)
        self.files.put_embedding(ref.sha256, name, version, emb.to_bytes())
        self._remember(ref.sha256, emb)
        self.computed += 1
        return emb

    # --- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                ref = self._queue.popleft()
            if self._is_ready(ref.sha256):
                with self._cond:
                    if self._status.get(ref.sha256) == "queued":
                        self._status.pop(ref.sha256, None)
                continue
            try:
                with encoder_thread_cap(self.encoder_threads):
                    self.get(ref)
            except Exception as exc:  # recorded as "failed"; the worker carries on with the next image
                log.warning("embedding of image %s failed: %s", ref.image_id, exc)
