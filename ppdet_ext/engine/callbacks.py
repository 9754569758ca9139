"""Training callbacks (ppdet's Callback protocol), replacing or adding to ppdet's own.

* ``EpochDriver``: before an epoch's batches are drawn, tells the loader the epoch (and,
  on the epoch a run resumes in, how many batches are done); numbers steps from the
  resumed position and reseeds paddle/numpy/``random`` per global step, so a resumed
  run computes what the uninterrupted one did.
* ``AtomicCheckpointer``: epoch, final and best-AP checkpoints through
  ``ppdet_ext.engine.checkpoint`` (atomic files, state for exact resume); on Ctrl-C or
  SIGTERM a mid-epoch checkpoint, then ``TrainingInterrupted``.
* ``StepLogger``: VisualDL scalars and a JSONL log keyed by the *global* step
  (``epoch * steps_per_epoch + step``), so a resumed run continues the same curves; the
  JSONL log is cut back to the resume point first (no duplicate steps).
* ``ProgressBar``: tqdm over all remaining steps (interactive terminals only).
"""
import json
import os

import paddle.distributed as dist

from ppdet.engine.callbacks import Callback
from ppdet.utils.logger import setup_logger

from ppdet_ext.data.epoch_loader import seed_everything, step_seed

from . import faults
from .checkpoint import Position, atomic_write, ema_average, save_checkpoint
from .interrupt import TrainingInterrupted

logger = setup_logger("ppdet_ext.callbacks")


def _is_main():
    return dist.get_world_size() < 2 or dist.get_rank() == 0


def _global_step(status):
    return status["epoch_id"] * status["steps_per_epoch"] + status["step_id"]


class EpochDriver(Callback):
    """Epoch and skip for the loader, resumed step numbering, per-step seeding.

    Args:
        trainer: the trainer; ``trainer.loader`` is an ``EpochLoader`` and
            ``trainer.start_position`` the ``Position`` training starts from
            (``step`` batches of its ``epoch`` done).
        seed: the run's seed.
    """

    def __init__(self, trainer, *, seed):
        super().__init__(trainer)
        self.seed = int(seed)
        self.offset = 0

    def on_epoch_begin(self, status):
        if status["mode"] != "train":
            return
        epoch = status["epoch_id"]
        start = self.model.start_position
        self.offset = start.step if epoch == start.epoch else 0
        self.model.loader.set_epoch(epoch, skip=self.offset)

    def on_step_begin(self, status):
        if status["mode"] != "train":
            return
        status["step_id"] += self.offset
        seed_everything(step_seed(self.seed, _global_step(status)))
        faults.hit("step_begin")


class AtomicCheckpointer(Callback):
    """Snapshot every ``snapshot_epoch`` epochs, ``model_final`` at the end, ``best_model``
    on the best eval AP, ``step_G`` when a stop is requested (``trainer.stop_request``)."""

    def __init__(self, trainer, *, seed):
        super().__init__(trainer)
        cfg = trainer.cfg
        self.save_dir = os.path.join(cfg.save_dir, cfg.filename)
        self.seed = int(seed)
        self.best_ap = -1.0
        self.last_saved = None  # the newest checkpoint, for the stop message
        self.last_position = None

    def on_train_begin(self, status):
        if self.model.resumed_from:
            self.last_saved = self.model.resumed_from
            self.last_position = self.model.start_position

    def _position(self, status, epoch, step):
        return Position(epoch=epoch, step=step, steps_per_epoch=status["steps_per_epoch"],
                        seed=self.seed, world_size=dist.get_world_size())

    def _raw_weights(self, status):
        return status.get("weight") if self.model.use_ema else None

    def _save(self, name, position, **kw):
        if _is_main():
            save_checkpoint(self.model, self.save_dir, name, position, **kw)
        self.last_saved = os.path.join(self.save_dir, name)
        self.last_position = position

    def _poll(self, collective):
        stop = getattr(self.model, "stop_request", None)
        return stop.poll(collective=collective) if stop is not None else None

    def on_epoch_begin(self, status):
        self._stop_outside_training_steps()

    def _stop_outside_training_steps(self):
        # between epochs or during evaluation, single process only: with several ranks
        # only rank 0 evaluates, so the ranks agree at the next training step instead
        if dist.get_world_size() < 2:
            signum = self._poll(collective=False)
            if signum is not None:
                raise TrainingInterrupted(signum, self.last_saved, self.last_position)

    def on_step_end(self, status):
        if status["mode"] != "train":
            self._stop_outside_training_steps()
            return
        faults.hit("step_end")
        signum = self._poll(collective=True)
        if signum is None:
            return
        if self.model.use_ema:
            self.model.ema.update()  # ppdet updates it after this callback, which won't run
        position = self._position(status, status["epoch_id"], status["step_id"] + 1)
        kw = {}
        if self.model.use_ema:
            kw = {"weights": ema_average(self.model.ema),
                  "raw_weights": self.model.model.state_dict()}
        self._save(f"step_{_global_step(status) + 1}", position, **kw)
        if dist.get_world_size() > 1:
            dist.barrier()  # no rank exits (and gets the job torn down) before the write
        raise TrainingInterrupted(signum, self.last_saved, position)

    def on_epoch_end(self, status):
        cfg = self.model.cfg
        epoch_id = status["epoch_id"]
        if status["mode"] == "train":
            last = epoch_id == cfg.epoch - 1
            if (epoch_id + 1) % cfg.snapshot_epoch == 0 or last:
                name = "model_final" if last else str(epoch_id)
                self._save(name, self._position(status, epoch_id + 1, 0),
                           raw_weights=self._raw_weights(status))
        elif status["mode"] == "eval" and status.get("save_best_model") and _is_main():
            for metric in self.model._metrics:
                res = metric.get_results()
                if "bbox" in res and res["bbox"][0] >= self.best_ap:
                    self.best_ap = float(res["bbox"][0])
                    save_checkpoint(self.model, self.save_dir, "best_model",
                                    self._position(status, epoch_id + 1, 0),
                                    raw_weights=self._raw_weights(status))
                    logger.info(f"Best bbox AP so far: {self.best_ap:.4f}")


