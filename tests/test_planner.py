"""Invariants of the shape-grouped batch planner (deploy/planner.py); pure Python, fast."""
import itertools
import random

import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.backends.base import ShapeRange
from ppdet_ext_deploy.planner import POLICIES, aspect_bins, assign_canonical, plan_batches

# A COCO-like mix after a keep-ratio resize to long side 416: landscape 4:3 and 3:2,
# portrait, square, and odd sizes that are not stride multiples.
MIX = [(312, 416), (277, 416), (416, 312), (312, 416), (416, 416), (277, 416), (416, 277),
       (199, 416), (312, 416), (416, 312), (300, 401), (5, 7), (416, 130), (312, 416)]


def random_sizes(n, seed):
    rng = random.Random(seed)
    return [(rng.randint(1, 700), rng.randint(1, 700)) for _ in range(n)]


def all_plans(sizes):
    for policy, bs in itertools.product(POLICIES, (1, 2, 3, 4, 8, 16)):
        yield plan_batches(sizes, bs, policy, stride=32)
    for bs in (1, 3, 8):
        yield plan_batches(sizes, bs, "buckets", shapes="auto")
        yield plan_batches(sizes, bs, "buckets", num_buckets=1)
        yield plan_batches(sizes, bs, "buckets", num_buckets=7)


@pytest.mark.parametrize("sizes", [MIX, random_sizes(97, 1), random_sizes(5, 2), [(10, 10)], []])
def test_every_image_exactly_once_and_batch_limits(sizes):
    for plan in all_plans(sizes):
        seen = [i for b in plan.batches for i in b.indices]
        assert sorted(seen) == list(range(len(sizes))), plan.policy
        assert all(1 <= b.size <= plan.batch_size for b in plan.batches)
        for b in plan.batches:
            assert b.shape[0] % plan.stride == 0 and b.shape[1] % plan.stride == 0
            for i in b.indices:  # every image fits in its batch's shape
                assert plan.sizes[i][0] <= b.shape[0] and plan.sizes[i][1] <= b.shape[1]


def test_number_of_batches_is_sum_of_ceil_per_group():
    for bs in (1, 2, 3, 5, 8):
        plan = plan_batches(MIX, bs, "orientation")
        land = sum(1 for h, w in MIX if h <= w)
        port = len(MIX) - land
        assert len(plan.batches) == -(-land // bs) + -(-port // bs)
        plan = plan_batches(MIX, bs, "none")
        assert len(plan.batches) == -(-len(MIX) // bs)


def test_restore_returns_callers_order():
    for plan in all_plans(MIX):
        per_batch = [[f"img{i}" for i in b.indices] for b in plan.batches]
        assert plan.restore(per_batch) == [f"img{i}" for i in range(len(MIX))]


def test_restore_rejects_wrong_lengths():
    plan = plan_batches(MIX, 4, "buckets")
    with pytest.raises(ValueError):
        plan.restore([[0] * b.size for b in plan.batches][:-1])
    with pytest.raises(ValueError):
        plan.restore([[0] * (b.size + 1) for b in plan.batches])


def test_deterministic():
    sizes = random_sizes(200, 3)
    for a, b in zip(all_plans(sizes), all_plans(list(sizes))):
        assert [x.indices for x in a.batches] == [x.indices for x in b.batches]
        assert [x.shape for x in a.batches] == [x.shape for x in b.batches]


def test_none_is_consecutive_slices_in_order():
    plan = plan_batches(MIX, 4, "none")
    assert [b.indices for b in plan.batches] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13)]


def test_orientation_never_mixes():
    plan = plan_batches(MIX, 8, "orientation")
    for b in plan.batches:
        kinds = {MIX[i][0] > MIX[i][1] for i in b.indices}
        assert len(kinds) == 1
        # caller order inside a bucket
        assert list(b.indices) == sorted(b.indices)


def test_shape_policy_pads_exactly_like_bs1():
    bs1 = plan_batches(MIX, 1, "none")
    alone = {b.indices[0]: b.shape for b in bs1.batches}
    for bs in (2, 4, 8):
        for b in plan_batches(MIX, bs, "shape").batches:
            assert all(alone[i] == b.shape for i in b.indices)


def test_waste_hand_made():
    # two images 32x64 and 64x32, stride 32, one batch: padded to 64x64 each
    plan = plan_batches([(32, 64), (64, 32)], 2, "none", stride=32)
    (b,) = plan.batches
    assert b.shape == (64, 64)
    assert b.total_pixels == 2 * 64 * 64
    assert b.content_pixels == 2 * 32 * 64
    assert b.waste_pixels == 2 * 64 * 64 - 2 * 32 * 64
    assert plan.waste_fraction == pytest.approx(0.5)
    # grouped by orientation: no padding at all
    plan = plan_batches([(32, 64), (64, 32)], 2, "orientation", stride=32)
    assert plan.waste_pixels == 0 and plan.waste_fraction == 0.0
    # stride padding alone: 30x50 -> 32x64
    plan = plan_batches([(30, 50)], 1, "none", stride=32)
    assert plan.batches[0].shape == (32, 64)
    assert plan.waste_pixels == 32 * 64 - 30 * 50
    # stride 1: no constraint
    plan = plan_batches([(30, 50), (20, 60)], 2, "none", stride=1)
    assert plan.batches[0].shape == (30, 60)
    assert plan.waste_pixels == 2 * 30 * 60 - 30 * 50 - 20 * 60


