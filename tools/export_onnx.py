"""Convert a Paddle export directory to ONNX (paddle2onnx 1.3.1): writes model.onnx.

The export directory comes from tools/export_model.py (docs/export_format.md); model.onnx keeps
the same input/outputs (image -> scores, boxes; no NMS), dynamic batch/height/width where the
Paddle graph has them, and carries infer_cfg.yml in its metadata_props. For RKNN (fixed shapes)
export the Paddle graph with --input_shape H W --batch_size 1 first.
"""
import argparse
import sys

import ppdet_ext  # noqa: F401  (zlib before paddle)
from ppdet_ext.export.metadata import ExportError
from ppdet_ext.export.onnx_export import DEFAULT_OPSET, SIMPLIFIERS, export_onnx

EXAMPLES = [
    "python tools/export_onnx.py output/export/gfl_tiny",
    "python tools/export_onnx.py output/export/picodet_s_416_coco_ext --opset 16 "
    "--simplify onnxslim",
    "python tools/export_onnx.py output/export/gfl_tiny_320 --output_dir output/onnx/gfl_tiny_320",
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES))
    p.add_argument("model_dir", help="Paddle export dir (model.pdmodel/.pdiparams + infer_cfg.yml)")
    p.add_argument("--output_dir", default=None,
                   help="write model.onnx (+ a copy of infer_cfg.yml) here; default: model_dir")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--simplify", choices=SIMPLIFIERS, default=None,
                   help="optional simplifier pass (must be installed); dynamic axes are kept")
    p.add_argument("--no_fold", action="store_true",
                   help="keep the shape arithmetic of a fully fixed-shape graph (default: fold it)")
    p.add_argument("--no_check", action="store_true", help="skip onnx.checker / shape inference")
    args = p.parse_args(argv)
    try:
        path = export_onnx(args.model_dir, output_dir=args.output_dir, opset=args.opset,
                           simplify=args.simplify, fold=not args.no_fold,
                           check=not args.no_check)
    except (ExportError, FileNotFoundError) as e:
        sys.stderr.write(f"export_onnx: {e}\n")
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
