"""Train a detector: python tools/train.py -c CONFIG [-o key=value ...]

ppdet's flags, with ppdet's meanings (--slim_config takes ppdet's slim configs).
Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint and exits 130 (143);
`--resume auto` continues from it with the same batches, LR and global step.
Multi-GPU: python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c CONFIG
(docs/training.md: determinism, resume, distributed).
"""
import sys

import ppdet_ext  # noqa: F401  (first: registers modules, applies stack fixes)
from ppdet_ext.engine import api, cli
from ppdet_ext.engine.checkpoint import CheckpointError, CheckpointNotFoundError
from ppdet_ext.engine.config import ConfigError
from ppdet_ext.engine.interrupt import TrainingInterrupted

UNSUPPORTED = {
    "--fleet": "PaddleFleet collective training is not wired in; multi-GPU runs use "
               "python -m paddle.distributed.launch --gpus 0,1 tools/train.py -c CONFIG",
    "--use_wandb": "no Weights & Biases logger here; --use_vdl writes VisualDL scalars",
    "--profiler_options": "the Paddle profiler hook is not wired in",
    "--save_proposals": "SNIPER proposal saving (two-stage detectors) is not supported",
    "--proposals_path": "SNIPER proposal saving (two-stage detectors) is not supported",
    "--to_static": "training runs in dygraph; export_model.py builds the static graph",
}


def _train(args):
    cfg, user = cli.load(args)
    if args.vdl_log_dir:
        cfg["vdl_log_dir"] = args.vdl_log_dir
    if args.save_prediction_only:
        cfg["save_prediction_only"] = True
    seed = 0 if args.enable_ce and args.seed is None else args.seed
    kwargs = dict(validate=args.eval, resume=args.resume, amp=args.amp,
                  use_vdl=args.use_vdl, seed=seed)
    slim = cli.slim_config(args)
    if slim is None:
        api.train(cfg, user, **kwargs)
    else:
        from ppdet_ext.slim import slim_runs
        try:
            slim_runs.train(cfg, user, slim, **kwargs)
        except ConfigError as e:
            cli.fail(e)
    return cfg


def main(argv=None):
    p = cli.parser(__doc__, [
        "python tools/train.py -c configs/gfl/gfl_tiny_coco_mini.yml --eval --use_vdl",
        "python tools/train.py -c configs/gfl/gfl_tiny_coco_mini.yml --resume auto",
        "python tools/train.py -c configs/gfl/gfl_r50_fpn_1x_coco.yml --amp -o epoch=24",
        "python tools/train.py -c configs/gfl/gfl_tiny_coco_mini.yml --slim_config configs/slim/qat_gfl.yml "
        "-o pretrain_weights=output/gfl_tiny_coco_mini/model_final",
        "python -m paddle.distributed.launch --gpus 0,1 tools/train.py -c configs/gfl/gfl_r18vd_1x_coco.yml",
    ], unsupported=UNSUPPORTED)
    p.add_argument("--eval", action="store_true", help="evaluate after each snapshot")
    p.add_argument("-r", "--resume", default=None,
                   help="checkpoint to resume (path without suffix) or 'auto' (newest in the run dir)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    cli.add_switch(p, "--use_vdl", "write VisualDL scalars (to --vdl_log_dir)")
    p.add_argument("--vdl_log_dir", default=None,
                   help="VisualDL log dir (default <run dir>/vdl; ppdet's: ./vdl_log_dir/scalar)")
    p.add_argument("--save_prediction_only", action="store_true",
                   help="with --eval: write bbox.json only, compute no AP")
    cli.add_switch(p, "--enable_ce", "ppdet's continuous-evaluation switch: seed 0")
    p.add_argument("--seed", type=int, default=None,
                   help="run seed (default: config seed, else 0; a resumed run keeps its own)")
    args = p.parse_args(argv)
    try:
        cfg = _train(args)
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
