"""Export a model to a Paddle static graph + infer_cfg.yml (raw outputs, no NMS).

See docs/export_format.md for what the export directory holds.
"""
import ppdet_ext  # noqa: F401
from ppdet_ext.engine import api, cli


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/export_model.py -c configs/gfl/gfl_tiny_coco_mini.yml "
        "-o weights=output/gfl_tiny_coco_mini/model_final --output_dir output/export/gfl_tiny",
        "python tools/export_model.py -c configs/rtdetrv2/rtdetrv2_r18vd_120e_coco.yml "
        "-o weights=W --input_shape 640 640 --with_postprocess",
    ])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--input_shape", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="fix the spatial size (default: from TestReader.inputs_def, else dynamic)")
    p.add_argument("--batch_size", type=int, default=-1, help="fixed batch size (-1: dynamic)")
    p.add_argument("--with_postprocess", action="store_true",
                   help="bake top-k post-processing into the graph (DETR models)")
    args = p.parse_args(argv)
    cfg, user = cli.load(args)
    api.export(cfg, user, weights=cfg.get("weights"), output_dir=args.output_dir,
               input_shape=args.input_shape, batch_size=args.batch_size,
               with_postprocess=args.with_postprocess)
    print(f"outputs: {args.output_dir}")


if __name__ == "__main__":
    main()
