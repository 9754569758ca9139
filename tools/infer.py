"""Detect objects in images and draw the boxes.

python tools/infer.py -c CONFIG -o weights=PATH --infer_img a.jpg --infer_dir imgs/
ppdet's flags, with ppdet's meanings (--infer_img and --infer_dir also take several paths).
Writes into --output_dir (default <run dir>/infer): the drawn images, results.json, and with
--save_results ppdet's bbox.json (COCO format: image_id, category_id, bbox xywh, score).
Unreadable images are reported by name and skipped; the exit code is 1 if any was.
"""
import os
import sys

import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli

SLICE = "sliced inference for small objects is not wired into our tools"
UNSUPPORTED = {
    "--use_vdl": "drawn images go to --output_dir, not to VisualDL",
    "--vdl_log_dir": "drawn images go to --output_dir, not to VisualDL",
    "--slice_infer": SLICE, "--slice_size": SLICE, "--overlap_ratio": SLICE,
    "--combine_method": SLICE, "--match_threshold": SLICE, "--match_metric": SLICE,
}


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/infer.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final --infer_dir dataset/coco_mini/images",
        "python tools/infer.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final "
        "--infer_img dataset/coco_mini/images/000000000139.jpg --save_results --visualize False",
    ], unsupported=UNSUPPORTED)
    p.add_argument("--infer_img", nargs="*", default=[], help="image file(s)")
    p.add_argument("--infer_dir", nargs="*", default=[], help="folder(s) of images")
    p.add_argument("--output_dir", default=None,
                   help="output folder (default <run dir>/infer; ppdet's: output)")
    p.add_argument("--draw_threshold", type=float, default=0.5,
                   help="score threshold for drawn boxes and results.json")
    cli.add_switch(p, "--save_results", "also write bbox.json (COCO results, every detection)")
    p.add_argument("--visualize", nargs="?", const=True, default=True, type=cli.parse_bool,
                   metavar="BOOL", help="draw the boxes into images (default true)")
    args = p.parse_args(argv)
    cfg, _ = cli.load(args)
    if not cfg.get("weights"):
        p.error("no weights: pass -o weights=PATH")
    inputs = list(args.infer_img) + list(args.infer_dir)
    if not inputs:
        p.error("nothing to do: pass --infer_img and/or --infer_dir")
    model = cli.slim_model(args, cfg)
    out = args.output_dir or os.path.join(api.run_dir(cfg), "infer")
    results, errors = api.infer(cfg, weights=cfg["weights"], inputs=inputs, output_dir=out,
                                threshold=args.draw_threshold, save_results=args.save_results,
                                visualize=args.visualize, model=model)
    for e in errors:
        print(f"skipped {e['file']}: {e['problem']}", file=sys.stderr)
    print(f"outputs: {out} ({len(results)} images, {len(errors)} skipped)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
