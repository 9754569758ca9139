"""Batch-size x policy x backend sweep: throughput, latency, padding, memory and (optionally) AP.

:func:`run_sweep` is the API; ``tools/sweep.py`` is a thin CLI over it and
``deploy/sweep_report.py`` writes the CSV/JSON/PNG. Each configuration gets a fresh backend,
a warm-up over exactly the input shapes its plan uses (so per-shape first-call costs are not
counted), then one timed run over all images. With ``repeats > 1`` the configurations run in
interleaved rounds (round-robin, so drifting machine load hits every configuration alike) and
the reported run is the median by images/s.

Definitions (all in the JSON next to the numbers):
    images_per_s: images with results / wall time of the timed run (probe + decode + infer +
        post, decode overlapped with inference).
    batch latency: infer + post wall time of one batch call.
    image latency: from the start of decoding the image's batch to its results being ready
        (includes time its prepared batch waited in the queue).
    waste: padded pixels / all pixels fed to the network (plan-level, exact).
    rss_peak_mb: peak resident memory of the process sampled every 10 ms during the timed run.
"""
from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .compare import Tolerance, match_detections
from .imageio import annotated_images
from .runner import Runner, RunReport



@dataclass(frozen=True)
class SweepConfig:
    backend: str
    batch_size: int
    policy: str
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.backend_options.items()))
        return f"{self.backend}[{opts}]/{self.policy}/bs{self.batch_size}"


class _RssSampler:
    """Peak RSS of this process, sampled on a thread (psutil if present, else /proc)."""

    def __init__(self, period: float = 0.01):
        self.period, self.peak = period, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)

    def __enter__(self):
        self.peak = self.rss()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def _pct(values: Sequence[float], qs=(50, 90, 99)) -> Dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def summarize(report: RunReport) -> Dict[str, Any]:
    """Flat metrics of one timed run (times in ms unless named ``_s``)."""
    t = report.timings
    n = max(report.images_ok, 1)
    batch_ms = [(b.infer_s + b.post_s) * 1e3 for b in t]
    image_ms: List[float] = []
    for b in t:
        image_ms += [(b.t_end - b.t_start) * 1e3] * b.images
    plan = report.plan.summary() if report.plan else {}
    return {
        "images": len(report.results), "images_ok": report.images_ok,
        "errors": len(report.errors), "wall_s": report.wall_s, "probe_s": report.probe_s,
        "images_per_s": report.images_per_s,
        "pre_ms_per_image": sum(b.pre_s for b in t) * 1e3 / n,
        "infer_ms_per_image": sum(b.infer_s for b in t) * 1e3 / n,
        "post_ms_per_image": sum(b.post_s for b in t) * 1e3 / n,
        "wait_s": sum(b.wait_s for b in t),
        **{f"batch_latency_{k}_ms": v for k, v in _pct(batch_ms).items()},
        **{f"image_latency_{k}_ms": v for k, v in _pct(image_ms).items()},
        "waste_pct": 100.0 * plan.get("waste_fraction", 0.0),
        "batches": plan.get("batches", 0), "distinct_shapes": plan.get("distinct_shapes", 0),
        "shrunk_to_fit": plan.get("shrunk_to_fit", 0),
    }


