"""End-to-end runner tests on a tiny exported model (tests/deploy_fixtures.py), CPU, seconds.

Stated tolerance for bs>1 vs bs=1 on the fixture: every detection scoring >= 0.501 has a
partner of the same class with IoU >= 0.999 and |score difference| <= 1e-4. The fixture is
built so padding stays exactly zero through the network (bias-free convs + ReLU, box centre
== anchor centre), so any larger difference is a batching bug (wrong crop, scale, order),
not numerics. Real models get the looser default tolerance in deploy/compare.py.
"""
import os
import shutil
import threading
import time

import numpy as np
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.compare import Tolerance, match_detections, match_images
from ppdet_ext_deploy.meta import load_meta
from ppdet_ext_deploy.runner import Runner
from deploy_fixtures import (build_tiny_export, coco_mini_images, tiny_layer, write_bad_images)

STRICT = Tolerance(min_score=0.5, score_tol=1e-4, iou_min=0.999, margin=1e-3)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return build_tiny_export(str(tmp_path_factory.mktemp("tiny") / "export"), onnx=True)


@pytest.fixture(scope="module")
def engine(export_dir):
    """One loaded Paddle Inference CPU engine shared by the runners below (loading is the slow part)."""
    from ppdet_ext_deploy.formats import create_backend

    return create_backend(export_dir, "paddle-cpu")


@pytest.fixture(scope="module")
def images():
    return coco_mini_images(12)


@pytest.fixture(scope="module")
def bad_zoo(tmp_path_factory):
    return write_bad_images(str(tmp_path_factory.mktemp("bad")))


@pytest.fixture(scope="module")
def reference(export_dir, engine, images):
    return Runner(export_dir, backend=engine, batch_size=1, policy="none").run(images)


def assert_same(ref, rep, tol=STRICT):
    assert [a.path for a in ref.results] == [b.path for b in rep.results]
    total = match_images([a.dets for a in ref.results], [b.dets for b in rep.results], tol)
    assert total.ok, total
    assert total.compared > 50, "fixture should produce detections to compare"


@pytest.mark.parametrize("policy", ["none", "orientation", "buckets", "shape"])
def test_batched_equals_bs1(export_dir, engine, images, reference, policy):
    for bs in (3, 8):
        rep = Runner(export_dir, backend=engine, batch_size=bs, policy=policy).run(images)
        assert rep.images_ok == len(images)
        assert_same(reference, rep)


def test_canonical_shapes_equal_bs1(export_dir, engine, images, reference):
    rep = Runner(export_dir, backend=engine, batch_size=4, policy="buckets", shapes="auto").run(images)
    assert rep.plan.resized == []
    assert len({t.shape for t in rep.timings}) <= 3
    assert_same(reference, rep)


def test_onednn_off_and_threads(export_dir, images, reference):
    rep = Runner(export_dir, batch_size=4, policy="buckets",
                 backend_options={"mkldnn": False, "threads": 1}).run(images)
    assert rep.backend["mkldnn"] is False and rep.backend["threads"] == 1
    assert_same(reference, rep)


def test_onnxruntime_matches_paddle(export_dir, images, reference):
    rep = Runner(export_dir, backend="onnxruntime", batch_size=4, policy="orientation").run(images)
    assert_same(reference, rep, Tolerance(min_score=0.5, score_tol=1e-3, iou_min=0.99, margin=2e-3))


def test_inference_matches_dygraph(export_dir):
    import paddle

    from ppdet_ext_deploy.formats import create_backend

    x = np.random.default_rng(0).standard_normal((2, 3, 96, 160)).astype(np.float32)
    ref = [t.numpy() for t in tiny_layer()(paddle.to_tensor(x))]
    got = create_backend(export_dir, "paddle-cpu").infer(x)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_results_come_back_in_callers_order(export_dir, engine, images, reference):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    shuffled = [images[i] for i in order]
    rep = Runner(export_dir, backend=engine, batch_size=4, policy="buckets").run(shuffled)
    assert [r.path for r in rep.results] == shuffled
    assert [r.index for r in rep.results] == list(range(len(images)))
    for k, i in enumerate(order):
        assert match_detections(reference.results[i].dets, rep.results[k].dets, STRICT).ok


def test_bad_inputs_are_reported_and_the_batch_still_runs(export_dir, engine, images, reference,
                                                          bad_zoo, tmp_path):
    bad = dict(bad_zoo)
    # a PNG whose header parses but whose pixel data is garbage: fails in the decode worker
    good_png = bad["gray"]
    broken = str(tmp_path / "broken_data.png")
    data = bytearray(open(good_png, "rb").read())
    data[60:] = bytes(len(data) - 60)
    open(broken, "wb").write(bytes(data))
    bad["broken_data"] = broken
    paths = images[:6] + list(bad.values()) + images[6:]
    for policy in ("none", "buckets"):
        rep = Runner(export_dir, backend=engine, batch_size=4, policy=policy).run(paths)
        by_name = {os.path.basename(r.path): r for r in rep.results}
        for kind in ("corrupt", "truncated", "missing", "empty", "tiny", "huge", "broken_data"):
            r = next(v for k, v in by_name.items() if k.startswith(kind + "."))
            assert not r.ok and os.path.basename(r.path) in r.error, (kind, r.error)
        assert "too small" in by_name["tiny.png"].error
        assert "too large" in by_name["huge.png"].error
        assert "no such file" in by_name["missing.jpg"].error
        for kind, note in (("alpha", "alpha"), ("gray", "grayscale"), ("deep", "16-bit")):
            r = by_name[f"{kind}.png"]
            assert r.ok and any(note in n for n in r.notes), (kind, r.notes)
        errors = dict(rep.errors)
        assert set(errors) == {bad[k] for k in ("corrupt", "truncated", "missing", "empty", "tiny",
                                                  "huge", "broken_data")}
        good = [r for r in rep.results if r.path in images]
        assert len(good) == len(images)
        for g in good:
            ref = reference.results[images.index(g.path)]
            assert match_detections(ref.dets, g.dets, STRICT).ok


