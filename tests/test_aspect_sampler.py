"""AspectRatioBatchSampler invariants."""
import itertools

import pytest

from ppdet_ext.data.aspect_sampler import AspectRatioBatchSampler

# 23 images: 9 portrait (h > w), 14 landscape, 1 square (goes with portrait: h/w >= 1.0)
SIZES = [(640, 480)] * 9 + [(480, 640)] * 14
SIZES[3] = (500, 500)


def _group(i):
    h, w = SIZES[i]
    return h / w >= 1.0


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("bs", [1, 3, 4, 8])
def test_one_group_per_batch_and_exact_len(drop_last, bs):
    s = AspectRatioBatchSampler(SIZES, bs, drop_last=drop_last, num_replicas=1, rank=0)
    batches = list(s)
    assert len(s) == len(batches)
    for b in batches:
        assert len({_group(i) for i in b}) == 1
        assert len(b) <= bs
        if drop_last:
            assert len(b) == bs


def test_every_index_once_per_epoch_without_drop_last():
    s = AspectRatioBatchSampler(SIZES, 4, drop_last=False, num_replicas=1, rank=0)
    for _ in range(3):
        flat = [i for b in s for i in b]
        assert sorted(flat) == list(range(len(SIZES)))


def test_drop_last_drops_only_incomplete_group_tails():
    s = AspectRatioBatchSampler(SIZES, 4, drop_last=True, num_replicas=1, rank=0)
    flat = [i for b in s for i in b]
    assert len(flat) == len(set(flat)) == 4 * (10 // 4) + 4 * (13 // 4)


def test_shuffle_changes_across_epochs_and_set_epoch_reproduces():
    s = AspectRatioBatchSampler(SIZES, 4, num_replicas=1, rank=0, seed=7)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0)
    assert list(s) == e0


def test_no_shuffle_is_deterministic_and_ordered():
    s = AspectRatioBatchSampler(SIZES, 4, shuffle=False, num_replicas=1, rank=0)
    assert list(s) == list(s)
    flat = [i for b in s for i in b]
    landscape = [i for i in range(len(SIZES)) if not _group(i)]
    portrait = [i for i in range(len(SIZES)) if _group(i)]
    assert flat == landscape + portrait  # bin order (h/w < 1.0 first), then index order


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shares(world, drop_last):
    samplers = [AspectRatioBatchSampler(SIZES, 3, drop_last=drop_last, seed=1,
                                        num_replicas=world, rank=r) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1                      # same step count
    assert all(len(s) == len(b) for s, b in zip(samplers, per_rank))
    flat = [i for batches in per_rank for b in batches for i in b]
    if drop_last:
        assert len(flat) == len(set(flat))                           # disjoint shares
    else:
        assert set(flat) == set(range(len(SIZES)))                   # every index covered
        # duplicates only from top-up batches (fewer than `world` of them)
        assert len(flat) - len(SIZES) < world * 3
    for a, b in itertools.combinations(per_rank, 2):
        if drop_last:
            assert not {i for x in a for i in x} & {i for x in b for i in x}


def test_finer_bins():
    sizes = [(100, 300), (100, 150), (100, 100), (150, 100), (300, 100)] * 4
    s = AspectRatioBatchSampler(sizes, 4, ratio_bins=[0.5, 1.0, 2.0], num_replicas=1, rank=0)
    assert len(s.groups()) == 4  # <0.5, [0.5,1), [1,2), >=2
    for b in s:
        ratios = {sizes[i][0] / sizes[i][1] for i in b}
        bins = {sum(r >= t for t in (0.5, 1.0, 2.0)) for r in ratios}
        assert len(bins) == 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        AspectRatioBatchSampler(SIZES, 0, num_replicas=1, rank=0)
    with pytest.raises(ValueError):
        AspectRatioBatchSampler(SIZES, 2, ratio_bins=[2.0, 1.0], num_replicas=1, rank=0)
    with pytest.raises(ValueError):
        AspectRatioBatchSampler(SIZES, 2, num_replicas=2, rank=2)


# -- an epoch's batches are a pure function of (seed, epoch, world size, rank) -----------
def test_batches_are_pure_in_the_epoch():
    a = AspectRatioBatchSampler(SIZES, 3, seed=5, num_replicas=1, rank=0)
    b = AspectRatioBatchSampler(SIZES, 3, seed=5, num_replicas=1, rank=0)
    first = [a.batches(e) for e in (2, 0, 1)]
    a.set_epoch(7)                                   # iteration state does not leak in
    list(a)
    assert [a.batches(e) for e in (2, 0, 1)] == first
    assert [b.batches(e) for e in (2, 0, 1)] == first      # nor does object history
    assert all(len(a) == len(a.batches(e)) for e in range(5))
    a.set_epoch(1)
    assert list(a) == a.batches(1)


def test_seed_and_epoch_are_mixed_not_added():
    s0 = AspectRatioBatchSampler(SIZES, 3, seed=0, num_replicas=1, rank=0)
    s1 = AspectRatioBatchSampler(SIZES, 3, seed=1, num_replicas=1, rank=0)
    assert s0.batches(1) != s1.batches(0)
    assert s0.batches(0) != s1.batches(0)


@pytest.mark.parametrize("drop_last", [False, True])
def test_no_bins_is_one_shuffled_group(drop_last):
    s = AspectRatioBatchSampler(SIZES, 4, ratio_bins=(), drop_last=drop_last,
                                num_replicas=1, rank=0)
    assert list(s.groups()) == [0]
    batches = s.batches(0)
    assert len(s) == len(batches) == (len(SIZES) // 4 if drop_last else -(-len(SIZES) // 4))
    assert len({_group(i) for b in batches for i in b}) == 2   # groups mix: no grouping
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_every_epoch(world):
    for epoch in range(4):
        shards = [AspectRatioBatchSampler(SIZES, 2, seed=3, num_replicas=world,
                                          rank=r).batches(epoch) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        glob = AspectRatioBatchSampler(SIZES, 2, seed=3, num_replicas=1, rank=0)
        # the ranks' batches interleaved are the single-process batch list (topped up)
        interleaved = [b for step in zip(*shards) for b in step]
        full = glob.global_batches(epoch)
        assert interleaved[:len(full)] == full[:len(interleaved)]
