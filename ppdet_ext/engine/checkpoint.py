"""Training checkpoints: the one module that writes, finds and reads them.

A checkpoint ``<run_dir>/<name>`` is up to four files, ppdet-compatible where ppdet has
a convention:

* ``<name>.pdopt``: optimizer state (LR scheduler included), ``last_epoch`` (ppdet's key:
  epochs completed) and, with EMA, ``ema``: the raw EMA accumulator, its step and epoch
  (ppdet stores only the bias-corrected average, which does not resume exactly);
* ``<name>.pdema`` (EMA only): the raw model weights (ppdet's convention);
* ``<name>.state.json``: where training stands (``Position``) and the run's seed;
* ``<name>.pdparams``: the model weights, EMA-averaged with EMA (what eval/export load).

Each file is written to ``<file>.tmp<pid>`` and renamed over the target (atomic on
POSIX); ``.pdparams`` comes last, so a checkpoint is complete exactly when its
``.pdparams`` and ``.pdopt`` exist. A write that fails (disk full) removes its temp file
and raises ``CheckpointError``; temp files left by a killed process are removed when the
next run starts (``remove_stale_temp_files``).

Names: ``N`` after epoch ``N`` (0-based), ``model_final`` after the last epoch,
``best_model`` on the best eval AP, ``step_G`` when training stops mid-epoch (Ctrl-C,
SIGTERM) after ``G`` global steps; a ``step_G`` checkpoint is deleted once a later one
is complete.
"""
import dataclasses
import glob
import json
import os
import re
from typing import Optional

import paddle

from ppdet.utils.logger import setup_logger

from . import faults

logger = setup_logger("ppdet_ext.checkpoint")

STATE_SUFFIX = ".state.json"
FILE_SUFFIXES = (".pdparams", ".pdopt", ".pdema", STATE_SUFFIX)
_TMP = re.compile(r"\.tmp(\d+)$")
_STEP_NAME = re.compile(r"^step_(\d+)$")
STATE_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message is one line naming it."""


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint asked for does not exist (a bad ``--resume`` argument)."""


def base_path(path):
    """``output/x/3.pdparams`` (or ``.pdopt``, ...) -> ``output/x/3``: the checkpoint's name."""
    for suffix in FILE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


@dataclasses.dataclass
class Position:
    """Where a checkpoint leaves training.

    Attributes:
        epoch: the epoch to run next (0-based).
        step: batches of ``epoch`` already done (0 at an epoch boundary).
        steps_per_epoch: batches per epoch on each rank when it was written (None if unknown).
        seed: the run's seed (None for checkpoints written by ppdet itself).
        world_size: number of ranks that wrote it (None if unknown).
    """
    epoch: int
    step: int = 0
    steps_per_epoch: Optional[int] = None
    seed: Optional[int] = None
    world_size: Optional[int] = None

    @property
    def global_step(self):
        """Optimizer steps done (exact when ``steps_per_epoch`` is known)."""
        return self.epoch * (self.steps_per_epoch or 0) + self.step

    def sort_key(self):
        return (self.epoch, self.step)


