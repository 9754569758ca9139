"""Report a sweep (``deploy.benchmark.run_sweep``): policy ratios, CSV + JSON + PNG, tables."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Mapping, Sequence


TABLE_COLUMNS = (
    ("backend", "{}"), ("policy", "{}"), ("batch_size", "{}"), ("images_per_s", "{:.2f}"),
    ("waste_pct", "{:.1f}"), ("distinct_shapes", "{}"), ("infer_ms_per_image", "{:.1f}"),
    ("pre_ms_per_image", "{:.1f}"), ("post_ms_per_image", "{:.1f}"),
    ("batch_latency_p50_ms", "{:.0f}"), ("batch_latency_p99_ms", "{:.0f}"),
    ("image_latency_p50_ms", "{:.0f}"), ("image_latency_p99_ms", "{:.0f}"),
    ("rss_peak_mb", "{:.0f}"), ("match_unmatched", "{}"), ("AP", "{:.4f}"),
)


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


def _flat(row: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, (dict, list, tuple)):
            v = json.dumps(v, sort_keys=True)
        out[k] = v
    return out


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    flat = [_flat(r) for r in rows]
    keys: List[str] = []
    for r in flat:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)


def write_json(path: str, result: Mapping[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False, default=str)


def write_plot(path: str, rows: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """images/s and padded-pixel % vs batch size, one line per (backend, policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["-", "--", ":", "-."]
    backends = sorted({r["backend"] for r in rows})
    for bi, be in enumerate(backends):
        for pol in sorted({r["policy"] for r in rows if r["backend"] == be}):
            sel = sorted((r for r in rows if r["backend"] == be and r["policy"] == pol),
                         key=lambda r: r["batch_size"])
            bs = [r["batch_size"] for r in sel]
            label = pol if len(backends) == 1 else f"{be} {pol}"
            ax1.plot(bs, [r["images_per_s"] for r in sel], styles[bi % 4], marker="o", label=label)
            ax2.plot(bs, [r["waste_pct"] for r in sel], styles[bi % 4], marker="o", label=label)
    for ax, yl in ((ax1, "images / s"), (ax2, "padded pixels (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend()
    ax2.set_ylim(bottom=0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cells(row: Mapping[str, Any], cols, missing: str) -> List[str]:
    """One row's values formatted per column (``missing`` for absent values)."""
    out = []
    for c, f in cols:
        v = row.get(c)
        try:
            out.append(missing if v is None else f.format(v))
        except (ValueError, TypeError):
            out.append(str(v))
    return out


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = [(c, f) for c, f in TABLE_COLUMNS if any(c in r for r in rows)]
    cells = [[c for c, _ in cols]] + [_cells(r, cols, "-") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    out = ["  ".join(s.rjust(w) for s, w in zip(row, widths)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    rat = ratios(rows, 8)
    if rat:
        out.append("")
        out.append("images/s ratio vs none at bs=8 (same run): " +
                   ", ".join(f"{k} {v:.2f}x" for k, v in rat.items()))
    return "\n".join(out)


def write_all(out_prefix: str, result: Mapping[str, Any], title: str = "") -> Dict[str, str]:
    """``<prefix>.csv``, ``<prefix>.json``, ``<prefix>.png``; returns the paths."""
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    paths = {ext: f"{out_prefix}.{ext}" for ext in ("csv", "json", "png")}
    write_csv(paths["csv"], result["rows"])
    write_json(paths["json"], result)
    write_plot(paths["png"], result["rows"], title)
    return paths


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as GitHub markdown (for docs/batching.md)."""
    cols = [(c, f) for c, f in TABLE_COLUMNS if any(c in r for r in rows) and c != "backend"]
    out = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cells(r, cols, "")) + " |")
    return "\n".join(out)
