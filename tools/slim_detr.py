"""RT-DETRv2 slimming: decoder truncation (eval_idx) and structured pruning (decoder layers,
FFN channels, attention heads) with weight transfer; reports params / GMACs / CPU latency /
agreement with the full model per setting.

Subcommands:
  report  evaluate settings (truncation + pruning) on a few images, write JSON + Markdown
  prune   save pruned weights (pretrain_weights for a fine-tune run) + the overrides to use
"""
import ppdet_ext  # noqa: F401  (zlib before paddle)

import argparse
import json
import os
import sys

EXAMPLES = """examples:
  python tools/slim_detr.py report -c configs/rtdetrv2/rtdetrv2_tiny_coco_mini.yml \\
      -w output/rtdetr_demo/rtdetrv2_tiny_coco_mini/model_final --images dataset/coco_mini/images \\
      --setting eval_idx=0 --setting dec_layers=1 --setting dec_ffn=128,enc_ffn=128 \\
      --setting dec_heads=3,enc_heads=3 --setting dec_layers=1,dec_ffn=128,enc_ffn=128,dec_heads=3,enc_heads=3 \\
      --out docs/results/quant/rtdetr_slim
  python tools/slim_detr.py prune -c configs/rtdetrv2/rtdetrv2_tiny_coco_mini.yml \\
      -w output/rtdetr_demo/rtdetrv2_tiny_coco_mini/model_final \\
      --setting dec_layers=1,dec_ffn=128,enc_ffn=128,dec_heads=3,enc_heads=3 --out output/quant/rtdetrv2_tiny_pruned
  # fine-tune (overrides printed by `prune`; configs/slim/rtdetrv2_tiny_pruned_ft.yml has them):
  python tools/train.py -c configs/slim/rtdetrv2_tiny_pruned_ft.yml
"""


def parse_spec(text):
    from ppdet_ext.slim.detr_prune import PruneSpec

    kw = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        if k not in PruneSpec.__dataclass_fields__:
            raise argparse.ArgumentTypeError(f"unknown setting {k!r}; use {list(PruneSpec.__dataclass_fields__)}")
        kw[k] = int(v)
    return PruneSpec(**kw)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("report", "prune"):
        s = sub.add_parser(name)
        s.add_argument("-c", "--config", required=True)
        s.add_argument("-w", "--weights", required=True, help="full model checkpoint")
        s.add_argument("--setting", action="append", type=parse_spec, required=True,
                       help="comma list of dec_layers=N, dec_ffn=N, enc_ffn=N, eval_idx=N, "
                            "enc_heads=N, dec_heads=N (heads keep their size)")
        s.add_argument("--out", required=True, help="output prefix")
        if name == "report":
            s.add_argument("--images", required=True)
            s.add_argument("--num-images", type=int, default=4)
            s.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.cmd == "prune":
        from ppdet_ext.slim.detr_prune import save_pruned

        if len(args.setting) != 1:
            p.error("prune takes exactly one --setting")
        info = save_pruned(args.config, args.weights, args.setting[0], args.out)
        print(json.dumps(info, indent=1))
        print(f"fine-tune: python tools/train.py -c {args.config} -o pretrain_weights={args.out} "
              + " ".join(info["overrides"]))
        return
    import numpy as np

    from ppdet_ext_deploy.meta import load_meta  # noqa: F401
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.slim.calib import calib_files
    from ppdet_ext.slim.detr_prune import evaluate_settings
    import cv2

    cfg, _ = load_config(args.config)
    h, w = cfg["TestReader"]["inputs_def"]["image_shape"][-2:]
    xs = []
    for f in calib_files(args.images, args.num_images):
        img = cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        xs.append(img.transpose(2, 0, 1)[None].copy())  # RT-DETR tiny: /255, no mean/std
    rows = evaluate_settings(args.config, args.weights, args.setting, xs, rounds=args.rounds, hw=(h, w))
    md = ("| setting | params | GMACs | latency ms (dygraph CPU) | vs full | score corr | box MAD px |\n"
          "|---|---|---|---|---|---|---|\n")
    for r in rows:
        md += (f"| {r['setting']} | {r['params']:,} | {r['gmacs']:.3f} | {r['latency_ms']:.1f} | "
               f"{r['latency_vs_full']:.2f}x | {r['score_corr_vs_full']:.4f} | {r['box_mad_px_vs_full']:.2f} |\n")
    print(md)
    with open(args.out + ".json", "w") as f:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(f"Command: `python {' '.join(sys.argv)}`\n\n{md}")


if __name__ == "__main__":
    main()
