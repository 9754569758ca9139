"""Run an exported detector over a list of image files, shape-grouped and pipelined.

Flow of :meth:`Runner.run`:

1. probe every file's header size (no decode) and compute its size after the model's resize;
   unreadable files are reported here and left out;
2. plan batches (:func:`deploy.planner.plan_batches`) and hand the backend the exact range of
   input shapes it will see (:meth:`Backend.prepare`);
3. a feeder thread decodes + preprocesses each planned batch on a worker pool and puts the
   padded ``[B, 3, H, W]`` array on a bounded queue, overlapping with inference;
4. the calling thread runs inference batch by batch; numpy post-processing (NMS) of a batch
   runs on one post thread while the next batch is inferred (``post_thread``; at most
   ``prefetch`` inferred batches wait for it, so memory stays bounded);
5. results come back in the caller's order, one :class:`ImageResult` per path — a file that
   failed to decode carries its error and the rest of its batch still runs.

Timings are kept per batch: ``pre`` (feeder wall time to decode and assemble the batch, on
worker threads), ``wait`` (time inference stalled waiting for the feeder), ``infer``, ``post``
(on the post thread when it is on), and ``t_end`` when the batch's results were ready.
"""
from __future__ import annotations

import logging
import queue
from collections import deque
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .backends.base import Backend, ShapeRange
from .formats import create_backend
from .imageio import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageError, decode_rgb, probe_sizes
from .meta import ExportMeta, load_meta
from .planner import Batch, BatchPlan, plan_batches
from .postprocess import EMPTY, postprocess_batch
from .preprocess import Preprocessor

log = logging.getLogger(__name__)
HW = Tuple[int, int]


@dataclass
class ImageResult:
    """Detections for one input file.

    Attributes:
        index: Position in the caller's list.
        path: The file.
        dets: ``float32 [M, 6]`` rows ``(class_id, score, x1, y1, x2, y2)`` in original pixels.
        error: Why the file produced no result (``None`` when it ran).
        notes: Conversions applied (grayscale, alpha, 16-bit, shrunk to a canonical shape).
        orig_hw: Decoded ``(h, w)``.
        fed_hw: Content ``(h, w)`` inside the network input.
        batch: Index of the batch it ran in (-1: it did not run).
    """

    index: int
    path: str
    dets: np.ndarray = field(default_factory=lambda: EMPTY)
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    orig_hw: Optional[HW] = None
    fed_hw: Optional[HW] = None
    batch: int = -1

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchTiming:
    """Per-batch record (times in seconds, ``t_*`` on ``time.perf_counter``)."""

    batch: int
    images: int
    shape: HW
    waste_fraction: float
    pre_s: float
    wait_s: float
    infer_s: float
    post_s: float
    t_start: float
    t_end: float


