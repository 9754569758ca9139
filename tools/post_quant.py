"""Post-training quantization from a config and its weights, ppdet's tool and flags:

python tools/post_quant.py -c CONFIG --slim_config PTQ_CONFIG [-o weights=PATH]

Exports FP32 (<output_dir>_fp32, BN folded into <output_dir>_fp32_bnfold with PTQ.fuse),
calibrates on the first PTQ.quant_batch_num x EvalReader.batch_size EvalDataset images and
writes the INT8 export directory (default output_inference/<slim config name>/), which the
deploy runner loads (--backend paddle-cpu-int8 for oneDNN INT8). Export directories only:
tools/quant.py ptq.
"""
import os

import ppdet_ext  # noqa: F401  (zlib-before-paddle; must come first)
from ppdet_ext.engine import api, cli
from ppdet_ext.engine.config import ConfigError


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/post_quant.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "--slim_config configs/slim/ptq_hist.yml -o weights=output/gfl_tiny_coco_mini/model_final",
    ])
    p.add_argument("--output_dir", default=None,
                   help="INT8 export directory (default <PTQ.output_dir, else output_inference>/"
                        "<slim config name>)")
    args = p.parse_args(argv)
    if not args.slim_config:
        p.error("--slim_config is required (a 'slim: PTQ' config)")
    cfg, user = cli.load(args)
    slim = cli.slim_config(args)
    from ppdet_ext.slim import slim_runs
    out = args.output_dir or api.export_dir(cfg)
    if not args.output_dir and slim.method == "PTQ" and slim.settings.output_dir:
        out = os.path.join(slim.settings.output_dir, cfg["filename"])  # ppdet's PTQ.output_dir
    try:
        res = slim_runs.post_quant(cfg, user, slim, weights=cfg.get("weights"), output_dir=out)
    except ConfigError as e:
        cli.fail(e)
    print(f"INT8 export: {out} ({res.quantized_layers} layers INT8, "
          f"{len(res.calib_files)} calibration images)")


if __name__ == "__main__":
    main()
