"""Per-layer INT8 sensitivity of an exported static graph on a calibration set.

For every quantizable layer (conv2d / depthwise_conv2d, named by its weight variable), the
graph runs with *only that layer* in simulated INT8 (weights per channel, input per tensor,
:mod:`.fakequant`), and the error of the graph outputs against FP32 is recorded. Layers are
ranked by that error; then a greedy skip-list sweep quantizes *everything except the top-k*
layers for growing k, so a user sees how many layers must stay in float to reach a target.

Errors are relative L2 over the calibration set, per graph output
(``||y_q - y||_2 / ||y||_2``), plus the cosine similarity of the first output (the class
scores for ``dense`` exports). Summary rows: all layers quantized, weights only, inputs only.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ppdet_ext_deploy.compare import cosine, rel_l2

from .fakequant import program_with_act_quant, quantized_weights
from .static_graph import QuantLayer, StaticModel, in_static_mode

ACT_METHODS = ("abs_max", "percentile")


@in_static_mode
def act_scales(model: StaticModel, layers: Sequence[QuantLayer], batches: Sequence[np.ndarray],
               method: str = "abs_max", percentile: float = 99.99) -> Dict[str, float]:
    """Per-tensor activation scale of every layer input over ``batches``.

    ``abs_max``: max |x| over all batches. ``percentile``: mean over batches of the given
    percentile of |x| (robust to outliers, like PTQ's ``hist``).
    """
    if method not in ACT_METHODS:
        raise ValueError(f"method must be one of {ACT_METHODS}, got {method!r}")
    names = sorted({l.input for l in layers})
    per: Dict[str, List[float]] = {n: [] for n in names}
    for x in batches:
        vals = model.run(x, extra_fetch=names)[len(model.fetch_names):]
        for n, v in zip(names, vals):
            a = np.abs(v)
            per[n].append(float(a.max()) if method == "abs_max" else float(np.percentile(a, percentile)))
    return {n: (max(v) if method == "abs_max" else float(np.mean(v))) for n, v in per.items()}


def output_error(ref: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> Dict[str, float]:
    """``rel_l2_<i>`` per output (over all batches), their mean ``err``, and ``score_cos``."""
    out: Dict[str, float] = {}
    errs = []
    for i in range(len(ref[0])):
        r = np.concatenate([np.asarray(b[i], np.float64).ravel() for b in ref])
        g = np.concatenate([np.asarray(b[i], np.float64).ravel() for b in got])
        e = rel_l2(g, r)
        out[f"rel_l2_{i}"] = e
        errs.append(e)
        if i == 0:
            out["score_cos"] = cosine(g, r)
    out["err"] = float(np.mean(errs))
    return out


@dataclass
class SensitivityReport:
    """Result of :func:`analyze` (JSON-serialisable via :meth:`to_dict`)."""

    model_dir: str
    calib_images: int
    act_method: str
    layers: List[Dict] = field(default_factory=list)      # ranked, most sensitive first
    summary: Dict[str, Dict] = field(default_factory=dict)  # all / weights_only / acts_only
    skip_sweep: List[Dict] = field(default_factory=list)   # k, skipped layers, error
    seconds: float = 0.0

    def to_dict(self) -> Dict:
        return asdict(self)

    def skip_list(self, k: int) -> List[str]:
        """The ``k`` most sensitive layers (weight names): pass to PTQ ``skip_layers``."""
        return [l["name"] for l in self.layers[:k]]

    def suggest(self, max_err: float) -> List[str]:
        """Smallest swept skip-list whose all-other-layers-INT8 error is <= ``max_err``."""
        for row in self.skip_sweep:
            if row["err"] <= max_err:
                return list(row["skipped"])
        return list(self.skip_sweep[-1]["skipped"]) if self.skip_sweep else []

    def to_markdown(self, top: int = 20) -> str:
        lines = [f"# INT8 sensitivity: `{self.model_dir}`", "",
                 f"{self.calib_images} calibration images, activation scales: {self.act_method}; "
                 "error = relative L2 of the graph outputs vs FP32 (mean over outputs); "
                 "score_cos = cosine of the score output.", "",
                 "| setting | err | score_cos |", "|---|---|---|"]
        for k, v in self.summary.items():
            lines.append(f"| {k} | {v['err']:.4f} | {v['score_cos']:.4f} |")
        lines += ["", f"## Most sensitive layers (only that layer INT8), top {top} of {len(self.layers)}",
                  "", "| rank | layer (weight) | op | shape | err | score_cos |", "|---|---|---|---|---|---|"]
        for i, l in enumerate(self.layers[:top]):
            lines.append(f"| {i + 1} | `{l['name']}` | {l['op_type']} | {l['weight_shape']} | "
                         f"{l['err']:.4f} | {l['score_cos']:.4f} |")
        lines += ["", "## Skip-list sweep (top-k layers kept in float, all others INT8)", "",
                  "| k | err | score_cos |", "|---|---|---|"]
        for row in self.skip_sweep:
            lines.append(f"| {row['k']} | {row['err']:.4f} | {row['score_cos']:.4f} |")
        return "\n".join(lines) + "\n"

    def save(self, json_path: str, md_path: Optional[str] = None) -> None:
        with open(json_path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        if md_path:
            with open(md_path, "w") as f:
                f.write(self.to_markdown())


def _run_all(model: StaticModel, batches, program=None):
    return [model.run(x, program=program)[: len(model.fetch_names)] for x in batches]


@in_static_mode
def analyze(model_dir: str, batches: Sequence[np.ndarray], *, act_method: str = "abs_max",
            skip_ks: Sequence[int] = (0, 1, 2, 4, 8, 16), layers_limit: Optional[int] = None,
            progress: Optional[Callable[[int, int], None]] = None) -> SensitivityReport:
    """Rank the quantizable layers of an export by INT8 sensitivity.

    Args:
        model_dir: FP32 export directory.
        batches: Preprocessed calibration inputs ``[1, 3, H, W]`` (:mod:`.calib`).
        act_method: Activation scale rule (:data:`ACT_METHODS`).
        skip_ks: Skip-list sizes for the greedy sweep.
        layers_limit: Analyse only the first N layers (tests).
        progress: ``progress(done, total)`` after each layer.
    """
    t0 = time.perf_counter()
    batches = list(batches)
    model = StaticModel(model_dir)
    layers = model.layers()
    if layers_limit:
        layers = layers[:layers_limit]
    if not layers:
        raise ValueError(f"{model_dir}: no quantizable layers (conv2d/depthwise_conv2d)")
    scales = act_scales(model, layers, batches, act_method)
    ref = _run_all(model, batches)
    # one entry per weight: ops sharing a weight (a head applied to every FPN level) are
    # quantized and skipped together, as PTQ's skip-list (by input name) does
    groups: Dict[str, List[QuantLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.name, []).append(layer)
    wcache: Dict[str, np.ndarray] = {}
    rows = []
    for i, (name, ops) in enumerate(groups.items()):
        prog = program_with_act_quant(model, ops, scales)
        with quantized_weights(model, ops[:1], wcache):
            e = output_error(ref, _run_all(model, batches, prog))
        rows.append({"name": name, "op_type": ops[0].op_type, "op_index": ops[0].op_index,
                     "uses": len(ops), "weight_shape": list(ops[0].weight_shape),
                     "act_scale": max(scales[l.input] for l in ops), **e})
        if progress:
            progress(i + 1, len(groups))
    rows.sort(key=lambda r: -r["err"])
    firsts = [ops[0] for ops in groups.values()]
    summary = {}
    prog_all = program_with_act_quant(model, layers, scales)
    with quantized_weights(model, firsts, wcache):
        summary["all layers INT8"] = output_error(ref, _run_all(model, batches, prog_all))
    with quantized_weights(model, firsts, wcache):
        summary["weights only"] = output_error(ref, _run_all(model, batches))
    summary["activations only"] = output_error(ref, _run_all(model, batches, prog_all))
    sweep = []
    for k in skip_ks:
        if k > len(rows):
            break
        skipped = [r["name"] for r in rows[:k]]
        keep_names = [r["name"] for r in rows[k:]]
        keep = [l for n in keep_names for l in groups[n]]
        prog = program_with_act_quant(model, keep, scales)
        with quantized_weights(model, [groups[n][0] for n in keep_names], wcache):
            e = output_error(ref, _run_all(model, batches, prog))
        sweep.append({"k": k, "skipped": skipped, **e})
    return SensitivityReport(model_dir=model_dir, calib_images=len(batches), act_method=act_method,
                             layers=rows, summary=summary, skip_sweep=sweep,
                             seconds=time.perf_counter() - t0)
