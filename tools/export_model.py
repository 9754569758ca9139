"""Export a model to a Paddle static graph + infer_cfg.yml (raw outputs, no NMS).

ppdet's flags: --output_dir defaults to output_inference/<config name>/ (with --slim_config,
the slim config's name, as in ppdet); --slim_config exports a QAT model as INT8, a pruned
model at its pruned size, and runs post-training quantization for 'slim: PTQ'.
See docs/export_format.md for what the export directory holds.
"""
import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli
from ppdet_ext.engine.config import ConfigError

UNSUPPORTED = {"--export_serving_model": "Paddle Serving is not supported; the deploy runner "
                                         "(ppdet_ext_deploy) reads the export directory"}


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/export_model.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final",
        "python tools/export_model.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final --output_dir output/export/gfl_tiny",
        "python tools/export_model.py -c configs/rtdetrv2/rtdetrv2_r18vd_120e_coco.yml "
        "-o weights=W --input_shape 640 640 --with_postprocess",
        "python tools/export_model.py -c configs/gfl/gfl_tiny_coco_mini.yml --slim_config configs/slim/qat_gfl.yml "
        "-o weights=output/qat_gfl/model_final",
    ], unsupported=UNSUPPORTED)
    p.add_argument("--output_dir", default=None,
                   help="export directory (default output_inference/<config name>)")
    p.add_argument("--input_shape", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="fix the spatial size (default: from TestReader.inputs_def, else dynamic)")
    p.add_argument("--batch_size", type=int, default=-1, help="fixed batch size (-1: dynamic)")
    p.add_argument("--with_postprocess", action="store_true",
                   help="bake top-k post-processing into the graph (DETR models)")
    args = p.parse_args(argv)
    cfg, user = cli.load(args)
    out = args.output_dir or api.export_dir(cfg)
    slim = cli.slim_config(args)
    if slim is None:
        api.export(cfg, user, weights=cfg.get("weights"), output_dir=out,
                   input_shape=args.input_shape, batch_size=args.batch_size,
                   with_postprocess=args.with_postprocess)
    else:
        from ppdet_ext.slim import slim_runs
        if args.with_postprocess:
            p.error("--with_postprocess cannot be combined with --slim_config")
        try:
            slim_runs.export(cfg, user, slim, weights=cfg.get("weights"), output_dir=out,
                             input_shape=args.input_shape, batch_size=args.batch_size)
        except ConfigError as e:
            cli.fail(e)
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
