"""``DetTrainer``: ppdet's own Trainer plus our training-time features, added as
callbacks and a batch-sampler injection rather than edits to ppdet's loop.

Config knobs it reads (all under ``TrainReader``):
  * ``aspect_grouping: {ratio_bins: [1.0], seed: 0}`` — batches never mix aspect-ratio
    groups (``ppdet_ext.data.aspect_sampler``); ``len(loader)`` (and so the LR schedule)
    counts the grouped batches exactly.
  * ``stop_strong_aug_epoch: N`` + ``strong_aug_ops: [RandomDistort, ...]`` — from epoch N
    on, those sample transforms are skipped (RT-DETRv2's "no strong aug at the end").
"""
import contextlib

from ppdet.core import workspace
from ppdet.core.workspace import create
from ppdet.engine import Trainer
from ppdet.engine.callbacks import Callback, Checkpointer, VisualDLWriter
from ppdet.utils.logger import setup_logger

from ppdet_ext.data.aspect_sampler import AspectRatioBatchSampler

from .callbacks import AtomicCheckpointer, ProgressBar, SamplerEpoch, StepLogger

logger = setup_logger("ppdet_ext.trainer")


class _SamplerInjectingReader:
    """Stands in for ``TrainReader`` while ppdet's Trainer builds its loader, passing our
    batch sampler to ppdet's reader (the Trainer itself never passes one)."""

    def __init__(self, reader, grouping, on_sampler):
        self.reader = reader
        self.grouping = dict(grouping or {})
        self.on_sampler = on_sampler

    def __call__(self, dataset, worker_num, batch_sampler=None, return_list=False):
        if batch_sampler is None:
            batch_sampler = AspectRatioBatchSampler(
                dataset, self.reader.batch_size, shuffle=self.reader.shuffle,
                drop_last=self.reader.drop_last, **self.grouping)
            self.on_sampler(batch_sampler)
        return self.reader(dataset, worker_num, batch_sampler=batch_sampler,
                           return_list=return_list)


class StrongAugSwitch(Callback):
    """Drop the named sample transforms from epoch ``stop_epoch`` on."""

    def __init__(self, trainer, stop_epoch, op_names):
        super().__init__(trainer)
        self.stop_epoch = int(stop_epoch)
        self.op_names = set(op_names)
        self.done = False

    def on_epoch_begin(self, status):
        if self.done or status["mode"] != "train" or status["epoch_id"] < self.stop_epoch:
            return
        loader = self.model.loader
        compose = loader.dataset.transform
        before = len(compose.transforms_cls)
        compose.transforms_cls = [t for t in compose.transforms_cls
                                  if type(t).__name__ not in self.op_names]
        # worker processes of the current epoch were forked with the old transforms
        loader.loader = iter(loader.dataloader)
        self.done = True
        logger.info(f"epoch {status['epoch_id']}: strong augmentation off "
                    f"({before - len(compose.transforms_cls)} transforms removed)")


class DetTrainer(Trainer):
    """ppdet ``Trainer`` with grouped batches, atomic checkpoints and global-step logs."""

    def __init__(self, cfg, mode="train"):
        self.batch_sampler = None
        self.last_metric_results = {}
        # kept aside: while the sampler is injected, cfg["TrainReader"] is the injector
        self._train_reader_cfg = cfg.get("TrainReader") or {}
        grouping = None
        if mode == "train":
            grouping = self._train_reader_cfg.get("aspect_grouping")
        ctx = self._inject_sampler(grouping) if grouping else contextlib.nullcontext()
        with ctx:
            super().__init__(cfg, mode)

    @contextlib.contextmanager
    def _inject_sampler(self, grouping):
        gcfg = workspace.global_config
        schema = gcfg["TrainReader"]
        reader = create("TrainReader")

        def keep(sampler):
            self.batch_sampler = sampler

        dict.__setitem__(gcfg, "TrainReader", _SamplerInjectingReader(reader, grouping, keep))
        try:
            yield
        finally:
            dict.__setitem__(gcfg, "TrainReader", schema)
            if hasattr(self, "cfg"):
                self.cfg["TrainReader"] = schema

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
        super()._init_callbacks()
        if self.mode != "train":
            return
        callbacks = [cb for cb in self._callbacks
                     if not isinstance(cb, (Checkpointer, VisualDLWriter))]
        callbacks.append(AtomicCheckpointer(self))
        callbacks.append(StepLogger(self, use_vdl=bool(self.cfg.get("use_vdl", False))))
        callbacks.append(ProgressBar(self))
        # any epoch-aware sampler (ours, or paddle's DistributedBatchSampler, whose own
        # counter restarts at 0 on resume) is told the epoch, so a resumed run sees the
        # same batch order as an uninterrupted one
        sampler = self.batch_sampler or getattr(self.loader, "_batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            callbacks.append(SamplerEpoch(self, sampler))
        reader_cfg = self._train_reader_cfg
        stop = reader_cfg.get("stop_strong_aug_epoch")
        if stop is not None:
            callbacks.append(StrongAugSwitch(self, stop, reader_cfg.get("strong_aug_ops", [])))
        self._callbacks = []
        self.register_callbacks(callbacks)
