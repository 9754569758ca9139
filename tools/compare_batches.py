"""Check that batching does not change a model's detections: bs = 1 vs bs = N per policy.

Examples:
  python tools/compare_batches.py --model output/export/gfl_tiny_800x1333 \\
      --images ../shared/data/coco_bench600/images --limit 24 --batch-size 8 \\
      --policies none buckets --min-score 0.05 --out /tmp/gfl_match.json

Runs the images once with policy ``none`` at bs = 1 (the reference) and once per policy at
``--batch-size``, then matches each image's detections both ways under the stated tolerance
(``deploy/compare.py``): every detection scoring >= ``--min-score`` needs a same-class partner
with IoU >= ``--iou-min`` and |Δscore| <= ``--score-tol``; one within ``--score-tol`` of the
threshold may be missing on the other side. Prints one JSON line per policy, writes them to
``--out``, and exits 1 when any detection is unmatched or any image failed.
"""
from __future__ import annotations

import argparse
import json
import sys

import ppdet_ext_deploy  # noqa: F401  (zlib before paddle)
from ppdet_ext_deploy.compare import Tolerance, match_images
from ppdet_ext_deploy.formats import FORMATS
from ppdet_ext_deploy.imageio import list_images
from ppdet_ext_deploy.planner import POLICIES
from ppdet_ext_deploy.runner import Runner


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export directory")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (by name)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--policies", nargs="+", default=["none", "buckets"], choices=POLICIES)
    p.add_argument("--backend", default="paddle-cpu", choices=[f.name for f in FORMATS])
    p.add_argument("--threads", type=int, default=None, help="inference threads (backend default if unset)")
    p.add_argument("--min-score", type=float, default=0.05)
    p.add_argument("--score-tol", type=float, default=1e-3)
    p.add_argument("--iou-min", type=float, default=0.99)
    p.add_argument("--out", default=None, help="write the JSON rows here")
    return p.parse_args(argv)


def _run(args, paths, batch_size, policy):
    opts = {"threads": args.threads} if args.threads is not None else None
    runner = Runner(args.model, backend=args.backend, backend_options=opts,
                    batch_size=batch_size, policy=policy)
    try:
        return runner.run(paths)
    finally:
        runner.close()


def _dets(report):
    """Each image's detections, ``None`` where it failed (skipped by the match)."""
    return [r.dets if r.ok else None for r in report.results]


def main(argv=None) -> int:
    args = parse_args(argv)
    tol = Tolerance(min_score=args.min_score, score_tol=args.score_tol, iou_min=args.iou_min,
                    margin=args.score_tol)
    paths = list_images(args.images, args.limit)
    ref = _run(args, paths, 1, "none")
    rows, ok = [], not ref.errors
    for policy in args.policies:
        got = _run(args, paths, args.batch_size, policy)
        match = match_images(_dets(ref), _dets(got), tol)
        row = {"model": args.model, "backend": args.backend, "batch_size": args.batch_size,
               "policy": policy, "images": len(ref.results), "errors": len(got.errors),
               "waste_pct": round(100 * got.plan.waste_fraction, 2),
               "dets_bs1": int(sum(len(r.dets) for r in ref.results)),
               **match.as_dict(), "tolerance": vars(tol)}
        ok = ok and match.ok and not got.errors
        rows.append(row)
        print(json.dumps(row))
    for path, reason in ref.errors:
        print(f"{path}: {reason}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
