"""Convert an ONNX export directory to RKNN (rknn-toolkit2 2.5.0, rk3588) and report its ops.

Needs the optional .venv-rknn (bash scripts/setup_rknn_env.sh); this CLI runs in the core venv
and drives rknn-toolkit2 in a worker process under that venv. The export dir must hold a
fixed-shape model.onnx: tools/export_model.py --input_shape H W --batch_size 1, then
tools/export_onnx.py (which folds the shape arithmetic of a fixed-shape graph).

Writes into --output_dir: model.rknn (a split RT-DETR: model_encoder.rknn + model_decoder.rknn),
infer_cfg.yml (copied; the runner's metadata),
build_<quant>.log (rknn's own log, with its layer table), op_report.json / op_report.md (which layers
run on the NPU and which fall back to the CPU, with the command that built them), and with
--eval_ann the COCO AP of the PC simulator on those images (eval.json).

--quant hybrid keeps --float_ops op types, --float_layers / --float_from convs and --float_span
subgraphs in fp16 (docs/onnx_rknn.md, int8 section: PicoDet-S needs its backbone in fp16).

--quant int8 / hybrid calibrate on --calib: a folder of images (preprocessed exactly like
inference, --calib_images of them, seeded) or a ready dataset.txt of .npy inputs. Calibrate
on images that are not in the evaluation set.
"""
import argparse
import json
import os
import shlex
import sys
import time

import ppdet_ext_deploy  # noqa: F401  (zlib first)
from ppdet_ext_deploy.rknn.report import op_report_markdown
from ppdet_ext_deploy.rknn.worker import DETR_DISABLE_RULES, QUANT_MODES, unavailable_reason

EXAMPLES = [
    "python tools/convert_rknn.py output/onnx_rknn/picodet_s_416_b1 --quant fp16 "
    "--output_dir output/rknn/picodet_s_416_fp16",
    "python tools/convert_rknn.py output/onnx_rknn/picodet_s_416_b1 --quant int8 "
    "--calib ../shared/data/coco_bench600/images --calib_images 100 "
    "--output_dir output/rknn/picodet_s_416_int8 "
    "--eval_ann ../shared/data/coco_val158/annotations/instances_val158.json",
    "python tools/convert_rknn.py output/onnx_rknn/picodet_s_416_b1 --quant hybrid "
    "--float_from docs/results/quant/picodet_s_416_sensitivity.json --float_top 8 "
    "--calib ../shared/data/coco_bench600/images --output_dir output/rknn/picodet_s_416_hybrid_top8",
    "python tools/convert_rknn.py output/onnx_rknn/rtdetr_npu --quant hybrid --detr "
    "--float_ops Softmax MatMul --calib ../shared/data/coco_bench600/images "
    "--output_dir output/rknn/rtdetr_hybrid",
]


