"""EpochLoader: an epoch's batches (order and augmented pixels) depend only on the seed
and the epoch, not on which epochs ran before, on skipping, or on loader processes."""
import numpy as np
import pytest

from ppdet.core.workspace import create

from ppdet_ext.data.aspect_sampler import AspectRatioBatchSampler
from ppdet_ext.data.epoch_loader import EpochLoader, SeededSamples
from ppdet_ext.engine.config import load_config
from train_helpers import write_train_config


@pytest.fixture
def make_loader(tmp_path, repo_cwd):
    load_config(write_train_config(tmp_path))

    def make(worker_num=0, seed=3):
        reader = create("TrainReader")
        dataset = create("TrainDataset")()
        sampler = AspectRatioBatchSampler(dataset, reader.batch_size, shuffle=True,
                                          drop_last=True, seed=seed, num_replicas=1, rank=0)
        return EpochLoader(reader, dataset, worker_num, sampler, seed=seed)
    return make


def _epoch(loader, epoch, skip=0):
    loader.set_epoch(epoch, skip)
    return [{k: v.numpy() for k, v in batch.items()} for batch in loader]


def _same(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b))


def test_epoch_is_the_same_whatever_ran_before(make_loader):
    direct = _epoch(make_loader(), 1)
    loader = make_loader()
    e0 = _epoch(loader, 0)
    assert _same(_epoch(loader, 1), direct)
    assert _same(_epoch(loader, 1), direct)          # iterating again repeats it
    assert not _same(e0, direct)
    assert len(direct) == len(loader)


def test_skip_drops_exactly_the_first_batches(make_loader):
    loader = make_loader()
    full = _epoch(loader, 2)
    assert _same(_epoch(loader, 2, skip=2), full[2:])
    assert _epoch(loader, 2, skip=len(loader)) == []


def test_loader_processes_build_the_same_batches(make_loader):
    inline = _epoch(make_loader(), 1)
    assert _same(_epoch(make_loader(worker_num=2), 1), inline)


def test_augmentation_is_seeded_per_seed_epoch_and_index(make_loader):
    loader = make_loader()
    samples = SeededSamples(loader.dataset, seed=3)
    other_seed = SeededSamples(loader.dataset, seed=4)

    def image(s, idx, epoch):
        return s[(idx, epoch, 0)]["image"]

    for idx in range(4):
        assert np.array_equal(image(samples, idx, 0), image(samples, idx, 0))
    # RandomFlip(0.5): over 8 images some flip differently between epochs / seeds
    assert any(not np.array_equal(image(samples, i, 0), image(samples, i, 1)) for i in range(8))
    assert any(not np.array_equal(image(samples, i, 0), image(other_seed, i, 0))
               for i in range(8))