@dataclass
class RunReport:
    """Everything one :meth:`Runner.run` produced."""

    results: List[ImageResult]
    plan: Optional[BatchPlan]
    timings: List[BatchTiming]
    probe_s: float
    wall_s: float
    backend: Dict[str, Any]
    batch_size: int

    @property
    def errors(self) -> List[Tuple[str, str]]:
        """``(path, reason)`` for every file that produced no result."""
        return [(r.path, r.error) for r in self.results if r.error is not None]

    @property
    def images_ok(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def images_per_s(self) -> float:
        return self.images_ok / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _Loaded:
    chw: Optional[np.ndarray]
    notes: List[str]
    orig_hw: Optional[HW]
    error: Optional[str]


@dataclass
class _Prepared:
    bid: int
    batch: Batch
    loaded: List[_Loaded]
    x: np.ndarray
    t_start: float
    pre_s: float


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up once ``stop`` is set (the consumer has gone)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class Runner:
    """Loads an export directory once; :meth:`run` processes lists of image files.

    Args:
        model_dir: Export directory (``infer_cfg.yml`` + model files).
        backend: A format name from ``deploy/formats.py`` (``paddle-cpu``, ``onnxruntime``, ...),
            or an already-loaded :class:`Backend` to share one engine between runners.
        backend_options: Options of that format's row (e.g. ``{"threads": 2, "mkldnn": False}``).
        batch_size: Images per batch; a graph with a fixed batch runs in chunks of that size.
        policy: ``none`` | ``orientation`` | ``buckets`` | ``shape`` (see ``deploy/planner.py``).
        num_buckets: Aspect bins for ``buckets``.
        shapes: ``buckets`` only: ``"auto"`` or canonical ``(H, W)`` list.
        workers: Decode/preprocess threads.
        prefetch: Prepared batches the queue holds ahead of inference (bounded memory).
        max_pixels, min_side: Files outside these sizes are reported, not run.
        drop_padding_dets: Drop candidates centred in the padding before NMS (keeps a
            batch's extra padding from adding detections; see ``deploy/postprocess.py``).
        post_thread: Post-process each batch on a separate thread, overlapped with the
            next batch's inference (False: on the calling thread, after each inference).
    """

    def __init__(self, model_dir: str, *, backend: Union[str, Backend] = "paddle-cpu",
                 backend_options: Optional[Mapping[str, Any]] = None, batch_size: int = 1,
                 policy: str = "none", num_buckets: int = 3,
                 shapes: Union[None, str, Sequence[HW]] = None, workers: int = 2,
                 prefetch: int = 2, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                 min_side: int = DEFAULT_MIN_SIDE, drop_padding_dets: bool = True,
                 post_thread: bool = True):
        self.meta: ExportMeta = load_meta(model_dir)
        self.pre = Preprocessor(self.meta.preprocess)
        if isinstance(backend, Backend):  # an engine already loaded (shared across runners)
            if backend_options:
                raise ValueError("backend_options apply only when the backend is given by name")
            self.backend_name, self.backend = type(backend).__name__, backend
        else:
            self.backend_name = backend
            self.backend = create_backend(model_dir, backend, backend_options, self.meta)
        self.batch_size = int(batch_size)
        self.policy, self.num_buckets, self.shapes = policy, num_buckets, shapes
        self.workers, self.prefetch = max(1, int(workers)), max(1, int(prefetch))
        self.max_pixels, self.min_side = max_pixels, min_side
        self.drop_padding_dets = bool(drop_padding_dets)
        self.post_thread = bool(post_thread)
        fb = self.meta.fixed_batch
        if fb is not None and fb != self.batch_size:
            log.warning("graph batch is fixed at %d: batches of %d run in chunks of %d",
                        fb, self.batch_size, fb)

    # -- planning -------------------------------------------------------------------------
    def probe(self, paths: Sequence[str]) -> Tuple[List[Optional[HW]], Dict[int, str]]:
        """Header sizes per path (``None`` on failure) and ``{index: error}``."""
        return probe_sizes(paths, max_pixels=self.max_pixels, min_side=self.min_side)

    def plan(self, orig_sizes: Sequence[HW]) -> BatchPlan:
        """Plan batches for images of these original sizes."""
        fed = [self.pre.resized_hw(h, w) for h, w in orig_sizes]
        fixed = self.meta.fixed_hw
        if fixed is not None:
            for h, w in fed:
                if h > fixed[0] or w > fixed[1]:
                    raise ValueError(f"resize gives {(h, w)} but the graph input is fixed at {fixed}")
        return plan_batches(fed, self.batch_size, self.policy, stride=self.meta.stride,
                            num_buckets=self.num_buckets, shapes=self.shapes, fixed_hw=fixed)

    def shape_range(self, plan: BatchPlan) -> ShapeRange:
        """One range covering every batch of ``plan``; min batch 1 (a batch can lose images)."""
        fb = self.meta.fixed_batch
        shapes = [(fb or b, h, w) for b, h, w in plan.shapes()]
        r = ShapeRange.from_shapes(shapes)
        lo = (fb or 1, 3, r.min[2], r.min[3])
        return ShapeRange(min=lo, opt=r.opt, max=r.max)

    def warmup(self, paths: Sequence[str]) -> float:
        """Feed one zero batch of every input shape the run over ``paths`` will use.

        Engines pay per-shape first-call costs (oneDNN primitive creation, TensorRT engine
        build); warming them makes a timed run measure the steady state. Returns seconds.
        """
        t = time.perf_counter()
        sizes, _ = self.probe(paths)
        valid = [s for s in sizes if s is not None]
        if valid:
            plan = self.plan(valid)
            self.backend.prepare(self.shape_range(plan))
            for b, h, w in sorted(plan.shapes()):
                self._infer(np.zeros((b, 3, h, w), np.float32))
        return time.perf_counter() - t

    # -- running --------------------------------------------------------------------------
    def run(self, paths: Sequence[str], progress: Optional[Callable[[int], None]] = None) -> RunReport:
        """Detect on every path; results in the caller's order.

        Args:
            paths: Image files.
            progress: Called with the number of images finished after each batch.
        """
        paths = [str(p) for p in paths]
        t0 = time.perf_counter()
        sizes, probe_errors = self.probe(paths)
        valid = [i for i, s in enumerate(sizes) if s is not None]
        results = [ImageResult(index=i, path=p) for i, p in enumerate(paths)]
        for i, msg in probe_errors.items():
            results[i].error = msg
        if progress and probe_errors:
            progress(len(probe_errors))
        probe_s = time.perf_counter() - t0
        timings: List[BatchTiming] = []
        plan = None
        if valid:
            plan = self.plan([sizes[i] for i in valid])
            self.backend.prepare(self.shape_range(plan))
            timings = self._execute(plan, valid, paths, results, progress)
        wall = time.perf_counter() - t0
        return RunReport(results=results, plan=plan, timings=timings, probe_s=probe_s, wall_s=wall,
                         backend={"name": self.backend_name, **self.backend.describe()},
                         batch_size=self.batch_size)

    def _load(self, path: str, fed_hw: HW) -> _Loaded:
        try:
            img, notes = decode_rgb(path, max_pixels=self.max_pixels, min_side=self.min_side)
            return _Loaded(self.pre.apply(img, fed_hw), notes, img.shape[:2], None)
        except ImageError as e:
            return _Loaded(None, [], None, str(e))
        except Exception as e:  # noqa: BLE001  (one bad file must not stop its batch)
            return _Loaded(None, [], None, f"{path}: {type(e).__name__}: {e}")

    def _feed(self, plan: BatchPlan, valid: List[int], paths: List[str], q: queue.Queue,
              stop: threading.Event) -> None:
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="deploy-pre") as pool:
                for bid, batch in enumerate(plan.batches):
                    t = time.perf_counter()
                    futs = [pool.submit(self._load, paths[valid[i]], plan.sizes[i]) for i in batch.indices]
                    loaded = [f.result() for f in futs]
                    ok = [ld for ld in loaded if ld.chw is not None]
                    x = np.zeros((len(ok), 3) + tuple(batch.shape), np.float32)
                    for j, ld in enumerate(ok):
                        x[j, :, : ld.chw.shape[1], : ld.chw.shape[2]] = ld.chw
                    if not _put(q, _Prepared(bid, batch, loaded, x, t, time.perf_counter() - t), stop):
                        return
            _put(q, _END, stop)
        except BaseException as e:  # noqa: BLE001  (re-raised on the calling thread)
            _put(q, e, stop)

    def _infer(self, x: np.ndarray) -> List[np.ndarray]:
        """Backend call; a fixed-batch graph gets chunks of its batch, zero-padded at the end."""
        fb = self.meta.fixed_batch
        if fb is None or x.shape[0] == fb:
            return self.backend.infer(x)
        parts: List[List[np.ndarray]] = []
        for s in range(0, x.shape[0], fb):
            chunk = x[s:s + fb]
            n = chunk.shape[0]
            if n < fb:
                chunk = np.concatenate([chunk, np.zeros((fb - n,) + chunk.shape[1:], chunk.dtype)])
            parts.append([o[:n] for o in self.backend.infer(chunk)])
        return [np.concatenate(p, axis=0) for p in zip(*parts)]

    def _post(self, plan: BatchPlan, item: _Prepared, outs: Optional[List[np.ndarray]]) -> List[np.ndarray]:
        """Detections of the images of ``item`` that ran, in the original frames."""
        if outs is None:
            return []
        scales, origs, contents = [], [], []
        for ld, pi in zip(item.loaded, item.batch.indices):
            if ld.chw is None:
                continue
            fh, fw = plan.sizes[pi]
            oh, ow = ld.orig_hw
            scales.append((fh / oh, fw / ow))
            origs.append((oh, ow))
            contents.append((fh, fw))
        return postprocess_batch(outs, self.meta.output_names, self.meta.post, scales, origs,
                                 contents if self.drop_padding_dets else None)

    def _finish(self, plan: BatchPlan, valid: List[int], results: List[ImageResult],
                item: _Prepared, dets: List[np.ndarray], shrunk: set) -> None:
        """Write one batch's results (and its files' errors) into ``results``."""
        it = iter(dets)
        for ld, pi in zip(item.loaded, item.batch.indices):
            r = results[valid[pi]]
            r.batch = item.bid
            r.notes = list(ld.notes)
            r.orig_hw = ld.orig_hw
            if ld.error is not None:
                r.error = ld.error
                continue
            r.fed_hw = plan.sizes[pi]
            if pi in shrunk:
                r.notes.append("shrunk to fit canonical shape %dx%d" % item.batch.shape[::-1])
            r.dets = next(it)

    def _execute(self, plan: BatchPlan, valid: List[int], paths: List[str],
                 results: List[ImageResult], progress) -> List[BatchTiming]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(plan, valid, paths, q, stop),
                                  name="deploy-feeder", daemon=True)
        feeder.start()
        post_pool = ThreadPoolExecutor(1, thread_name_prefix="deploy-post") if self.post_thread else None
        pending: deque = deque()     # (item, wait, infer_s, post future) in batch order
        timings: List[BatchTiming] = []
        shrunk = set(plan.resized)

        def timed_post(item, outs):
            t = time.perf_counter()
            dets = self._post(plan, item, outs)
            te = time.perf_counter()
            return dets, te - t, te

        def collect_one():
            item, wait, infer_s, fut = pending.popleft()
            dets, post_s, t_end = fut.result() if post_pool else fut
            self._finish(plan, valid, results, item, dets, shrunk)
            timings.append(BatchTiming(
                batch=item.bid, images=len(dets), shape=item.batch.shape,
                waste_fraction=item.batch.waste_fraction, pre_s=item.pre_s, wait_s=wait,
                infer_s=infer_s, post_s=post_s, t_start=item.t_start, t_end=t_end))
            if progress:
                progress(item.batch.size)

        try:
            while True:
                tw = time.perf_counter()
                item = q.get()
                wait = time.perf_counter() - tw
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                ti = time.perf_counter()
                outs = self._infer(item.x) if item.x.shape[0] else None
                infer_s = time.perf_counter() - ti
                if post_pool:
                    pending.append((item, wait, infer_s, post_pool.submit(timed_post, item, outs)))
                    # inferred batches waiting for NMS stay bounded, like the feeder's queue
                    while len(pending) > self.prefetch or (pending and pending[0][3].done()):
                        collect_one()
                else:
                    pending.append((item, wait, infer_s, timed_post(item, outs)))
                    collect_one()
            while pending:
                collect_one()
        finally:
            stop.set()
            if post_pool:
                post_pool.shutdown(wait=True, cancel_futures=True)
            feeder.join(timeout=10)
        return timings

    def close(self) -> None:
        self.backend.close()
