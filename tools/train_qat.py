"""Quantization-aware training: load a config + FP32 weights, insert fake-quant ops
(configs/slim/qat_*.yml), fine-tune with the usual trainer, export an INT8 graph that the
deploy runner loads (``--backend paddle-cpu``; oneDNN INT8: --backend paddle-cpu-int8).

tools/train.py --slim_config does the same the ppdet way (run named after the slim config,
INT8 export in <run dir>/qat_export, ppdet's QAT layout accepted by both).
"""
import ppdet_ext  # noqa: F401  (first: zlib-before-paddle, registers modules)

import os

from ppdet_ext.engine import api, cli
from ppdet_ext.slim.qat import count_quantized, train_qat


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/train_qat.py -c configs/gfl/gfl_tiny_coco_mini.yml --slim_config "
        "configs/slim/qat_gfl.yml -o epoch=1 TrainDataset.sample_num=8 TrainReader.batch_size=2 "
        "--output_dir output/quant/gfl_tiny_qat",
        "python tools/train_qat.py -c configs/picodet/picodet_s_416_coco_ext.yml --slim_config "
        "configs/slim/qat_gfl.yml -o weights=output/weights/picodet_s_416_coco epoch=1",
    ])
    p.add_argument("--output_dir", default=None, help="INT8 export dir (default: <run dir>/qat_export)")
    p.add_argument("--input_shape", nargs=2, type=int, default=None, metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if not args.slim_config:
        p.error("--slim_config is required (a 'slim: QAT' config, e.g. configs/slim/qat_gfl.yml)")
    cfg, user = cli.load(args)
    slim = cli.slim_config(args)
    if slim.method != "QAT":
        cli.fail(f"{slim.path}: expected 'slim: QAT', got 'slim: {slim.method}'")
    qcfg = slim.settings
    # this tool's runs keep their name, <config name>_qat (train.py --slim_config: ppdet's)
    cfg["filename"] = user["filename"] = os.path.splitext(os.path.basename(args.config))[0]
    out = args.output_dir or os.path.join(api.run_dir(cfg), "qat_export")
    trainer, meta = train_qat(cfg, user, qcfg, weights=cfg.get("weights"), output_dir=out,
                              input_shape=args.input_shape, seed=args.seed)
    print(f"QAT: {count_quantized(trainer.model)} layers fake-quantized; INT8 export: {out}")


if __name__ == "__main__":
    main()
