"""Run ``tools/train.py`` and record what this process did, for the training tests.

    python tests/train_probe.py PROBE_DIR WATCH_DIR -- <tools/train.py arguments>

also under ``python -m paddle.distributed.launch``. Writes ``PROBE_DIR/rank{R}.json``:
``batches`` (per epoch, the dataset indices of every batch this rank's loader built, in
order), ``writes`` (files under ``WATCH_DIR`` this process opened for writing, renamed or
removed, seen through a Python audit hook), ``exit`` (the exit code); and, when training
returns, ``PROBE_DIR/rank{R}_params.npz`` (initial and final weights).

``PROBE_UNION_OF=N`` (single process): every step trains on the union of the batches
that ranks 0..N-1 of an N-process run get at that step, i.e. what data-parallel training
with averaged gradients computes.
"""
import copy
import json
import os
import runpy
import sys

import ppdet_ext  # noqa: F401  (must precede paddle)
import numpy as np
import paddle.distributed as dist

from ppdet_ext.data.epoch_loader import EpochLoader
from ppdet_ext.engine import api

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _UnionOfRanks:
    """Step ``t``'s batch = rank 0's ``t``-th batch + rank 1's + ... of an N-rank run."""

    def __init__(self, sampler, world):
        self.shards = []
        for rank in range(world):
            shard = copy.copy(sampler)
            shard.num_replicas, shard.rank = world, rank
            self.shards.append(shard)

    def __len__(self):
        return len(self.shards[0])

    def batches(self, epoch):
        return [sum(parts, []) for parts in zip(*(s.batches(epoch) for s in self.shards))]


def main():
    probe_dir, watch_dir, sep, *train_args = sys.argv[1:]
    assert sep == "--", "usage: train_probe.py PROBE_DIR WATCH_DIR -- ARGS"
    watch = os.path.abspath(watch_dir)
    rank = dist.get_rank()
    record = {"rank": rank, "world_size": dist.get_world_size(), "batches": {}, "writes": []}
    arrays = {}

    def audit(event, args):
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            path, mode, flags = args
            writing = (mode and any(c in mode for c in "wax+")) or \
                (flags is not None and flags & (os.O_WRONLY | os.O_RDWR))
            if writing and os.path.abspath(str(path)).startswith(watch):
                record["writes"].append(os.path.abspath(str(path)))
        elif event in ("os.rename", "os.remove") and not isinstance(args[0], int):
            if os.path.abspath(str(args[0])).startswith(watch):
                record["writes"].append(os.path.abspath(str(args[0])))

    sys.addaudithook(audit)

    union = int(os.environ.get("PROBE_UNION_OF", "0"))
    if union:
        init = EpochLoader.__init__

        def union_init(self, reader, dataset, worker_num, batch_sampler, *, seed):
            init(self, reader, dataset, worker_num, batch_sampler, seed=seed)
            self._batch_sampler = _UnionOfRanks(batch_sampler, union)
        EpochLoader.__init__ = union_init

    epoch_keys = EpochLoader.epoch_keys

    def recording_keys(self, epoch, skip=0):
        keys = epoch_keys(self, epoch, skip)
        record["batches"].setdefault(str(epoch), []).extend(
            [[k[0] for k in batch] for batch in keys])
        return keys
    EpochLoader.epoch_keys = recording_keys

    train = api.train

    def recording_train(cfg, user_cfg, **kw):
        from ppdet_ext.engine.trainer import DetTrainer
        original = DetTrainer.train

        def train_and_snapshot(self, validate=False):
            arrays.update({f"init/{k}": v.numpy() for k, v in self.model.state_dict().items()})
            return original(self, validate)
        DetTrainer.train = train_and_snapshot
        try:
            trainer = train(cfg, user_cfg, **kw)
        finally:
            DetTrainer.train = original
        arrays.update({f"final/{k}": v.numpy() for k, v in trainer.model.state_dict().items()})
        return trainer
    api.train = recording_train

    os.makedirs(probe_dir, exist_ok=True)
    sys.argv = [os.path.join(REPO, "tools", "train.py")] + train_args
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    record["exit"] = code
    if arrays:
        np.savez(os.path.join(probe_dir, f"rank{rank}_params.npz"), **arrays)
    with open(os.path.join(probe_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    sys.exit(code)


if __name__ == "__main__":
    main()
