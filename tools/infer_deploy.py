"""Detect on image files with an exported model: thin CLI over ``deploy.Runner``.

Examples:
  python tools/infer_deploy.py --model output/export/picodet_s_416_coco_ext \\
      --images dataset/coco_mini/images --batch-size 8 --policy buckets --out /tmp/dets.json

  python tools/infer_deploy.py --model output/export/gfl_tiny --images a.jpg b.png \\
      --backend onnxruntime --score 0.3 --strict

Writes one JSON record per image (caller's order): file, detections
``[class_id, label, score, x1, y1, x2, y2]`` in original pixels, error, notes. Files that cannot
be used are reported by name and the others still run; ``--strict`` makes any such file a
non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import sys

import ppdet_ext_deploy  # noqa: F401  (zlib before paddle)
from ppdet_ext_deploy.formats import FORMATS
from ppdet_ext_deploy.imageio import list_images
from ppdet_ext_deploy.planner import POLICIES
from ppdet_ext_deploy.runner import Runner


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export directory")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--backend", default="paddle-cpu", choices=[f.name for f in FORMATS])
    p.add_argument("--threads", type=int, default=None, help="inference threads (backend default if unset)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--policy", default="buckets", choices=POLICIES)
    p.add_argument("--workers", type=int, default=2, help="decode/preprocess threads")
    p.add_argument("--score", type=float, default=0.0, help="drop detections below this score in the output")
    p.add_argument("--out", default=None, help="write detections JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 if any image could not be used")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = list_images(args.images, require=False)  # missing files are reported by the runner
    opts = {"threads": args.threads} if args.threads is not None else None
    runner = Runner(args.model, backend=args.backend, backend_options=opts, batch_size=args.batch_size,
                    policy=args.policy, workers=args.workers)
    rep = runner.run(paths)
    labels = list(runner.meta.label_list)
    records = []
    for r in rep.results:
        dets = [[int(c), labels[int(c)] if int(c) < len(labels) else str(int(c)), round(s, 5),
                 *[round(v, 2) for v in box]] for c, s, *box in r.dets.tolist() if s >= args.score]
        records.append({"file": r.path, "detections": dets, "error": r.error, "notes": r.notes})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    n_det = sum(len(r["detections"]) for r in records)
    print(f"{rep.images_ok}/{len(paths)} images, {n_det} detections, {rep.images_per_s:.2f} images/s, "
          f"padding {100 * rep.plan.waste_fraction if rep.plan else 0:.1f}%")
    for path, err in rep.errors:
        print(f"ERROR {err}", file=sys.stderr)
    if args.strict and rep.errors:
        return 1
    return 0 if rep.images_ok or not paths else 1


if __name__ == "__main__":
    sys.exit(main())
