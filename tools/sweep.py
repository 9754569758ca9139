"""Batch-size sweep over an exported model: thin CLI over ``deploy.benchmark.run_sweep``.

Examples:
  # all policies, bs 1..16, Paddle Inference CPU with oneDNN and 2 threads, AP on coco_val158
  python tools/sweep.py --model output/export/picodet_s_416_coco_ext \\
      --images ../shared/data/coco_bench600/images \\
      --eval-ann ../shared/data/coco_val158/annotations/instances_val158.json \\
      --backend paddle-cpu --threads 2 --out docs/results/picodet_bench600

  # quick look: 64 images, two batch sizes, oneDNN off, ONNX Runtime too
  python tools/sweep.py --model out/tiny --images dataset/coco_mini/images --limit 64 \\
      --batch-sizes 1 8 --backend paddle-cpu onnxruntime --no-mkldnn --out /tmp/sweep

Writes <out>.csv, <out>.json (rows + machine, versions, threads, raw runs) and <out>.png
(images/s and padded-pixel % vs batch size, one line per policy), and prints a table.
Exit status is non-zero on any error.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import ppdet_ext_deploy  # noqa: F401  (zlib before paddle)
from ppdet_ext_deploy.benchmark import run_sweep
from ppdet_ext_deploy.formats import FORMATS
from ppdet_ext_deploy.imageio import annotated_images, list_images
from ppdet_ext_deploy.planner import POLICIES
from ppdet_ext_deploy.plan_sweep import plan_sweep
from ppdet_ext_deploy.sweep_report import format_table, write_all, write_csv, write_json


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export directory (infer_cfg.yml + model files)")
    p.add_argument("--images", required=True, help="folder of images to time on")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (by name)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--num-buckets", type=int, default=3, help="aspect bins for policy 'buckets'")
    p.add_argument("--backend", nargs="+", default=["paddle-cpu"], choices=[f.name for f in FORMATS])
    p.add_argument("--threads", type=int, default=0, help="inference threads (0 = all cores)")
    p.add_argument("--no-mkldnn", action="store_true", help="paddle-cpu: disable oneDNN")
    p.add_argument("--workers", type=int, default=2, help="decode/preprocess threads")
    p.add_argument("--prefetch", type=int, default=2, help="prepared batches queued ahead")
    p.add_argument("--post-inline", action="store_true",
                   help="NMS on the inference thread after each batch (default: its own thread, overlapped)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; median reported")
    p.add_argument("--eval-ann", default=None, help="COCO annotation file: AP per configuration")
    p.add_argument("--eval-images", default=None, help="images of --eval-ann (default: ../images)")
    p.add_argument("--eval-batch-sizes", type=int, nargs="+", default=None,
                   help="compute AP only at these batch sizes (default: all)")
    p.add_argument("--plan-only", action="store_true",
                   help="no inference: padding waste / shapes / batches per config from image headers")
    p.add_argument("--out", required=True, help="output prefix for .csv/.json/.png")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _command(argv) -> str:
    return "python tools/sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))


def plan_only(args, images, argv) -> int:
    """Padding waste / shapes / batches per configuration from image headers; no model run."""
    result = plan_sweep(args.model, images, batch_sizes=args.batch_sizes, policies=args.policies,
                        num_buckets=args.num_buckets)
    result["command"] = _command(argv)
    write_csv(f"{args.out}.csv", result["rows"])
    write_json(f"{args.out}.json", result)
    for r in result["rows"]:
        print(f"{r['policy']:>12} bs={r['batch_size']:<3} waste {r['waste_pct']:5.1f}%  "
              f"batches {r['batches']:4d}  shapes {r['distinct_shapes']:3d}  Mpix fed {r['mpix_fed']:.1f}")
    return 0


def backend_options(args):
    """``{backend: options}`` from --threads / --no-mkldnn, for the backends that take them."""
    options = {}
    for be in args.backend:
        fmt = next(f for f in FORMATS if f.name == be)
        opts = {}
        if "threads" in fmt.options:
            opts["threads"] = args.threads
        if "mkldnn" in fmt.options:
            opts["mkldnn"] = not args.no_mkldnn
        options[be] = opts
    return options


def progress_bar(args, images):
    """``(bar, progress callback)``: a tqdm bar over every timed image, or ``(None, None)``."""
    if args.no_progress:
        return None, None
    from tqdm import tqdm

    n_bs = len(args.batch_sizes) * len(args.policies) - (len(args.policies) - 1) * (1 in args.batch_sizes)
    bar = tqdm(total=len(args.backend) * n_bs * args.repeats * len(images), unit="img",
               dynamic_ncols=True)
    state = {"key": None, "done": 0}

    def progress(key, done, total):
        if key != state["key"] or done < state["done"]:
            state.update(key=key, done=0)
            bar.set_description(key, refresh=False)
        bar.update(done - state["done"])
        state["done"] = done

    return bar, progress


def main(argv=None) -> int:
    args = parse_args(argv)
    images = list_images(args.images, args.limit)
    if args.plan_only:
        return plan_only(args, images, argv)
    eval_images = annotated_images(args.eval_ann, args.eval_images) if args.eval_ann else None
    bar, progress = progress_bar(args, images)
    result = run_sweep(args.model, images, batch_sizes=args.batch_sizes, policies=args.policies,
                       backends=args.backend, backend_options=backend_options(args),
                       num_buckets=args.num_buckets, workers=args.workers, prefetch=args.prefetch,
                       repeats=args.repeats, post_thread=not args.post_inline,
                       eval_ann=args.eval_ann, eval_images=eval_images,
                       eval_batch_sizes=args.eval_batch_sizes, progress=progress)
    if bar is not None:
        bar.close()
    result["command"] = _command(argv)
    result["model"] = args.model
    result["images"] = {"folder": args.images, "count": len(images)}
    title = f"{args.model} on {args.images} ({len(images)} images), {', '.join(args.backend)}"
    paths = write_all(args.out, result, title)
    print(format_table(result["rows"]))
    print("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
