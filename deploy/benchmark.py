"""Batch-size x policy x backend sweep: throughput, latency, padding, memory and (optionally) AP.

:func:`run_sweep` is the API; ``tools/sweep.py`` is a thin CLI over it,
``deploy/sweep_report.py`` writes the CSV/JSON/PNG and ``deploy/plan_sweep.py`` computes the
padding numbers without a model run. Each configuration gets a fresh backend, a warm-up over
exactly the input shapes its plan uses (so per-shape first-call costs are not counted), then
one timed run over all images. With ``repeats > 1`` the configurations run in interleaved
rounds (``deploy/timing.py``) and the reported run is the median by images/s.

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

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .compare import Tolerance, match_images
from .environment import environment, finish
from .imageio import annotated_images
from .memory import RssSampler
from .runner import Runner, RunReport
from .timing import interleave, median_run, spread

AP_KEYS = ("AP", "AP50", "AP75")


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


@dataclass(frozen=True)
class _Plan:
    """What every timed run of a sweep shares."""

    model_dir: str
    images: Sequence[str]
    runner_options: Mapping[str, Any]
    eval_ann: Optional[str]
    eval_images: Optional[Sequence[str]]
    eval_batch_sizes: Optional[Sequence[int]]
    progress: Optional[Callable[[str, int, int], None]]


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


def _bs1_aliases(configs: Sequence[SweepConfig], first_policy: str) -> Dict[str, str]:
    """At bs=1 every policy plans the same single-image batches (stride padding only): one
    of them is run and reported for all, rather than timing identical work again."""
    return {c.key: SweepConfig(c.backend, 1, first_policy, c.backend_options).key
            for c in configs if c.batch_size == 1 and c.policy != first_policy}


def _timed_run(plan: _Plan, cfg: SweepConfig, rnd: int, detections: Dict[str, Any]) -> Dict[str, Any]:
    """Warm up, time one run of ``cfg``; in round 0 keep its detections and add AP."""
    runner = Runner(plan.model_dir, backend=cfg.backend, backend_options=cfg.backend_options,
                    batch_size=cfg.batch_size, policy=cfg.policy, **plan.runner_options)
    try:
        warm_s = runner.warmup(plan.images)
        done = [0]

        def tick(k):
            done[0] += k
            if plan.progress:
                plan.progress(cfg.key, done[0], len(plan.images))

        with RssSampler() as mem:
            report = runner.run(plan.images, progress=tick)
        row = {"round": rnd, "warmup_s": warm_s, **summarize(report),
               "rss_start_mb": mem.start / 2**20, "rss_peak_mb": mem.peak / 2**20,
               "backend_desc": report.backend}
        if rnd == 0:
            detections[cfg.key] = [r.dets for r in report.results]
            if plan.eval_ann and (plan.eval_batch_sizes is None or cfg.batch_size in plan.eval_batch_sizes):
                from .coco_eval import coco_ap

                row.update(coco_ap(runner.run(plan.eval_images).results, plan.eval_ann,
                                   category_ids=runner.meta.category_ids))
    finally:
        runner.close()
    return row


def _row(cfg: SweepConfig, runs: List[Dict[str, Any]], alias: Optional[str],
         detections: Mapping[str, Any], tolerance: Tolerance) -> Dict[str, Any]:
    """The reported row of ``cfg``: its median run, all runs' images/s, AP, the match vs bs=1."""
    med = dict(median_run(runs, "images_per_s"))
    ips = [r["images_per_s"] for r in runs]
    med["images_per_s_runs"] = ips
    med["images_per_s_min"], med["images_per_s_max"] = spread(ips)["min"], spread(ips)["max"]
    if alias:
        med["same_run_as"] = alias
    med.update({k: runs[0][k] for k in AP_KEYS if k in runs[0]})
    ref_key = SweepConfig(cfg.backend, 1, "none", cfg.backend_options).key
    if ref_key in detections:
        m = match_images(detections[ref_key], detections[alias or cfg.key], tolerance)
        med.update(match_compared=m.compared, match_unmatched=m.unmatched,
                   match_max_score_diff=m.max_score_diff)
    return {"backend": cfg.backend, "options": dict(cfg.backend_options),
            "policy": cfg.policy, "batch_size": cfg.batch_size, **med}


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
            inline after each inference).
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
    aliases = _bs1_aliases(all_configs, policies[0])
    configs = {c.key: c for c in all_configs if c.key not in aliases}
    if eval_ann and eval_images is None:
        eval_images = annotated_images(eval_ann)
    plan = _Plan(model_dir, images, {"num_buckets": num_buckets, "workers": workers,
                                     "prefetch": prefetch, "post_thread": post_thread},
                 eval_ann, eval_images, eval_batch_sizes, progress)
    detections: Dict[str, Any] = {}
    runs = interleave(list(configs), lambda k, rnd: _timed_run(plan, configs[k], rnd, detections),
                      repeats)
    rows = [_row(c, runs[aliases.get(c.key, c.key)], aliases.get(c.key), detections, tolerance)
            for c in all_configs]
    return {"env": finish(env), "backend_options": backend_options,
            "settings": {"workers": workers, "prefetch": prefetch, "num_buckets": num_buckets,
                         "post_thread": post_thread,
                         "repeats": repeats, "eval_batch_sizes": eval_batch_sizes},
            "tolerance": tolerance.__dict__, "rows": rows, "runs": runs}
