"""Post-training INT8 quantization of an export directory, its sensitivity report, and an
FP32-vs-INT8 comparison (AP + images/s) through the deploy runner.

Subcommands:
  ptq          quantize FP32_DIR into OUT_DIR (Paddle PTQ, calibration from a COCO folder)
  sensitivity  per-layer INT8 error on the calibration set + skip-list sweep (JSON + Markdown)
  compare      AP and interleaved images/s of several export dirs/backends on one machine
"""
import ppdet_ext  # noqa: F401  (zlib-before-paddle; must come first)

import argparse
import json
import os
import sys

EXAMPLES = """examples:
  python tools/quant.py ptq --model output/export/gfl_tiny --calib dataset/coco_mini/images \\
      --algo hist --calib-images 16 --out output/quant/gfl_tiny_int8
  python tools/quant.py sensitivity --model output/quant/picodet_s_416_fp32 \\
      --calib ../shared/data/coco_val158/images --calib-images 4 --out docs/results/quant/sens
  python tools/quant.py ptq --model output/quant/picodet_s_416_fp32 --calib ../shared/data/coco_val158/images \\
      --fold-bn --algo avg --calib-images 16 --skip-from docs/results/quant/picodet_s_416_sensitivity.json \\
      --skip-top 8 --out output/quant/picodet_int8_skip8
  python tools/quant.py compare --ann ../shared/data/coco_val158/annotations/instances_val158.json \\
      --setting fp32=output/quant/picodet_s_416_fp32:paddle-cpu \\
      --setting int8=output/quant/picodet_int8_skip8:paddle-cpu-int8 --out docs/results/quant/cmp
"""


def _skip_list(args):
    skip = [s for s in (args.skip_layers or "").split(",") if s]
    if args.skip_from:
        with open(args.skip_from) as f:
            rep = json.load(f)
        skip += [l["name"] for l in rep["layers"][: args.skip_top]]
    return sorted(set(skip))


def cmd_ptq(args):
    from ppdet_ext.slim.calib import calib_files
    from ppdet_ext.slim.ptq import PTQConfig, quantize_export

    cfg = PTQConfig(algo=args.algo, calib_images=args.calib_images, skip_layers=_skip_list(args),
                    hist_percent=args.hist_percent, onnx_format=not args.legacy_format)
    files = calib_files(args.calib, args.calib_images)
    model = args.model
    if args.fold_bn:
        from ppdet_ext.slim.bn_fold import fold_batch_norm

        model = args.out.rstrip("/") + "_fp32_bnfold"
        print(f"folded {len(fold_batch_norm(args.model, model))} batch_norm ops into {model}")
    res = quantize_export(model, args.out, files, cfg)
    print(f"INT8 export: {res.out_dir} ({res.quantized_layers} layers INT8, "
          f"{len(res.skipped_layers)} kept float, {res.seconds:.0f}s)")


def cmd_sensitivity(args):
    from ppdet_ext_deploy.meta import load_meta
    from ppdet_ext.slim.calib import calib_batches, calib_files
    from ppdet_ext.slim.sensitivity import analyze

    files = calib_files(args.calib, args.calib_images)
    batches = list(calib_batches(load_meta(args.model), files))
    rep = analyze(args.model, batches, act_method=args.act_method,
                  progress=lambda i, n: print(f"layer {i}/{n}", flush=True) if i % 10 == 0 else None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rep.save(args.out + ".json", args.out + ".md")
    print(rep.to_markdown(top=args.top))
    print(f"written {args.out}.json / .md")


def _parse_setting(text):
    from ppdet_ext.slim.compare import Setting

    label, _, rest = text.partition("=")
    path, _, backend = rest.partition(":")
    if not label or not path:
        raise argparse.ArgumentTypeError(f"--setting wants LABEL=DIR[:BACKEND], got {text!r}")
    return Setting(label, path, backend or "paddle-cpu")


def cmd_compare(args):
    from ppdet_ext_deploy.imageio import annotated_images
    from ppdet_ext.slim.calib import calib_batches, calib_files
    from ppdet_ext.slim.compare import compare, to_markdown
    from ppdet_ext_deploy.meta import load_meta
    from ppdet_ext_deploy.environment import environment

    settings = [_parse_setting(s) for s in args.setting]
    eval_images = annotated_images(args.ann, args.images) if args.ann else []
    time_images = (eval_images or calib_files(args.images))[: args.time_images]
    corr = list(calib_batches(load_meta(settings[0].model_dir), time_images[: args.corr_images]))
    rows = compare(settings, eval_images=eval_images[: args.eval_limit or None], ann_file=args.ann,
                   time_images=time_images, rounds=args.rounds, threads=args.threads,
                   corr_batches=corr)
    md = to_markdown(rows)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump({"command": " ".join(sys.argv), "env": environment(args.threads),
                       "rows": rows}, f, indent=1, default=str)
        with open(args.out + ".md", "w") as f:
            f.write(f"Command: `python {' '.join(sys.argv)}`\n\n{md}")
        print(f"written {args.out}.json / .md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("ptq", help="post-training quantization", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--model", required=True, help="FP32 export directory")
    q.add_argument("--calib", required=True, help="image folder or COCO annotation .json")
    q.add_argument("--calib-images", type=int, default=32)
    q.add_argument("--algo", default="hist", help="abs_max | avg | hist | KL | mse | emd | min_max | ptf")
    q.add_argument("--hist-percent", type=float, default=0.9999)
    q.add_argument("--skip-layers", default="", help="comma-separated weight names kept in float")
    q.add_argument("--skip-from", default=None, help="sensitivity .json: skip its top layers")
    q.add_argument("--skip-top", type=int, default=0, help="how many of --skip-from's layers")
    q.add_argument("--fold-bn", action="store_true",
                   help="fold batch_norm into convs first (OUT_fp32_bnfold); needed for PicoDet/ESNet")
    q.add_argument("--legacy-format", action="store_true",
                   help="fake_quantize ops instead of quantize_linear (oneDNN INT8 cannot run it)")
    q.add_argument("--out", required=True)
    q.set_defaults(fn=cmd_ptq)
    s = sub.add_parser("sensitivity", help="per-layer INT8 error report")
    s.add_argument("--model", required=True)
    s.add_argument("--calib", required=True)
    s.add_argument("--calib-images", type=int, default=4)
    s.add_argument("--act-method", default="abs_max", choices=["abs_max", "percentile"])
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--out", required=True, help="output prefix (.json and .md are written)")
    s.set_defaults(fn=cmd_sensitivity)
    c = sub.add_parser("compare", help="AP + images/s of several settings, interleaved")
    c.add_argument("--setting", action="append", required=True,
                   help="LABEL=EXPORT_DIR[:BACKEND] (backend: paddle-cpu, paddle-cpu-int8, onnxruntime)")
    c.add_argument("--ann", default=None, help="COCO annotations for AP (images: ../images)")
    c.add_argument("--images", default=None, help="image folder (default: next to --ann)")
    c.add_argument("--eval-limit", type=int, default=0)
    c.add_argument("--time-images", type=int, default=40)
    c.add_argument("--corr-images", type=int, default=4)
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--out", default=None, help="output prefix (.json and .md)")
    c.set_defaults(fn=cmd_compare)
    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
