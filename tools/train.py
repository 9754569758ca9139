"""Train a detector: python tools/train.py -c CONFIG [-o key=value ...]

Multi-GPU: python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c CONFIG
"""
import ppdet_ext  # noqa: F401  (first: registers modules, applies stack fixes)
from ppdet_ext.engine import api, cli


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/train.py -c configs/gfl/gfl_tiny_coco_mini.yml --eval --use_vdl",
        "python tools/train.py -c configs/gfl/gfl_tiny_coco_mini.yml --resume auto",
        "python tools/train.py -c configs/gfl/gfl_r50_fpn_1x_coco.yml --amp -o epoch=24",
        "python -m paddle.distributed.launch --gpus 0,1 tools/train.py -c configs/gfl/gfl_r18vd_1x_coco.yml",
    ])
    p.add_argument("--eval", action="store_true", help="evaluate after each snapshot")
    p.add_argument("-r", "--resume", default=None,
                   help="checkpoint to resume (path without suffix) or 'auto' (newest in the run dir)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    p.add_argument("--use_vdl", action="store_true", help="write VisualDL logs (run_dir/vdl)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    cfg, user = cli.load(args)
    api.train(cfg, user, validate=args.eval, resume=args.resume, amp=args.amp,
              use_vdl=args.use_vdl, seed=args.seed)
    print(f"outputs: {api.run_dir(cfg)}")


if __name__ == "__main__":
    main()