# -- writing -------------------------------------------------------------------------
def atomic_write(path, write):
    """``write(tmp_path)`` then rename to ``path``; on any failure remove the temp file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        faults.hit("checkpoint_file")
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e.strerror or e} "
                                  f"(earlier checkpoints are intact)") from e
        raise


def _write_json(obj, tmp):
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def ema_average(ema):
    """The EMA weights ``ema.apply()`` returns, without its side effects (``apply`` counts
    epochs and may reset the EMA)."""
    epoch, cycle = ema.epoch, ema.cycle_epoch
    ema.cycle_epoch = -1
    try:
        return dict(ema.apply())
    finally:
        ema.epoch, ema.cycle_epoch = epoch, cycle


def save_checkpoint(trainer, save_dir, name, position, *, weights=None, raw_weights=None):
    """Write checkpoint ``save_dir/name`` at ``position``; returns its path (no suffix).

    Args:
        trainer: the ppdet ``Trainer`` (model, optimizer, ``use_ema``/``ema``).
        position: ``Position`` the checkpoint resumes at.
        weights: state dict for ``.pdparams`` (default: the model's current one).
        raw_weights: with EMA, the raw model weights for ``.pdema``.
    """
    os.makedirs(save_dir, exist_ok=True)
    base = os.path.join(save_dir, name)
    opt_state = dict(trainer.optimizer.state_dict())
    opt_state["last_epoch"] = position.epoch
    if trainer.use_ema:
        ema = trainer.ema
        opt_state["ema"] = {"state": dict(ema.state_dict), "step": ema.step, "epoch": ema.epoch}
    atomic_write(base + ".pdopt", lambda tmp: paddle.save(opt_state, tmp))
    if raw_weights is not None:
        atomic_write(base + ".pdema", lambda tmp: paddle.save(raw_weights, tmp))
    state = {"version": STATE_VERSION, **dataclasses.asdict(position)}
    atomic_write(base + STATE_SUFFIX, lambda tmp: _write_json(state, tmp))
    weights = trainer.model.state_dict() if weights is None else weights
    atomic_write(base + ".pdparams", lambda tmp: paddle.save(weights, tmp))
    faults.hit("checkpoint_done")
    logger.info(f"Saved checkpoint {base} (epoch {position.epoch}, step {position.step})")
    _prune_step_checkpoints(save_dir, position)
    return base


def _prune_step_checkpoints(save_dir, newest):
    for base in _complete_checkpoints(save_dir):
        if _STEP_NAME.match(os.path.basename(base)):
            pos = _position_for_sorting(base)
            if pos is not None and pos.sort_key() < newest.sort_key():
                for suffix in FILE_SUFFIXES:
                    if os.path.exists(base + suffix):
                        os.remove(base + suffix)


def remove_stale_temp_files(save_dir):
    """Delete ``*.tmp<pid>`` files whose writer is gone (killed mid-write). Returns them."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(save_dir), "*.tmp*")):
        m = _TMP.search(path)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        os.remove(path)
        removed.append(path)
    if removed:
        logger.info(f"removed {len(removed)} temp file(s) of an interrupted write in {save_dir}")
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- finding -------------------------------------------------------------------------
def _complete_checkpoints(save_dir):
    out = []
    for params in glob.glob(os.path.join(glob.escape(save_dir), "*.pdparams")):
        base = params[: -len(".pdparams")]
        if os.path.exists(base + ".pdopt"):
            out.append(base)
    return out


def _read_state_json(base):
    with open(base + STATE_SUFFIX) as f:
        state = json.load(f)
    fields = {f.name for f in dataclasses.fields(Position)}
    return Position(**{k: v for k, v in state.items() if k in fields})


def _position_for_sorting(base):
    """Position from the state file, else from a ppdet-style name; None if unknown."""
    if os.path.exists(base + STATE_SUFFIX):
        try:
            return _read_state_json(base)
        except (OSError, ValueError, TypeError) as e:
            logger.warning(f"ignoring checkpoint {base}: unreadable {STATE_SUFFIX} ({e})")
            return None
    name = os.path.basename(base)
    if name.isdigit():
        return Position(epoch=int(name) + 1)
    if name == "model_final":
        return Position(epoch=10 ** 9)
    return None


def find_resume_checkpoint(save_dir):
    """The complete checkpoint furthest into training in ``save_dir`` (``best_model`` is
    never picked: it is an evaluation choice, not the latest state). None if there is none."""
    best, best_key = None, None
    for base in _complete_checkpoints(save_dir):
        if os.path.basename(base) == "best_model":
            continue
        pos = _position_for_sorting(base)
        if pos is None:
            continue
        if best_key is None or pos.sort_key() > best_key:
            best, best_key = base, pos.sort_key()
    return best


# -- reading -------------------------------------------------------------------------
def _load_file(path):
    """Every checkpoint file is read here (one place to swap in a safe loader)."""
    try:
        return paddle.load(path)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e}") from e


def read_position(base):
    """``Position`` of checkpoint ``base``: its state file, else ppdet's ``last_epoch``."""
    if not os.path.exists(base + ".pdparams"):
        raise CheckpointNotFoundError(f"no checkpoint {base}.pdparams (give a checkpoint "
                                      f"path like output/<config>/3, or --resume auto)")
    if os.path.exists(base + STATE_SUFFIX):
        try:
            return _read_state_json(base)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{base}{STATE_SUFFIX}: not a checkpoint state file ({e})")
    last_epoch = 0
    if os.path.exists(base + ".pdopt"):
        last_epoch = int(_load_file(base + ".pdopt").get("last_epoch", 0))
    return Position(epoch=last_epoch)


def _set_model_weights(model, weights, path):
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} of the model's {len(own)} tensors are "
                              f"missing (e.g. '{missing[0]}'): a checkpoint of another model?")
    model.set_state_dict({k: weights[k] for k in own})


def load_checkpoint(trainer, base):
    """Restore model, optimizer (LR schedule included), EMA and position from ``base``.

    Sets ``trainer.start_epoch`` and returns the ``Position``; the caller makes the loader
    skip ``position.step`` batches of that epoch.
    """
    position = read_position(base)
    params = _load_file(base + ".pdparams")
    opt_state = dict(_load_file(base + ".pdopt")) if os.path.exists(base + ".pdopt") else {}
    opt_state.pop("last_epoch", None)
    ema_state = opt_state.pop("ema", None)
    use_ema = getattr(trainer, "use_ema", False)
    model_weights = params
    if use_ema and os.path.exists(base + ".pdema"):
        model_weights = _load_file(base + ".pdema")
    _set_model_weights(trainer.model, model_weights, base + ".pdparams")
    if opt_state:
        trainer.optimizer.set_state_dict(opt_state)
    if use_ema:
        if ema_state is not None:
            trainer.ema.state_dict = dict(ema_state["state"])
            trainer.ema.step = int(ema_state["step"])
            trainer.ema.epoch = int(ema_state["epoch"])
        else:  # a ppdet checkpoint: its averaged weights restart the EMA (not exact)
            step = opt_state.get("LR_Scheduler", {}).get("last_epoch", 0)
            trainer.ema.resume(params, step)
    trainer.start_epoch = position.epoch
    return position