@pytest.mark.slow
def test_huge_image_runs_when_the_limit_allows(export_dir, engine, bad_zoo):
    bad = bad_zoo
    rep = Runner(export_dir, backend=engine, batch_size=2, max_pixels=None).run([bad["huge"], bad["alpha"]])
    assert rep.images_ok == 2 and rep.results[0].orig_hw == (10000, 10000)


def test_fixed_batch_graph_runs_in_chunks(export_dir, engine, images, reference, tmp_path):
    from ppdet_ext_deploy.meta import read_meta_dict, write_meta

    fixed = tmp_path / "fixed"
    shutil.copytree(export_dir, fixed)
    cfg = read_meta_dict(str(fixed))
    cfg["input_shape"] = [2, 3, -1, -1]
    write_meta(str(fixed), cfg)
    assert load_meta(str(fixed)).fixed_batch == 2
    rep = Runner(str(fixed), backend=engine, batch_size=5, policy="shape").run(images)
    assert_same(reference, rep)


def test_timings_and_report(export_dir, engine, images):
    rep = Runner(export_dir, backend=engine, batch_size=4, policy="buckets").run(images)
    assert len(rep.timings) == len(rep.plan.batches)
    assert sum(t.images for t in rep.timings) == len(images)
    for t in rep.timings:
        assert t.pre_s > 0 and t.infer_s > 0 and t.post_s >= 0 and t.t_end >= t.t_start
    assert rep.images_per_s > 0 and rep.errors == []
    assert 0 <= rep.plan.waste_fraction < 1


def test_prefetch_is_bounded(export_dir, images):
    runner = Runner(export_dir, batch_size=1, policy="none", prefetch=1, workers=1)  # own engine: patched
    loaded = [0]
    lock = threading.Lock()
    orig_load, orig_infer = runner._load, runner.backend.infer
    ahead = []

    def load(*a):
        with lock:
            loaded[0] += 1
        return orig_load(*a)

    consumed = [0]

    def infer(x):
        time.sleep(0.02)
        out = orig_infer(x)
        consumed[0] += x.shape[0]
        ahead.append(loaded[0] - consumed[0])
        return out

    runner._load, runner.backend.infer = load, infer
    rep = runner.run(images[:10])
    assert rep.images_ok == 10
    # one batch in the queue + one being assembled by the feeder, no more
    assert max(ahead) <= 1 + 1


def test_backend_failure_propagates_and_stops_the_feeder(export_dir, images):
    runner = Runner(export_dir, batch_size=2, prefetch=1)

    def boom(x):
        raise RuntimeError("engine exploded")

    runner.backend.infer = boom
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="engine exploded"):
        runner.run(images)
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_warmup_feeds_every_planned_shape(export_dir, images):
    runner = Runner(export_dir, batch_size=4, policy="buckets")  # own engine: patched
    seen = []
    orig = runner.backend.infer
    runner.backend.infer = lambda x: (seen.append(x.shape), orig(x))[1]
    runner.warmup(images)
    sizes, errors = runner.probe(images)
    assert errors == {}
    plan = runner.plan(sizes)
    assert sorted((b, h, w) for b, _, h, w in seen) == sorted(plan.shapes())


@pytest.mark.parametrize("post_thread", [True, False])
def test_post_thread_on_and_off_give_the_same_results(export_dir, engine, images, reference, post_thread):
    rep = Runner(export_dir, backend=engine, batch_size=4, policy="buckets",
                 post_thread=post_thread).run(list(reversed(images)))
    assert [r.path for r in rep.results] == list(reversed(images))
    for a, b in zip(reversed(reference.results), rep.results):
        assert a.path == b.path
        np.testing.assert_allclose(a.dets, b.dets, atol=1e-4)
    assert [t.batch for t in rep.timings] == list(range(len(rep.plan.batches)))


def test_post_thread_overlaps_and_is_bounded(export_dir, images):
    """NMS of batch k runs while batch k+1 is inferred; no more than ``prefetch`` inferred
    batches wait for post-processing."""
    runner = Runner(export_dir, batch_size=1, policy="none", prefetch=2)  # own engine: patched
    orig_infer, orig_post = runner.backend.infer, runner._post
    lock = threading.Lock()
    state = {"inferred": 0, "posted": 0, "post_running": False}
    waiting, overlapped = [], []

    def infer(x):
        with lock:
            overlapped.append(state["post_running"])
        out = orig_infer(x)
        time.sleep(0.01)
        with lock:
            state["inferred"] += 1
            waiting.append(state["inferred"] - state["posted"])
        return out

    def post(*a):
        with lock:
            state["post_running"] = True
        time.sleep(0.05)                       # NMS slower than inference
        out = orig_post(*a)
        with lock:
            state["posted"] += 1
            state["post_running"] = False
        return out

    runner.backend.infer, runner._post = infer, post
    rep = runner.run(images[:10])
    assert rep.images_ok == 10
    assert any(overlapped)                     # inference ran while a batch was in NMS
    assert max(waiting) <= runner.prefetch + 1  # prefetch waiting + the one in NMS


def test_post_failure_propagates(export_dir, engine, images):
    runner = Runner(export_dir, backend=engine, batch_size=2)

    def boom(*a):
        raise ValueError("nms exploded")

    runner._post = boom
    with pytest.raises(ValueError, match="nms exploded"):
        runner.run(images)
