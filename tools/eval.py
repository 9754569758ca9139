"""Evaluate a checkpoint with COCO metrics: python tools/eval.py -c CONFIG -o weights=PATH"""
import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/eval.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final",
    ])
    p.add_argument("--output_json", default=None, help="metrics JSON (default run_dir/eval/metrics.json)")
    args = p.parse_args(argv)
    cfg, user = cli.load(args)
    if not cfg.get("weights"):
        p.error("no weights: pass -o weights=PATH")
    metrics = api.evaluate(cfg, user, weights=cfg["weights"], output_json=args.output_json)
    for key, stats in metrics.items():
        print(f"{key}: " + ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
