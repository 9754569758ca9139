"""FP32 vs INT8 on the same machine in one process: COCO AP and images/s, interleaved.

Every setting is a ``(label, export_dir, backend, options)``; all are loaded first, then
each round runs them one after the other on the same images, so a background load hits
them alike. Speed ratios are taken within a round; report them, not absolute times.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ppdet_ext_deploy import Runner
from ppdet_ext_deploy.compare import correlation
from ppdet_ext_deploy.timing import interleave, round_ratios, spread


@dataclass
class Setting:
    label: str
    model_dir: str
    backend: str = "paddle-cpu"
    options: Mapping[str, Any] = field(default_factory=dict)


def output_correlation(ref_runner, runner, batches: Sequence[np.ndarray]) -> Dict[str, float]:
    """Pearson correlation of raw graph outputs (per output, all batches concatenated)."""
    refs = [ref_runner.backend.infer(x) for x in batches]
    gots = [runner.backend.infer(x) for x in batches]
    flat = lambda outs, i: np.concatenate([np.asarray(o[i]).ravel() for o in outs])  # noqa: E731
    return {f"corr_{i}": correlation(flat(gots, i), flat(refs, i)) for i in range(len(refs[0]))}


def _load(settings: Sequence[Setting], threads: int, warm_images: Sequence[str]) -> List[Runner]:
    runners = []
    for s in settings:
        opts = dict(s.options)
        if threads and s.backend.startswith(("paddle-cpu", "onnxruntime")):
            opts.setdefault("threads", threads)
        r = Runner(s.model_dir, backend=s.backend, backend_options=opts, batch_size=1)
        r.warmup(warm_images)
        runners.append(r)
    return runners


def _add_ap(rows, runners, eval_images, ann_file, log) -> None:
    from ppdet_ext_deploy.coco_eval import coco_ap

    for row, r in zip(rows, runners):
        t = time.perf_counter()
        rep = r.run(eval_images)
        row.update(coco_ap(rep.results, ann_file, category_ids=r.meta.category_ids))
        row["eval_images"] = rep.images_ok
        row["eval_errors"] = len(rep.errors)
        log(f"[AP] {row['label']}: AP {row['AP']:.4f} ({time.perf_counter() - t:.0f}s)")


def _add_speed(rows, runners, time_images, rounds, log) -> None:
    """images/s (whole pipeline) and inference-only images/s of each setting, interleaved."""
    def run(k, rnd):
        rep = runners[k].run(time_images)
        infer = sum(b.infer_s for b in rep.timings)
        log(f"[speed] round {rnd}: {rows[k]['label']} {rep.images_per_s:.2f} img/s")
        return rep.images_per_s, rep.images_ok / infer if infer else 0.0

    runs = interleave(range(len(rows)), run, rounds)
    for k, row in enumerate(rows):
        ips, infer_ips = ([r[i] for r in runs[k]] for i in (0, 1))
        ref_ips, ref_infer = ([r[i] for r in runs[0]] for i in (0, 1))
        row["images_per_s_runs"] = ips
        row["images_per_s"] = spread(ips)["median"]
        row["infer_only_images_per_s"] = spread(infer_ips)["median"]
        row["speedup_vs_first"] = spread(round_ratios(ips, ref_ips))["median"]
        row["infer_speedup_vs_first"] = spread(round_ratios(infer_ips, ref_infer))["median"]
        row["time_images"] = len(time_images)
        row["rounds"] = rounds


def compare(settings: Sequence[Setting], *, eval_images: Sequence[str], ann_file: Optional[str],
            time_images: Sequence[str], rounds: int = 3, threads: int = 0,
            corr_batches: Sequence[np.ndarray] = (), log=print) -> List[Dict[str, Any]]:
    """AP (once, on ``eval_images``) and images/s (median of ``rounds`` interleaved runs
    over ``time_images``) per setting; ``speedup`` is relative to the first setting within
    each round (median over rounds)."""
    runners = _load(settings, threads, time_images[:1])
    rows = [{"label": s.label, "model_dir": s.model_dir, "backend": s.backend,
             "options": dict(s.options), "backend_desc": r.backend.describe()}
            for s, r in zip(settings, runners)]
    if corr_batches:
        for row, r in zip(rows, runners):
            row.update(output_correlation(runners[0], r, corr_batches))
    if ann_file:
        _add_ap(rows, runners, eval_images, ann_file, log)
    _add_speed(rows, runners, time_images, rounds, log)
    for r in runners:
        r.close()
    return rows


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("| setting | backend | AP | AP50 | images/s | speed vs first | infer-only speed vs first "
            "| corr(scores) |\n|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        ap = f"{r['AP']:.4f}" if "AP" in r else "–"
        ap50 = f"{r['AP50']:.4f}" if "AP50" in r else "–"
        corr = f"{r['corr_0']:.4f}" if "corr_0" in r else "–"
        body += (f"| {r['label']} | {r['backend']} | {ap} | {ap50} | {r['images_per_s']:.2f} | "
                 f"{r['speedup_vs_first']:.2f}x | {r['infer_speedup_vs_first']:.2f}x | {corr} |\n")
    return head + body
