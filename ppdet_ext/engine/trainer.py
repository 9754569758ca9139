"""``DetTrainer``: ppdet's own Trainer plus our training-time features, added as
callbacks and a loader injection rather than edits to ppdet's loop.

* The training loader is our ``EpochLoader`` over an ``AspectRatioBatchSampler``: each
  epoch's batches and augmentation are a pure function of (seed, epoch, world size,
  rank), built when the epoch starts (docs/training.md).
* ``resume(checkpoint)`` restores model, optimizer, LR schedule, EMA and the position,
  mid-epoch included; training then continues exactly where the checkpoint was written.

Config knobs it reads (all under ``TrainReader``):
  * ``aspect_grouping: {ratio_bins: [1.0], seed: S}`` — batches never mix aspect-ratio
    groups (``ppdet_ext.data.aspect_sampler``); ``len(loader)`` (and so the LR schedule)
    counts the grouped batches exactly. Without it, one group (plain shuffled batches).
    ``seed`` defaults to the run's seed.
  * ``stop_strong_aug_epoch: N`` + ``strong_aug_ops: [RandomDistort, ...]`` — from epoch N
    on, those sample transforms are skipped (RT-DETRv2's "no strong aug at the end").
"""
import contextlib

import paddle.distributed as dist

from ppdet.core import workspace
from ppdet.core.workspace import create
from ppdet.engine import Trainer
from ppdet.engine.callbacks import Callback, Checkpointer
from ppdet.utils.logger import setup_logger

from ppdet_ext.data.aspect_sampler import AspectRatioBatchSampler
from ppdet_ext.data.epoch_loader import EpochLoader

from .callbacks import AtomicCheckpointer, EpochDriver, ProgressBar, StepLogger
from .checkpoint import Position, load_checkpoint

logger = setup_logger("ppdet_ext.trainer")


class _EpochLoaderFactory:
    """Stands in for ``TrainReader`` while ppdet's Trainer builds its loader: returns an
    ``EpochLoader`` (ppdet's reader would start prefetching epoch 0 right away)."""

    def __init__(self, reader, grouping, seed):
        self.reader = reader
        self.grouping = dict(grouping or {"ratio_bins": ()})
        self.grouping.setdefault("seed", seed)
        self.seed = seed

    def __call__(self, dataset, worker_num, batch_sampler=None, return_list=False):
        # the sampler reads image sizes on first use, after EpochLoader parsed the dataset
        batch_sampler = batch_sampler or AspectRatioBatchSampler(
            dataset, self.reader.batch_size, shuffle=self.reader.shuffle,
            drop_last=self.reader.drop_last, **self.grouping)
        return EpochLoader(self.reader, dataset, worker_num, batch_sampler, seed=self.seed)


class StrongAugSwitch(Callback):
    """Drop the named sample transforms from epoch ``stop_epoch`` on (the loader builds
    each epoch's batches, and forks its workers, after ``on_epoch_begin``)."""

    def __init__(self, trainer, stop_epoch, op_names):
        super().__init__(trainer)
        self.stop_epoch = int(stop_epoch)
        self.op_names = set(op_names)
        self.done = False

    def on_epoch_begin(self, status):
        if self.done or status["mode"] != "train" or status["epoch_id"] < self.stop_epoch:
            return
        compose = self.model.loader.dataset.transform
        before = len(compose.transforms_cls)
        compose.transforms_cls = [t for t in compose.transforms_cls
                                  if type(t).__name__ not in self.op_names]
        self.done = True
        logger.info(f"epoch {status['epoch_id']}: strong augmentation off "
                    f"({before - len(compose.transforms_cls)} transforms removed)")


class DetTrainer(Trainer):
    """ppdet ``Trainer`` with epoch-pure batches, exact resume, atomic checkpoints,
    global-step logs and a graceful stop on Ctrl-C / SIGTERM.

    Args:
        cfg: the loaded config.
        mode: ``train``, ``eval`` or ``test``.
        seed: the run's seed (sampler order, augmentation, per-step RNG); default
            ``cfg.seed`` or 0.
    """

    def __init__(self, cfg, mode="train", *, seed=None):
        self.seed = int(seed if seed is not None else (cfg.get("seed") or 0))
        self.last_metric_results = {}
        self.start_position = Position(epoch=0)
        self.resumed_from = None
        self.stop_request = None  # an interrupt.StopRequest while training
        # kept aside: while the loader is injected, cfg["TrainReader"] is the factory
        self._train_reader_cfg = cfg.get("TrainReader") or {}
        ctx = contextlib.nullcontext()
        if mode == "train":
            ctx = self._inject_loader(self._train_reader_cfg.get("aspect_grouping"))
        with ctx:
            super().__init__(cfg, mode)

    @property
    def batch_sampler(self):
        return self.loader.batch_sampler if isinstance(self.loader, EpochLoader) else None

    @contextlib.contextmanager
    def _inject_loader(self, grouping):
        gcfg = workspace.global_config
        schema = gcfg["TrainReader"]
        reader = create("TrainReader")
        factory = _EpochLoaderFactory(reader, grouping, self.seed)
        dict.__setitem__(gcfg, "TrainReader", factory)
        try:
            yield
        finally:
            dict.__setitem__(gcfg, "TrainReader", schema)
            if hasattr(self, "cfg"):
                self.cfg["TrainReader"] = schema

    def resume(self, checkpoint):
        """Continue from ``checkpoint`` (path without suffix); returns its ``Position``."""
        position = load_checkpoint(self, checkpoint)
        steps = len(self.loader)
        world = dist.get_world_size()
        if position.world_size not in (None, world) or \
                position.steps_per_epoch not in (None, steps):
            logger.warning(
                f"{checkpoint} was written by {position.world_size} rank(s) with "
                f"{position.steps_per_epoch} steps per epoch, this run has {world} with "
                f"{steps}: batch order and LR schedule differ from the original run")
            position.step = min(position.step, steps)
        self.start_position = position
        self.resumed_from = checkpoint
        return position

    def _reset_metrics(self):
        """ppdet resets its metrics right after an evaluation logs them, so the results
        are gone before the caller can read them: keep the last non-empty ones."""
        results = {}
        for metric in getattr(self, "_metrics", []):
            results.update(metric.get_results() or {})
        if results:
            self.last_metric_results = results
        super()._reset_metrics()

    def _init_callbacks(self):
        # ppdet's VisualDLWriter opens a LogWriter as it is built (./vdl_log_dir by default,
        # or a second writer on our folder); StepLogger replaces it, so it is never built
        use_vdl = self.cfg.get("use_vdl", False)
        self.cfg["use_vdl"] = False
        try:
            super()._init_callbacks()
        finally:
            self.cfg["use_vdl"] = use_vdl
        if self.mode != "train":
            return
        callbacks = [cb for cb in self._callbacks
                     if not isinstance(cb, Checkpointer)]
        callbacks.insert(0, EpochDriver(self, seed=self.seed))
        callbacks.append(StepLogger(self, use_vdl=bool(self.cfg.get("use_vdl", False))))
        callbacks.append(ProgressBar(self))
        reader_cfg = self._train_reader_cfg
        stop = reader_cfg.get("stop_strong_aug_epoch")
        if stop is not None:
            callbacks.append(StrongAugSwitch(self, stop, reader_cfg.get("strong_aug_ops", [])))
        # last: a stop request is acted on after every other callback saw the step
        callbacks.append(AtomicCheckpointer(self, seed=self.seed))
        self._callbacks = []
        self.register_callbacks(callbacks)