def environment(threads: Optional[int] = None) -> Dict[str, Any]:
    """Machine and library versions for the benchmark record."""
    env: Dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        env["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    for mod in ("paddle", "onnxruntime", "numpy", "cv2"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = None
    try:
        import paddle

        env["paddle_cuda"] = bool(paddle.device.is_compiled_with_cuda())
    except Exception:  # noqa: BLE001
        pass
    env["threads_requested"] = threads
    return env


def run_sweep(model_dir: str, images: Sequence[str], *, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
              policies: Sequence[str] = ("none", "orientation", "buckets"),
              backends: Sequence[str] = ("paddle-cpu",),
              backend_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
              num_buckets: int = 3, workers: int = 2, prefetch: int = 2, repeats: int = 1,
              post_thread: bool = True, eval_ann: Optional[str] = None, eval_images: Optional[Sequence[str]] = None,
              eval_batch_sizes: Optional[Sequence[int]] = None, tolerance: Tolerance = Tolerance(),
              progress: Optional[Callable[[str, int, int], None]] = None) -> Dict[str, Any]:
    """Time every (backend, policy, batch size) on ``images``.

    Args:
        model_dir: Export directory.
        images: Image files to time on.
        backend_options: ``{backend: {option: value}}`` (e.g. threads, mkldnn).
        repeats: Interleaved rounds; the median run by images/s is reported.
        post_thread: NMS on the runner's post thread, overlapped with inference (False:
            inline after each inference, as before).
        eval_ann: COCO annotation file: each configuration also runs (untimed) on
            ``eval_images`` (default: the annotated images next to it) for box AP.
        eval_batch_sizes: Evaluate AP only at these batch sizes (default: all).
        tolerance: For comparing each configuration's detections to its backend's
            ``none``/bs=1 run on the timed images.
        progress: ``progress(config_key, images_done, images_total)`` after each batch.

    Returns:
        ``{"env": ..., "rows": [...], "runs": [...]}``; ``rows`` has one dict per configuration.
    """
    backend_options = dict(backend_options or {})
    threads = sorted({o.get("threads") for o in backend_options.values() if "threads" in o}) or None
    env = environment(threads)  # at the start: load average before our own work
    all_configs = [SweepConfig(be, bs, pol, dict(backend_options.get(be, {})))
                   for be in backends for bs in batch_sizes for pol in policies]
    # At bs=1 every policy plans the same single-image batches (stride padding only): run
    # one of them and report it for all, rather than timing identical work four times.
    bs1_alias = {c.key: SweepConfig(c.backend, 1, policies[0], c.backend_options).key
                 for c in all_configs if c.batch_size == 1 and c.policy != policies[0]}
    configs = [c for c in all_configs if c.key not in bs1_alias]
    if eval_ann and eval_images is None:
        eval_images = annotated_images(eval_ann)
    runs: Dict[str, List[Dict[str, Any]]] = {c.key: [] for c in configs}
    detections: Dict[str, Any] = {}
    for rnd in range(repeats):
        for cfg in configs:
            runner = Runner(model_dir, backend=cfg.backend, backend_options=cfg.backend_options,
                            batch_size=cfg.batch_size, policy=cfg.policy, num_buckets=num_buckets,
                            workers=workers, prefetch=prefetch, post_thread=post_thread)
            warm_s = runner.warmup(images)
            done = [0]

            def tick(k, _cfg=cfg, _done=done):
                _done[0] += k
                if progress:
                    progress(_cfg.key, _done[0], len(images))

            with _RssSampler() as mem:
                rss0 = mem.peak
                report = runner.run(images, progress=tick)
            row = {"round": rnd, "warmup_s": warm_s, **summarize(report),
                   "rss_start_mb": rss0 / 2**20, "rss_peak_mb": mem.peak / 2**20,
                   "backend_desc": report.backend}
            if rnd == 0:
                detections[cfg.key] = [r.dets for r in report.results]
                if eval_ann and (eval_batch_sizes is None or cfg.batch_size in eval_batch_sizes):
                    from .coco_eval import coco_ap

                    row.update({k: v for k, v in coco_ap(runner.run(eval_images).results, eval_ann,
                                                            category_ids=runner.meta.category_ids).items()})
            runs[cfg.key].append(row)
            runner.close()
    rows = []
    for cfg in all_configs:
        alias = bs1_alias.get(cfg.key)
        rs = sorted(runs[alias or cfg.key], key=lambda r: r["images_per_s"])
        med = dict(rs[len(rs) // 2])
        med["images_per_s_runs"] = [r["images_per_s"] for r in runs[alias or cfg.key]]
        if alias:
            med["same_run_as"] = alias
        for k in ("AP", "AP50", "AP75"):
            if k in runs[alias or cfg.key][0]:
                med[k] = runs[alias or cfg.key][0][k]
        ref_key = SweepConfig(cfg.backend, 1, "none", cfg.backend_options).key
        if ref_key in detections:
            m = None
            for a, b in zip(detections[ref_key], detections[alias or cfg.key]):
                r = match_detections(a, b, tolerance)
                m = r if m is None else m.merge(r)
            med.update(match_compared=m.compared, match_unmatched=m.unmatched,
                       match_max_score_diff=m.max_score_diff)
        rows.append({"backend": cfg.backend, "options": dict(cfg.backend_options),
                     "policy": cfg.policy, "batch_size": cfg.batch_size, **med})
    try:
        env["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    env["time_utc_end"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"env": env, "backend_options": backend_options,
            "settings": {"workers": workers, "prefetch": prefetch, "num_buckets": num_buckets,
                         "post_thread": post_thread,
                         "repeats": repeats, "eval_batch_sizes": eval_batch_sizes},
            "tolerance": tolerance.__dict__, "rows": rows,
            "runs": {k: v for k, v in runs.items()}}


def plan_sweep(model_dir: str, images: Sequence[str], *, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
               policies: Sequence[str] = ("none", "orientation", "buckets", "shape"),
               num_buckets: int = 3) -> Dict[str, Any]:
    """Padding waste and shape counts of every (policy, batch size) without running a model.

    Needs only ``infer_cfg.yml`` and image headers: exact plan-level numbers for models too slow
    to time on this machine (e.g. GFL at 800x1333).
    """
    from .meta import load_meta
    from .planner import plan_batches
    from .preprocess import Preprocessor

    meta = load_meta(model_dir)
    pre = Preprocessor(meta.preprocess)
    runner_probe = Runner.__new__(Runner)  # probe without loading an engine
    runner_probe.max_pixels, runner_probe.min_side = None, 1
    sizes, errors = Runner.probe(runner_probe, images)
    fed = [pre.resized_hw(*s) for s in sizes if s is not None]
    rows = []
    for bs in batch_sizes:
        for pol in policies:
            plan = plan_batches(fed, bs, pol, stride=meta.stride, num_buckets=num_buckets,
                                fixed_hw=meta.fixed_hw)
            rows.append({"policy": pol, "batch_size": bs, "waste_pct": 100 * plan.waste_fraction,
                         "batches": len(plan.batches), "distinct_shapes": len({b.shape for b in plan.batches}),
                         "mpix_fed": plan.total_pixels / 1e6})
    return {"env": environment(), "rows": rows, "images_unreadable": len(errors),
            "preprocess": list(meta.preprocess), "pad_stride": meta.pad_stride}


def ratios(rows: Sequence[Mapping[str, Any]], batch_size: int = 8) -> Dict[str, float]:
    """images/s of each policy / ``none`` at ``batch_size``, per backend (same run)."""
    out = {}
    for be in sorted({r["backend"] for r in rows}):
        sel = {r["policy"]: r["images_per_s"] for r in rows
               if r["backend"] == be and r["batch_size"] == batch_size}
        if "none" in sel:
            for pol, v in sel.items():
                if pol != "none":
                    out[f"{be}/{pol}"] = v / sel["none"]
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
