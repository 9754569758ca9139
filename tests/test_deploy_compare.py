"""The comparison module (deploy/compare.py), the interleaved-timing helper (deploy/timing.py)
and the INT8 comparison built on them (ppdet_ext/slim/compare.py)."""
import numpy as np
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.compare import (Tolerance, correlation, match_images, max_abs_diff,
                                      output_diff, query_order)
from ppdet_ext_deploy.timing import interleave, median_run, round_ratios, spread
from deploy_fixtures import build_tiny_export, coco_mini_images


def test_output_diff():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    got = ref + np.array([[0.0, 0.1], [-0.2, 0.0]], np.float32)
    d = output_diff(got, ref)
    assert d.max_abs == pytest.approx(0.2, abs=1e-6) and d.max_rel == pytest.approx(0.05, abs=1e-6)
    assert 0.99 < d.corr < 1.0
    same = output_diff(ref, ref)
    assert (same.max_abs, same.max_rel) == (0.0, 0.0) and same.corr == pytest.approx(1.0)
    assert max_abs_diff(np.zeros(0), np.zeros(0)) == 0.0
    assert correlation(np.ones(3), np.ones(3)) == 1.0 and correlation(np.ones(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        output_diff(ref, ref[0])


def test_query_order_undoes_a_permutation():
    rng = np.random.RandomState(0)
    ref = rng.rand(2, 6, 4)
    perm = np.stack([rng.permutation(6) for _ in range(2)])
    got = np.take_along_axis(ref, perm[..., None], axis=1) + 1e-6
    order = query_order(got, ref)
    np.testing.assert_allclose(np.take_along_axis(got, order[..., None], axis=1), ref, atol=1e-5)


def test_match_images_merges_and_skips_failed_images():
    a = np.array([[0, 0.9, 0, 0, 10, 10]], np.float32)
    moved = np.array([[0, 0.9, 5, 5, 15, 15]], np.float32)
    assert match_images([a, a], [a, a]).compared == 4
    rep = match_images([a, a, None], [a, moved, moved], Tolerance())
    assert (rep.compared, rep.unmatched) == (4, 2) and not rep.ok
    assert rep.as_dict()["min_iou"] < 0.95


def test_interleave_runs_round_robin():
    calls = []
    runs = interleave(["a", "b"], lambda k, rnd: calls.append((k, rnd)) or len(calls), 3)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert runs == {"a": [1, 3, 5], "b": [2, 4, 6]}


def test_median_run_spread_and_ratios():
    runs = [{"ips": 3.0, "t": "x"}, {"ips": 1.0, "t": "y"}, {"ips": 2.0, "t": "z"}, {"ips": 4.0, "t": "w"}]
    assert median_run(runs, "ips")["t"] == "x"  # a run that happened: the upper middle one
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert np.isnan(spread([])["median"])
    assert round_ratios([2.0, 3.0, 1.0], [1.0, 2.0, 0.0]) == [2.0, 1.5, 0.0]


def test_slim_compare_interleaves_settings(tmp_path):
    from ppdet_ext.slim.compare import Setting, compare, to_markdown

    export = build_tiny_export(str(tmp_path / "tiny"), onnx=True)
    images = coco_mini_images(3)
    log = []
    rows = compare([Setting("paddle", export, "paddle-cpu"), Setting("ort", export, "onnxruntime")],
                   eval_images=images, ann_file=None, time_images=images, rounds=2, threads=1,
                   corr_batches=[np.random.RandomState(0).rand(1, 3, 64, 96).astype("float32")],
                   log=log.append)
    assert [r["label"] for r in rows] == ["paddle", "ort"]
    assert rows[0]["speedup_vs_first"] == 1.0 and rows[0]["corr_0"] == 1.0
    assert rows[1]["corr_0"] > 0.999 and rows[1]["corr_1"] > 0.999   # same graph, two engines
    for r in rows:
        assert len(r["images_per_s_runs"]) == 2 and r["images_per_s"] > 0 and r["rounds"] == 2
    assert [line.split()[3] for line in log] == ["paddle", "ort", "paddle", "ort"]  # interleaved
    assert "| paddle | paddle-cpu |" in to_markdown(rows)
