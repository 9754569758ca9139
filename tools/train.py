"""Train a detector: python tools/train.py -c CONFIG [-o key=value ...]

Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint and exits 130 (143);
`--resume auto` continues from it with the same batches, LR and global step.
Multi-GPU: python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c CONFIG
(docs/training.md: determinism, resume, distributed).
"""
import sys

import ppdet_ext  # noqa: F401  (first: registers modules, applies stack fixes)
from ppdet_ext.engine import api, cli
from ppdet_ext.engine.checkpoint import CheckpointError, CheckpointNotFoundError
from ppdet_ext.engine.interrupt import TrainingInterrupted


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
    p.add_argument("--seed", type=int, default=None,
                   help="run seed (default: config seed, else 0; a resumed run keeps its own)")
    args = p.parse_args(argv)
    try:
        cfg, user = cli.load(args)
        api.train(cfg, user, validate=args.eval, resume=args.resume, amp=args.amp,
                  use_vdl=args.use_vdl, seed=args.seed)
    except TrainingInterrupted as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the current step was not saved; "
                         "--resume auto continues from the newest checkpoint\n")
        sys.exit(130)
    except CheckpointNotFoundError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except (CheckpointError, OSError) as e:  # e.g. disk full: one line, no traceback
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    print(f"outputs: {api.run_dir(cfg)}")


if __name__ == "__main__":
    main()
