"""Training-time batch sampler that never mixes aspect-ratio groups in a batch.

Keep-ratio models pad every image of a batch to the batch's largest height and width:
one portrait image among landscape ones nearly squares the batch. Grouping by aspect
ratio (``h / w`` binned by ``ratio_bins``; ``[1.0]`` = portrait vs landscape) removes
most of that padding. ``ratio_bins=()`` puts every image in one group: the plain
shuffled, rank-sharded batch sampler the trainer uses when grouping is off.

An epoch's batches are a pure function of ``(seed, epoch, num_replicas, rank)``:
``batches(epoch)`` computes them from its arguments only, so nothing depends on when a
loader thread or worker happens to call it (``ppdet_ext.data.epoch_loader``).

Invariants (tests/test_aspect_sampler.py):
  * every batch holds indices of exactly one group, the last one included;
  * ``len(sampler) == len(sampler.batches(e))``, with and without ``drop_last``;
  * single process: every index exactly once per epoch (or dropped with ``drop_last``);
  * the order changes with the epoch and is identical on every rank;
  * rank ``r`` of ``R`` gets batches ``r, r+R, ...``; with ``drop_last`` the batch list is
    cut to a multiple of ``R``, otherwise it is topped up by repeating its first batches,
    so every rank runs the same number of steps.
"""
import bisect
import math

import numpy as np


class AspectRatioBatchSampler:
    """Batch sampler over a ppdet dataset (or any sequence of (h, w) sizes).

    Args:
        dataset: a ppdet ``DetDataset`` (its ``roidbs`` must hold ``h``/``w``, read lazily
            after the loader has parsed it) or a list of ``(h, w)`` tuples.
        batch_size: images per batch.
        shuffle: shuffle within groups and the batch order, differently for every epoch.
        drop_last: drop each group's incomplete last batch.
        ratio_bins: ascending thresholds on ``h / w`` separating groups; empty: one group.
        seed: base seed, mixed with the epoch (not added to it: seed 0 epoch 1 and seed 1
            epoch 0 give different orders).
        num_replicas, rank: distributed world size and rank (default: from Paddle).
    """

    def __init__(self, dataset, batch_size, *, shuffle=True, drop_last=False,
                 ratio_bins=(1.0,), seed=0, num_replicas=None, rank=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if list(ratio_bins) != sorted(ratio_bins):
            raise ValueError(f"ratio_bins must be ascending, got {ratio_bins}")
        if num_replicas is None or rank is None:
            import paddle.distributed as dist
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world of size {num_replicas}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.ratio_bins = list(ratio_bins)
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._groups = None

    def set_epoch(self, epoch):
        """Epoch used by ``iter(sampler)`` (for loaders that only call ``iter``)."""
        self.epoch = int(epoch)

    # -- grouping ---------------------------------------------------------------
    def _sizes(self):
        roidbs = getattr(self.dataset, "roidbs", None)
        if roidbs is None:
            return [tuple(s) for s in self.dataset]
        return [(float(r["h"]), float(r["w"])) for r in roidbs]

    def groups(self):
        """``{group_id: [indices]}``, computed once (sizes do not change)."""
        if self._groups is None:
            if not self.ratio_bins:  # one group: sizes are not needed
                n = len(getattr(self.dataset, "roidbs", None) or self.dataset)
                self._groups = {0: list(range(n))}
                return self._groups
            groups = {}
            for idx, (h, w) in enumerate(self._sizes()):
                gid = bisect.bisect_right(self.ratio_bins, h / max(w, 1e-6))
                groups.setdefault(gid, []).append(idx)
            self._groups = groups
        return self._groups

    def _num_global_batches(self):
        rnd = math.floor if self.drop_last else math.ceil
        return sum(rnd(len(v) / self.batch_size) for v in self.groups().values())

    def __len__(self):
        n = self._num_global_batches()
        if self.drop_last:
            return n // self.num_replicas
        return math.ceil(n / self.num_replicas)

    def global_batches(self, epoch):
        """All ranks' batches of ``epoch``, in order (the same on every rank)."""
        rng = np.random.RandomState([self.seed % 2 ** 32, int(epoch) % 2 ** 32])
        batches = []
        for gid in sorted(self.groups()):
            idx = list(self.groups()[gid])
            if self.shuffle:
                rng.shuffle(idx)
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                batches.append(chunk)
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def batches(self, epoch):
        """This rank's batches of ``epoch``: ``len(self)`` lists of dataset indices."""
        batches = self.global_batches(epoch)
        total = len(self) * self.num_replicas
        if total <= len(batches):
            batches = batches[:total]
        else:  # top up so every rank runs the same number of steps
            batches = batches + [batches[i % len(batches)] for i in range(total - len(batches))]
        return batches[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.batches(self.epoch))