def convert(model_dir, output_dir, *, quant="fp16", calib=None, calib_images=100,
            float_ops=("Softmax",), float_layers=(), float_spans=(), disable_rules=(),
            quant_algorithm="normal", eval_ann=None, eval_images=None, eval_limit=None,
            command=""):
    """Build ``model_dir/model.onnx`` for rk3588, export ``model.rknn``, write the op report.

    Returns:
        dict: ``ops`` (summary), ``build`` info, and ``eval`` (AP dict) when ``eval_ann``.
    """
    from ppdet_ext_deploy.meta import copy_meta

    os.makedirs(output_dir, exist_ok=True)
    copy_meta(model_dir, output_dir)
    t = time.perf_counter()
    options = {"quant": quant, "calib": calib, "calib_images": calib_images,
               "float_ops": tuple(float_ops), "disable_rules": tuple(disable_rules),
               "quant_algorithm": quant_algorithm,
               "log_dir": output_dir, "export_path": os.path.join(output_dir, "model.rknn")}
    runner = _runner(model_dir, options, float_layers, float_spans)
    backend = runner.backend
    result = {"model_dir": model_dir, "quant": quant, "command": command,
              "build": {"wall_s": time.perf_counter() - t,
                        **{n: w.info for n, w in backend.workers.items()}},
              "ops": backend.ops, "ops_per_graph": backend.op_reports}
    try:
        _write_op_report(os.path.join(output_dir, "op_report.md"), model_dir, backend.op_reports,
                         quant, command)
        if eval_ann:
            result["eval"] = _evaluate(runner, eval_ann, eval_images, eval_limit)
            with open(os.path.join(output_dir, "eval.json"), "w") as f:
                json.dump(result["eval"], f, indent=2)
    finally:
        runner.close()
    with open(os.path.join(output_dir, "op_report.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _runner(model_dir, options, float_layers, float_spans):
    """A batch-1 Runner on the rknn simulator; per-layer fp16 spans are options of
    RknnSimBackend itself (not of the registry's rknn-sim format), so with them the backend
    is built here and handed to the runner."""
    from ppdet_ext_deploy.runner import Runner

    if not (float_layers or float_spans):
        return Runner(model_dir, backend="rknn-sim", batch_size=1, backend_options=options)
    from ppdet_ext_deploy.backends.rknn import RknnSimBackend
    from ppdet_ext_deploy.meta import load_meta

    backend = RknnSimBackend(load_meta(model_dir), **options, float_layers=tuple(float_layers),
                             float_spans=tuple(tuple(s) for s in float_spans))
    try:
        return Runner(model_dir, backend=backend, batch_size=1)
    except Exception:
        backend.close()
        raise


def _write_op_report(path, model_dir, op_reports, quant, command):
    name = os.path.basename(os.path.normpath(model_dir))
    with open(path, "w") as f:
        for graph, ops in op_reports.items():
            label = "" if graph == "model" else f" — {graph} graph"
            q = "fp16" if graph == "decoder" else quant
            f.write(op_report_markdown(ops, f"{name}{label} ({q}, rk3588)", command) + "\n")


def _evaluate(runner, eval_ann, eval_images, eval_limit):
    """COCO AP of the simulator on the annotated images."""
    from ppdet_ext_deploy.coco_eval import coco_ap
    from ppdet_ext_deploy.imageio import annotated_images

    paths = annotated_images(eval_ann, eval_images)[:eval_limit]
    t = time.perf_counter()
    rep = runner.run(paths)
    ap = coco_ap(rep.results, eval_ann, category_ids=runner.meta.category_ids)
    return {**ap, "images": len(paths), "errors": len(rep.errors), "wall_s": time.perf_counter() - t}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES))
    p.add_argument("model_dir", help="export dir with a fixed-shape model.onnx + infer_cfg.yml")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--quant", choices=QUANT_MODES, default="fp16")
    p.add_argument("--calib", default=None, help="image folder or dataset.txt (int8/hybrid)")
    p.add_argument("--calib_images", type=int, default=100)
    p.add_argument("--float_ops", nargs="*", default=["Softmax"],
                   help="hybrid: ONNX op types kept in fp16 (default: Softmax; none: no op types)")
    p.add_argument("--float_layers", nargs="+", default=[],
                   help="hybrid: Conv layers kept in fp16 (their input tensor, and the conv with "
                        "its BN + activation), by ONNX node name (Conv.12) or Paddle weight name "
                        "(conv2d_27.w_0); or rknn layers by output tensor name, as in rknn's "
                        "accuracy_analysis report (hardswish_4.tmp_0)")
    p.add_argument("--float_from", default=None,
                   help="hybrid: a tools/quant.py sensitivity JSON; its --float_top layers are "
                        "kept in fp16 (added to --float_layers)")
    p.add_argument("--float_top", type=int, default=8, help="with --float_from (default 8)")
    p.add_argument("--float_span", nargs=2, action="append", default=[], metavar=("IN", "OUT"),
                   help="hybrid: keep everything from tensor IN to tensor OUT in fp16 "
                        "(repeatable), e.g. --float_span image reshape2_9.tmp_0")
    p.add_argument("--quant_algorithm", choices=["normal", "kl_divergence", "mmse"],
                   default="normal", help="rknn quantized_algorithm (int8/hybrid)")
    p.add_argument("--disable_rules", nargs="*", default=[],
                   help="rknn optimizer rules to disable")
    p.add_argument("--detr", action="store_true",
                   help=f"add the DETR-family rules to disable: {list(DETR_DISABLE_RULES)}")
    p.add_argument("--eval_ann", default=None, help="COCO annotations: AP through the simulator")
    p.add_argument("--eval_images", default=None, help="their images (default: ../images)")
    p.add_argument("--eval_limit", type=int, default=None)
    args = p.parse_args(argv)
    args.float_layers = list(args.float_layers)
    if args.float_from:
        from ppdet_ext_deploy.rknn.hybrid import sensitive_layers

        args.float_layers += [n for n in sensitive_layers(args.float_from, args.float_top)
                              if n not in args.float_layers]
    if (args.float_layers or args.float_span) and args.quant != "hybrid":
        p.error("--float_layers/--float_from/--float_span need --quant hybrid")
    return args


def main(argv=None):
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        sys.stderr.write(f"convert_rknn: {reason}\n")
        return 2
    rules = list(args.disable_rules) + (list(DETR_DISABLE_RULES) if args.detr else [])
    command = "python tools/convert_rknn.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        res = convert(args.model_dir, args.output_dir, quant=args.quant, calib=args.calib,
                      calib_images=args.calib_images, float_ops=args.float_ops,
                      float_layers=args.float_layers, float_spans=args.float_span,
                      disable_rules=rules, quant_algorithm=args.quant_algorithm,
                      eval_ann=args.eval_ann, eval_images=args.eval_images,
                      eval_limit=args.eval_limit, command=command)
    except (RuntimeError, ValueError, FileNotFoundError, TimeoutError) as e:
        sys.stderr.write(f"convert_rknn: {e}\n")
        return 1
    ops = res["ops"]
    rknn_files = sorted(f for f in os.listdir(args.output_dir) if f.endswith(".rknn"))
    print(f"wrote {rknn_files} in {args.output_dir}: {ops['npu_layers']} NPU / "
          f"{ops['cpu_layers']} CPU layers; CPU ops {ops['cpu_ops']}")
    if "eval" in res:
        print(f"simulator AP {res['eval']['AP']:.4f} AP50 {res['eval']['AP50']:.4f} "
              f"on {res['eval']['images']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
