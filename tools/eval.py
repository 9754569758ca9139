"""Evaluate a checkpoint with COCO metrics: python tools/eval.py -c CONFIG -o weights=PATH

ppdet's flags, with ppdet's meanings; every output goes under --output_eval (default
<run dir>/eval): bbox.json, metrics.json and, with --classwise, the per-category AP table
(classwise_ap.txt / .json) and precision-recall curves (bbox_pr_curve/).
"""
import os

import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli

SLICE = "sliced inference for small objects is not wired into our tools"
UNSUPPORTED = {"--slice_infer": SLICE, "--slice_size": SLICE, "--overlap_ratio": SLICE,
               "--combine_method": SLICE, "--match_threshold": SLICE, "--match_metric": SLICE}


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/eval.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final",
        "python tools/eval.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final --classwise",
        "python tools/eval.py -c configs/gfl/gfl_tiny_coco_mini.yml --slim_config configs/slim/qat_gfl.yml "
        "-o weights=output/qat_gfl/model_final",
    ], unsupported=UNSUPPORTED)
    p.add_argument("--classwise", action="store_true",
                   help="per-category AP table (printed and saved) and PR curves, under --output_eval")
    p.add_argument("--output_eval", default=None,
                   help="evaluation output dir (default <run dir>/eval; ppdet's: current dir)")
    p.add_argument("--json_eval", action="store_true",
                   help="evaluate the bbox.json already in --output_eval instead of running the model")
    p.add_argument("--save_prediction_only", action="store_true",
                   help="write bbox.json only, compute no AP")
    p.add_argument("--bias", action="store_true", help="ppdet's +1 on box width/height")
    p.add_argument("--amp", action="store_true", help="mixed-precision evaluation (GPU)")
    p.add_argument("--output_json", default=None,
                   help="metrics JSON (default <output_eval>/metrics.json)")
    args = p.parse_args(argv)
    cfg, user = cli.load(args)
    for key in ("output_eval", "save_prediction_only", "bias", "amp"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    if args.json_eval:
        found = os.path.join(cfg.get("output_eval") or os.path.join(api.run_dir(cfg), "eval"),
                             "bbox.json")
        if not os.path.isfile(found):
            p.error(f"--json_eval: no {found} (set --output_eval to the folder holding bbox.json)")
        metrics = api.evaluate_json(cfg, user, classwise=args.classwise,
                                    output_json=args.output_json)
    else:
        if not cfg.get("weights"):
            p.error("no weights: pass -o weights=PATH")
        model = cli.slim_model(args, cfg)
        metrics = api.evaluate(cfg, user, weights=cfg["weights"], output_json=args.output_json,
                               classwise=args.classwise, model=model)
    for key, stats in metrics.items():
        print(f"{key}: " + ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
