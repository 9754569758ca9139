"""Training callbacks (ppdet's Callback protocol), replacing or adding to ppdet's own.

* ``AtomicCheckpointer``: ppdet's Checkpointer writes ``.pdparams``/``.pdopt`` in place, so
  a run killed mid-write leaves a truncated checkpoint that ``--resume`` then fails on.
  We write to a temp file and ``os.replace`` it (atomic on POSIX), optimizer state first.
* ``StepLogger``: VisualDL scalars and a JSONL log keyed by the *global* step
  (``epoch * steps_per_epoch + step``), so a resumed run continues the same curves;
  ppdet's VisualDLWriter restarts its step counter at 0 on resume.
* ``SamplerEpoch``: tells an epoch-aware batch sampler which epoch starts (also on resume).
"""
import json
import os

import paddle
import paddle.distributed as dist

from ppdet.engine.callbacks import Callback
from ppdet.utils.logger import setup_logger

logger = setup_logger("ppdet_ext.callbacks")


def _is_main():
    return dist.get_world_size() < 2 or dist.get_rank() == 0


def atomic_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    paddle.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(trainer, save_dir, name, last_epoch, raw_weights=None):
    """Write ``name.pdopt``, ``name.pdema`` and last ``name.pdparams``, each atomically.

    Same files and keys as ppdet's ``save_model``, so ppdet's ``load_weight`` resumes them.
    With EMA, ppdet has already swapped the EMA weights into the model at snapshot time
    and keeps the raw weights in ``status['weight']``: the model's current state goes to
    ``.pdparams`` and the raw weights to ``.pdema`` (ppdet's convention).
    """
    os.makedirs(save_dir, exist_ok=True)
    base = os.path.join(save_dir, name)
    opt_state = trainer.optimizer.state_dict()
    opt_state["last_epoch"] = last_epoch
    atomic_save(opt_state, base + ".pdopt")
    if raw_weights is not None:
        atomic_save(raw_weights, base + ".pdema")
    atomic_save(trainer.model.state_dict(), base + ".pdparams")
    logger.info(f"Saved checkpoint {base}.pdparams (epoch {last_epoch})")


class AtomicCheckpointer(Callback):
    """Snapshot every ``snapshot_epoch`` epochs, ``model_final`` at the end, ``best_model``
    on the best eval AP; all writes atomic."""

    def __init__(self, trainer):
        super().__init__(trainer)
        cfg = trainer.cfg
        self.save_dir = os.path.join(cfg.save_dir, cfg.filename)
        self.best_ap = -1.0

    def _raw_weights(self, status):
        return status.get("weight") if self.model.use_ema else None

    def on_epoch_end(self, status):
        if not _is_main():
            return
        cfg = self.model.cfg
        epoch_id = status["epoch_id"]
        if status["mode"] == "train":
            last = epoch_id == cfg.epoch - 1
            if (epoch_id + 1) % cfg.snapshot_epoch == 0 or last:
                name = "model_final" if last else str(epoch_id)
                save_checkpoint(self.model, self.save_dir, name, epoch_id + 1,
                                self._raw_weights(status))
        elif status["mode"] == "eval" and status.get("save_best_model"):
            for metric in self.model._metrics:
                res = metric.get_results()
                if "bbox" in res and res["bbox"][0] >= self.best_ap:
                    self.best_ap = float(res["bbox"][0])
                    save_checkpoint(self.model, self.save_dir, "best_model", epoch_id + 1,
                                    self._raw_weights(status))
                    logger.info(f"Best bbox AP so far: {self.best_ap:.4f}")


class StepLogger(Callback):
    """VisualDL scalars (``--use_vdl``) and ``train_log.jsonl`` on the global step."""

    def __init__(self, trainer, *, use_vdl=False):
        super().__init__(trainer)
        cfg = trainer.cfg
        self.dir = os.path.join(cfg.save_dir, cfg.filename)
        self.vdl = None
        if use_vdl and _is_main():
            from visualdl import LogWriter
            self.vdl = LogWriter(cfg.get("vdl_log_dir", os.path.join(self.dir, "vdl")))
        self.jsonl = os.path.join(self.dir, "train_log.jsonl")

    def on_step_end(self, status):
        if status["mode"] != "train" or not _is_main():
            return
        step = status["epoch_id"] * status["steps_per_epoch"] + status["step_id"]
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


class SamplerEpoch(Callback):
    def __init__(self, trainer, sampler):
        super().__init__(trainer)
        self.sampler = sampler

    def on_epoch_begin(self, status):
        if status["mode"] == "train":
            self.sampler.set_epoch(status["epoch_id"])


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
            self.bar = tqdm(total=self.model.cfg.epoch * steps,
                            initial=status["epoch_id"] * steps + status["step_id"],
                            desc="train", dynamic_ncols=True, leave=True)
        self.bar.update(1)
        loss = status["training_staus"].get().get("loss")
        if loss is not None:
            self.bar.set_postfix(epoch=status["epoch_id"], loss=f"{float(loss):.4f}", refresh=False)

    def on_train_end(self, status):
        if self.bar is not None:
            self.bar.close()
