"""ONNX Runtime static INT8 (QDQ) of an export directory's model.onnx.

Writes OUT/model.onnx + infer_cfg.yml, loadable with the deploy runner's onnxruntime backend.
"""
import ppdet_ext  # noqa: F401  (zlib-before-paddle)

import argparse
import json

EXAMPLES = """examples:
  python tools/export_onnx.py output/quant/picodet_s_416_fp32     # FP32 model.onnx first
  python tools/quant_onnx.py --model output/quant/picodet_s_416_fp32 \\
      --calib ../shared/data/coco_val158/images --calib-images 32 --out output/quant/picodet_ort_int8
  python tools/quant_onnx.py --model output/quant/picodet_s_416_fp32 --calib ../shared/data/coco_val158/images \\
      --skip-from docs/results/quant/picodet_sensitivity.json --skip-top 4 --out output/quant/picodet_ort_int8_skip4
"""


def main(argv=None):
    from ppdet_ext.slim.calib import calib_files
    from ppdet_ext.slim.onnx_ptq import CALIB_METHODS, quantize_onnx_export

    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export dir with model.onnx + infer_cfg.yml")
    p.add_argument("--calib", required=True, help="image folder or COCO annotation .json")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--method", default="minmax", choices=CALIB_METHODS)
    p.add_argument("--skip-layers", default="", help="comma-separated Paddle weight names kept float")
    p.add_argument("--skip-from", default=None, help="sensitivity .json (tools/quant.py sensitivity)")
    p.add_argument("--skip-top", type=int, default=0)
    p.add_argument("--act-int8", action="store_true", help="INT8 activations instead of UINT8")
    p.add_argument("--quantize-outputs", action="store_true",
                   help="also quantize Conv outputs (integer QLinearConv kernels; PicoDet-S "
                        "loses most of its AP this way, see docs/quantization.md)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    skip = [s for s in args.skip_layers.split(",") if s]
    if args.skip_from:
        with open(args.skip_from) as f:
            skip += [l["name"] for l in json.load(f)["layers"][: args.skip_top]]
    info = quantize_onnx_export(args.model, args.out, calib_files(args.calib, args.calib_images),
                                method=args.method, skip_layers=sorted(set(skip)),
                                activation_uint8=not args.act_int8,
                                quantize_outputs=args.quantize_outputs)
    print(f"ORT INT8 export: {args.out} {info}")


if __name__ == "__main__":
    main()