def test_grouping_reduces_waste_on_a_mix():
    none = plan_batches(MIX, 8, "none").waste_fraction
    assert plan_batches(MIX, 8, "orientation").waste_fraction < none
    assert plan_batches(MIX, 8, "buckets").waste_fraction < none
    assert plan_batches(MIX, 8, "shape").waste_fraction <= plan_batches(MIX, 1, "none").waste_fraction + 1e-12


def test_summary_numbers_match():
    plan = plan_batches(MIX, 4, "buckets")
    s = plan.summary()
    assert s["images"] == len(MIX)
    assert s["batches"] == len(plan.batches)
    assert s["waste_pixels"] == plan.total_pixels - sum(h * w for h, w in MIX)


def test_aspect_bins_keep_equal_aspects_together():
    sizes = [(100, 200)] * 5 + [(200, 100)] * 5 + [(100, 100)]
    bins = aspect_bins(sizes, 4)
    assert sorted(i for g in bins for i in g) == list(range(len(sizes)))
    owner = {i: k for k, g in enumerate(bins) for i in g}
    for a in range(len(sizes)):
        for b in range(len(sizes)):
            if sizes[a][1] / sizes[a][0] == sizes[b][1] / sizes[b][0]:
                assert owner[a] == owner[b]


def test_canonical_auto_gives_few_shapes_and_no_shrink():
    sizes = random_sizes(150, 4)
    for k in (1, 2, 3):
        plan = plan_batches(sizes, 8, "buckets", num_buckets=k, shapes="auto")
        assert len({b.shape for b in plan.batches}) <= k
        assert plan.resized == []
        assert plan.sizes == sizes


def test_canonical_explicit_shrinks_to_fit_and_keeps_aspect():
    sizes = [(300, 400), (400, 300), (600, 800), (100, 100)]
    plan = plan_batches(sizes, 4, "buckets", shapes=[(320, 416), (416, 320)])
    assert {b.shape for b in plan.batches} <= {(320, 416), (416, 320)}
    assert plan.resized == [2]  # 600x800 does not fit anywhere: shrunk into 320x416
    h, w = plan.sizes[2]
    assert h <= 320 and w <= 416 and abs(w / h - 800 / 600) < 0.02
    for i in (0, 1, 3):
        assert plan.sizes[i] == sizes[i]
    new, assign, shrunk = assign_canonical([(100, 100)], [(64, 64), (128, 128)])
    assert assign == [1] and shrunk == [] and new == [(100, 100)]


def test_fixed_input_size():
    plan = plan_batches(MIX[:5], 2, "buckets", fixed_hw=(416, 416))
    assert {b.shape for b in plan.batches} == {(416, 416)}


def test_bad_arguments():
    with pytest.raises(ValueError):
        plan_batches(MIX, 0)
    with pytest.raises(ValueError):
        plan_batches(MIX, 2, "sideways")
    with pytest.raises(ValueError):
        plan_batches(MIX, 2, "none", shapes="auto")
    with pytest.raises(ValueError):
        plan_batches(MIX, 2, "buckets", shapes=[(300, 416)])  # not a stride multiple
    with pytest.raises(ValueError):
        plan_batches([(0, 5)], 2)


def test_shape_range_covers_the_plan():
    plan = plan_batches(MIX, 4, "buckets")
    shapes = list(plan.shapes())
    r = ShapeRange.from_shapes(shapes)
    for b, h, w in shapes:
        assert r.min[0] <= b <= r.max[0] and r.min[2] <= h <= r.max[2] and r.min[3] <= w <= r.max[3]
    assert r.opt[1:] in {(3, h, w) for _, h, w in shapes}
    # a 1333-px side is inside the range, not capped
    big = ShapeRange.from_shapes([(1, 800, 1344), (2, 1344, 800)])
    assert big.max == (2, 3, 1344, 1344)
    assert big.covers(ShapeRange.from_shapes([(1, 800, 1344)]))
    assert not ShapeRange.from_shapes([(1, 800, 800)]).covers(big)


def test_auto_shapes_is_the_cheapest_contiguous_split():
    from itertools import combinations

    from ppdet_ext_deploy.planner import auto_shapes

    sizes = random_sizes(40, 5)
    stride = 64
    padded = sorted({(-(-h // stride) * stride, -(-w // stride) * stride) for h, w in sizes},
                    key=lambda s: (s[1] / s[0], s))
    count = {s: sum(1 for h, w in sizes if (-(-h // stride) * stride, -(-w // stride) * stride) == s)
             for s in padded}

    def cost(shapes):
        total = 0
        for s in padded:  # each padded shape goes to the smallest canonical shape holding it
            fits = [c for c in shapes if s[0] <= c[0] and s[1] <= c[1]]
            total += count[s] * min(c[0] * c[1] for c in fits)
        return total

    for k in (1, 2, 3):
        best = None
        for cuts in combinations(range(1, len(padded)), k - 1):
            bounds = (0,) + cuts + (len(padded),)
            runs = [padded[a:b] for a, b in zip(bounds, bounds[1:])]
            # every shape of a run pays the run's (max H, max W)
            c = sum(count[s] * max(x[0] for x in r) * max(x[1] for x in r) for r in runs for s in r)
            best = c if best is None else min(best, c)
        got = auto_shapes(sizes, k, stride)
        # assignment to the smallest holding shape can only beat the optimal run cost
        assert len(got) <= k and cost(got) <= best
