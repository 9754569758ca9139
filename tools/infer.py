"""Detect objects in images and draw the boxes.

python tools/infer.py -c CONFIG -o weights=PATH --infer_img a.jpg --infer_dir imgs/
Unreadable images are reported by name and skipped; the exit code is 1 if any was.
"""
import sys

import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/infer.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final --infer_dir dataset/coco_mini/images",
    ])
    p.add_argument("--infer_img", nargs="*", default=[], help="image file(s)")
    p.add_argument("--infer_dir", nargs="*", default=[], help="folder(s) of images")
    p.add_argument("--output_dir", default="output/infer")
    p.add_argument("--draw_threshold", type=float, default=0.5)
    args = p.parse_args(argv)
    cfg, _ = cli.load(args)
    if not cfg.get("weights"):
        p.error("no weights: pass -o weights=PATH")
    inputs = list(args.infer_img) + list(args.infer_dir)
    if not inputs:
        p.error("nothing to do: pass --infer_img and/or --infer_dir")
    results, errors = api.infer(cfg, weights=cfg["weights"], inputs=inputs,
                                output_dir=args.output_dir, threshold=args.draw_threshold)
    for e in errors:
        print(f"skipped {e['file']}: {e['problem']}", file=sys.stderr)
    print(f"outputs: {args.output_dir} ({len(results)} images, {len(errors)} skipped)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
