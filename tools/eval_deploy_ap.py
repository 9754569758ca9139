"""COCO box AP of an export directory through any deploy backend (deploy/formats.py).

Runs the deploy runner (shape-grouped batching, numpy post-processing) over the images of a
COCO annotation file and prints/writes AP, AP50, AP75. Imports nothing from training code.
"""
import argparse
import json
import os
import sys
import time

import ppdet_ext_deploy  # noqa: F401  (zlib first)
from ppdet_ext_deploy.coco_eval import coco_ap
from ppdet_ext_deploy.formats import FORMATS
from ppdet_ext_deploy.imageio import annotated_images
from ppdet_ext_deploy.runner import Runner

EXAMPLES = [
    "python tools/eval_deploy_ap.py output/onnx_rknn/picodet_s_416 --backend onnxruntime "
    "--batch_size 8 --ann ../shared/data/coco_val158/annotations/instances_val158.json",
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES))
    p.add_argument("model_dir")
    p.add_argument("--backend", default="paddle-cpu", choices=[f.name for f in FORMATS])
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="backend options (values parsed as YAML), e.g. threads=2 quant=int8")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--policy", default="none")
    p.add_argument("--ann", required=True, help="COCO annotation file")
    p.add_argument("--images", default=None, help="image folder (default: ../images)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    args = p.parse_args(argv)
    import yaml

    opts = {}
    for kv in args.option:
        k, _, v = kv.partition("=")
        opts[k] = yaml.safe_load(v)
    paths = annotated_images(args.ann, args.images)
    t = time.perf_counter()
    runner = Runner(args.model_dir, backend=args.backend, backend_options=opts,
                    batch_size=args.batch_size, policy=args.policy)
    try:
        rep = runner.run(paths)
        ap = coco_ap(rep.results, args.ann, category_ids=runner.meta.category_ids)
    finally:
        runner.close()
    res = {"model_dir": args.model_dir, "backend": args.backend, "options": opts,
           "batch_size": args.batch_size, "policy": args.policy, "images": len(paths),
           "errors": len(rep.errors), **ap, "wall_s": time.perf_counter() - t,
           "command": "python tools/eval_deploy_ap.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps({k: res[k] for k in ("backend", "batch_size", "AP", "AP50", "AP75")}))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
