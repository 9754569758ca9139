"""Op reports: rknn-toolkit2's build-log layer table -> NPU/CPU counts per op type."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Dict, List

_ROW = re.compile(r"^D RKNN: \[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(NPU|CPU)\s+(.*)$")


def parse_op_table(log_text: str) -> List[Dict[str, Any]]:
    """Rows of rknn-toolkit2's layer table: ``id``, ``op``, ``dtype``, ``target``, ``name``."""
    rows, on = [], False
    for line in log_text.splitlines():
        if re.search(r"\bID\s+OpType\s+DataType\s+Target\b", line):
            rows, on = [], True  # keep the last table of the log
            continue
        if on:
            m = _ROW.match(line.rstrip())
            if m:
                rows.append({"id": int(m.group(1)), "op": m.group(2), "dtype": m.group(3),
                             "target": m.group(4), "name": m.group(5).split()[-1]})
            elif rows and "----" not in line:
                on = False
    return rows


def summarize_ops(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts per target and op type; the CPU fallbacks by name (I/O operators left out)."""
    io = {"InputOperator", "OutputOperator"}
    body = [r for r in rows if r["op"] not in io]
    by = Counter((r["target"], r["op"]) for r in body)
    return {
        "layers": len(body),
        "npu_layers": sum(r["target"] == "NPU" for r in body),
        "cpu_layers": sum(r["target"] == "CPU" for r in body),
        "npu_ops": dict(sorted((op, n) for (t, op), n in by.items() if t == "NPU")),
        "cpu_ops": dict(sorted((op, n) for (t, op), n in by.items() if t == "CPU")),
        "cpu_fallbacks": [f'{r["op"]} ({r["name"]})' for r in body if r["target"] == "CPU"],
        "dtypes": dict(Counter(r["dtype"] for r in body)),
        # hybrid builds add exDataConvert layers at each int8 <-> fp16 boundary
        "data_converts": sum(r["op"] == "exDataConvert" for r in body),
        "dtypes_compute": dict(Counter(r["dtype"] for r in body if r["op"] != "exDataConvert")),
    }


def op_report_markdown(summary: Dict[str, Any], title: str, command: str = "") -> str:
    lines = [f"# RKNN op report: {title}", ""]
    if command:
        lines += ["Built with:", "", "```", command, "```", ""]
    lines += [f"Layers: {summary['layers']} — NPU {summary['npu_layers']}, "
              f"CPU {summary['cpu_layers']} (from rknn-toolkit2's build-log layer table; "
              "input/output operators not counted). Data types: "
              + ", ".join(f"{k} {v}" for k, v in summary["dtypes"].items())
              + ("" if not summary.get("data_converts") else
                 f"; without the {summary['data_converts']} exDataConvert (int8 <-> fp16) "
                 "layers: " + ", ".join(f"{k} {v}" for k, v in
                                       summary["dtypes_compute"].items())), "",
              "| op | NPU | CPU |", "|---|---|---|"]
    ops = sorted(set(summary["npu_ops"]) | set(summary["cpu_ops"]))
    lines += [f"| {op} | {summary['npu_ops'].get(op, 0)} | {summary['cpu_ops'].get(op, 0)} |"
              for op in ops]
    lines += ["", "CPU fallbacks: " + (", ".join(summary["cpu_fallbacks"]) or "none"), ""]
    return "\n".join(lines)


# -- worker side (runs under the rknn venv) ----------------------------------------------------


def merge_reports(reports: List[Dict[str, Any]]) -> Dict[str, Any]:
    if len(reports) == 1:
        return reports[0]
    out: Dict[str, Any] = {"layers": 0, "npu_layers": 0, "cpu_layers": 0, "npu_ops": Counter(),
                           "cpu_ops": Counter(), "cpu_fallbacks": [], "dtypes": Counter(),
                           "data_converts": 0, "dtypes_compute": Counter()}
    for r in reports:
        for k in ("layers", "npu_layers", "cpu_layers", "data_converts"):
            out[k] += r.get(k, 0)
        for k in ("npu_ops", "cpu_ops", "dtypes", "dtypes_compute"):
            out[k].update(r.get(k, {}))
        out["cpu_fallbacks"] += r["cpu_fallbacks"]
    for k in ("npu_ops", "cpu_ops", "dtypes", "dtypes_compute"):
        out[k] = dict(sorted(out[k].items()))
    return out