def truncate_train_log(path, global_step):
    """Keep the records of ``train_log.jsonl`` before ``global_step`` (and drop a line cut
    short by a kill); returns how many records were dropped."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                keep = line.endswith("\n") and int(record["step"]) < global_step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
    if dropped:
        def write(tmp):
            with open(tmp, "w") as f:
                f.writelines(kept)
        atomic_write(path, write)
    return dropped


class StepLogger(Callback):
    """VisualDL scalars (``--use_vdl``) and ``train_log.jsonl`` on the global step.

    At the start, records from ``trainer.start_position``'s global step on (the part of
    a killed run being redone, or a previous run when starting afresh) are removed.
    """

    def __init__(self, trainer, *, use_vdl=False):
        super().__init__(trainer)
        cfg = trainer.cfg
        self.dir = os.path.join(cfg.save_dir, cfg.filename)
        self.vdl = None
        if use_vdl and _is_main():
            from visualdl import LogWriter
            self.vdl = LogWriter(cfg.get("vdl_log_dir", os.path.join(self.dir, "vdl")))
        self.jsonl = os.path.join(self.dir, "train_log.jsonl")

    def on_train_begin(self, status):
        if _is_main():
            start = self.model.start_position
            step = start.epoch * status["steps_per_epoch"] + start.step
            dropped = truncate_train_log(self.jsonl, step)
            if dropped:
                logger.info(f"train_log.jsonl: removed {dropped} record(s) from step "
                            f"{step} on (they are redone)")

    def on_step_end(self, status):
        if status["mode"] != "train" or not _is_main():
            return
        step = _global_step(status)
        stats = {k: float(v) for k, v in status["training_staus"].get().items()}
        lr = float(status["learning_rate"])
        if self.vdl is not None:
            for k, v in stats.items():
                self.vdl.add_scalar(f"train/{k}", v, step)
            self.vdl.add_scalar("train/lr", lr, step)
        os.makedirs(self.dir, exist_ok=True)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, "epoch": status["epoch_id"],
                                "iter": status["step_id"], "lr": lr, **stats}) + "\n")

    def on_epoch_end(self, status):
        if status["mode"] == "eval" and self.vdl is not None:
            for metric in self.model._metrics:
                res = metric.get_results()
                if "bbox" in res:
                    step = (status["epoch_id"] + 1) * status.get("steps_per_epoch", 1)
                    self.vdl.add_scalar("eval/bbox_AP", float(res["bbox"][0]), step)

    def on_train_end(self, status):
        if self.vdl is not None:
            self.vdl.close()


class ProgressBar(Callback):
    """A tqdm bar over all remaining training steps with ETA and the current loss.

    Only on an interactive terminal: in logs (CI, nohup) ppdet's LogPrinter lines, which
    carry an ETA too, are the progress report.
    """

    def __init__(self, trainer, *, enabled=None):
        super().__init__(trainer)
        import sys
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None

    def on_step_end(self, status):
        if not self.enabled or status["mode"] != "train" or not _is_main():
            return
        if self.bar is None:
            from tqdm import tqdm
            steps = status["steps_per_epoch"]
            self.bar = tqdm(total=self.model.cfg.epoch * steps, initial=_global_step(status),
                            desc="train", dynamic_ncols=True, leave=True)
        self.bar.update(1)
        loss = status["training_staus"].get().get("loss")
        if loss is not None:
            self.bar.set_postfix(epoch=status["epoch_id"], loss=f"{float(loss):.4f}", refresh=False)

    def on_train_end(self, status):
        if self.bar is not None:
            self.bar.close()
