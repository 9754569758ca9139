"""The training loader: each epoch's batches and augmentation are fixed before it starts.

ppdet's ``TrainReader`` creates the next epoch's iterator as soon as the current one ends,
and Paddle's loader starts drawing batches from the sampler on a prefetch thread right
then: before the trainer has told the sampler the new epoch. Which order an epoch gets
depends on thread timing, and a resumed run starts at epoch 0's order. Augmentation draws
from the process-global numpy / ``random`` state of whatever thread or worker builds the
sample, so it is not repeatable either.

``EpochLoader`` builds an epoch's iterator only when the epoch is iterated, from
``set_epoch(epoch, skip)`` told beforehand:

* batches = ``batch_sampler.batches(epoch)[skip:]`` (a pure function of seed, epoch,
  world size, rank); ``skip`` is the number of batches a resumed run already did;
* every sample reseeds numpy and ``random`` from ``(seed, epoch, dataset index)`` before
  ppdet reads and transforms it (random flips, crops, mixup partners), and the batch
  transforms run right after their samples in the same process, so a batch is the same
  whichever worker builds it and whenever;
* ``worker_num: 0`` builds batches inline in the training thread (no prefetch thread);
  ``worker_num > 0`` uses Paddle's multi-process ``DataLoader`` over the fixed batch list,
  with SIGINT ignored in the workers (Ctrl-C is the trainer's to handle).
"""
import random
import signal

import numpy as np
import paddle


def sample_seed(seed, epoch, index):
    """``(numpy_seed, python_seed)`` for one sample: pure in its arguments."""
    a, b = np.random.SeedSequence([0, int(seed), int(epoch), int(index)]).generate_state(2)
    return int(a), int(b)


def step_seed(seed, global_step):
    """The seed the trainer gives paddle/numpy/``random`` before ``global_step``."""
    return int(np.random.SeedSequence([1, int(seed), int(global_step)]).generate_state(1)[0])


def seed_everything(seed):
    """Seed paddle, numpy and ``random`` (the three RNGs training code draws from)."""
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class SeededSamples:
    """Map-style dataset view whose keys are ``(index, epoch, step)``: reseeds the RNGs
    from ``(seed, epoch, index)``, then returns ``dataset[index]``."""

    def __init__(self, dataset, seed):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch, step = key
        np_seed, py_seed = sample_seed(self.seed, epoch, index)
        np.random.seed(np_seed)
        random.seed(py_seed)
        # ppdet stamps each sample with a per-process counter; make it the global step
        if hasattr(self.dataset, "_curr_iter"):
            self.dataset._curr_iter = step
        return self.dataset[index]


def _ignore_sigint(worker_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_tensors(batch):
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_tensors(v) for v in batch)
    if isinstance(batch, np.ndarray):
        return paddle.to_tensor(batch)  # on the current device, as Paddle's loader does
    return batch


class EpochLoader:
    """Drop-in for the object ppdet's ``TrainReader(dataset, worker_num)`` returns.

    Args:
        reader: the ``TrainReader`` instance (its sample/batch transforms and kwargs).
        dataset: the ppdet training dataset (parsed here, as ppdet's reader does).
        worker_num: loader processes; 0 builds batches inline.
        batch_sampler: an object with ``batches(epoch)`` and ``len()``
            (``AspectRatioBatchSampler``).
        seed: augmentation seed (see ``sample_seed``).
    """

    def __init__(self, reader, dataset, worker_num, batch_sampler, *, seed):
        dataset.check_or_download_dataset()
        dataset.parse_dataset()
        dataset.set_transform(reader._sample_transforms)
        dataset.set_kwargs(**reader.kwargs)
        self.dataset = dataset
        self._batch_sampler = batch_sampler
        self.collate = reader._batch_transforms
        self.worker_num = int(worker_num)
        self.use_shared_memory = bool(getattr(reader, "use_shared_memory", False))
        self.seed = int(seed)
        self.epoch = 0
        self.skip = 0

    @property
    def batch_sampler(self):
        return self._batch_sampler

    def set_epoch(self, epoch, skip=0):
        """The epoch the next ``iter()`` runs, and how many of its batches to skip."""
        self.epoch, self.skip = int(epoch), int(skip)

    def __len__(self):
        """Steps in a full epoch (skipped batches included: the LR schedule counts them)."""
        return len(self._batch_sampler)

    def epoch_keys(self, epoch, skip=0):
        """Per remaining batch of ``epoch``: its ``(index, epoch, step)`` sample keys."""
        batches = self._batch_sampler.batches(epoch)
        return [[(int(i), epoch, step) for i in batch]
                for step, batch in enumerate(batches) if step >= skip]

    def __iter__(self):
        keys = self.epoch_keys(self.epoch, self.skip)
        samples = SeededSamples(self.dataset, self.seed)
        if self.worker_num == 0:
            return (_to_tensors(self.collate([samples[k] for k in batch])) for batch in keys)
        loader = paddle.io.DataLoader(
            samples, batch_sampler=keys, collate_fn=self.collate,
            num_workers=self.worker_num, use_shared_memory=self.use_shared_memory,
            return_list=False, worker_init_fn=_ignore_sigint)
        return iter(loader)
