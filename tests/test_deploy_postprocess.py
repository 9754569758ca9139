"""Numpy post-processing (deploy/postprocess.py) against brute-force references."""
import numpy as np
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.compare import Tolerance, match_detections
from ppdet_ext_deploy.meta import PostprocessCfg
from ppdet_ext_deploy.postprocess import inside, multiclass_nms, nms, postprocess_batch, to_original, topk_select


def brute_nms(boxes, scores, thr):
    """Textbook greedy NMS, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep, removed = [], set()
    for a in order:
        if a in removed:
            continue
        keep.append(a)
        for b in order:
            if b in removed or b == a or b in keep:
                continue
            x1, y1 = max(boxes[a][0], boxes[b][0]), max(boxes[a][1], boxes[b][1])
            x2, y2 = min(boxes[a][2], boxes[b][2]), min(boxes[a][3], boxes[b][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda q: max(0.0, q[2] - q[0]) * max(0.0, q[3] - q[1])  # noqa: E731
            union = area(boxes[a]) + area(boxes[b]) - inter
            if union > 0 and inter / union > thr:
                removed.add(b)
    return keep


def random_boxes(rng, n, size=100.0):
    xy = rng.random((n, 2)) * size
    wh = rng.random((n, 2)) * size / 3 + 1
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 60)
    scores = rng.random(60).astype(np.float32)
    assert nms(boxes, scores, 0.5).tolist() == brute_nms(boxes.tolist(), scores.tolist(), 0.5)
    assert nms(boxes, scores, 0.5, max_keep=3).tolist() == brute_nms(boxes.tolist(), scores.tolist(), 0.5)[:3]


def reference_multiclass(scores, boxes, cfg):
    rows = []
    for c in range(scores.shape[1]):
        idx = np.nonzero(scores[:, c] > cfg.score_threshold)[0]
        idx = idx[np.lexsort((idx, -scores[idx, c]))][: cfg.nms_top_k]
        keep = brute_nms(boxes[idx].tolist(), scores[idx, c].tolist(), cfg.nms_threshold)
        rows += [(c, scores[idx[k], c], *boxes[idx[k]]) for k in keep]
    rows.sort(key=lambda r: -r[1])
    return np.asarray(rows[: cfg.keep_top_k], np.float32).reshape(-1, 6)


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_nms_matches_per_class_reference(seed):
    rng = np.random.default_rng(seed)
    n, c = 300, 5
    boxes = random_boxes(rng, n)
    scores = (rng.random((n, c)) ** 3).astype(np.float32)
    cfg = PostprocessCfg(score_threshold=0.05, nms_threshold=0.5, nms_top_k=40, keep_top_k=25)
    got = multiclass_nms(scores, boxes, cfg)
    ref = reference_multiclass(scores, boxes, cfg)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_prefix_nms_equals_full_nms_with_many_candidates():
    rng = np.random.default_rng(7)
    n, c = 3000, 4  # 12000 candidates: the growing-prefix path is taken
    boxes = random_boxes(rng, n, 400)
    scores = rng.random((n, c)).astype(np.float32)
    cfg = PostprocessCfg(score_threshold=0.0, nms_threshold=0.6, nms_top_k=100000, keep_top_k=100)
    got = multiclass_nms(scores, boxes, cfg)
    full = PostprocessCfg(score_threshold=0.0, nms_threshold=0.6, nms_top_k=100000, keep_top_k=100000)
    ref = multiclass_nms(scores, boxes, full)[:100]
    np.testing.assert_array_equal(got, ref)


def test_class_agnostic_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([[0.9, 0.0], [0.0, 0.8]], np.float32)
    per_class = multiclass_nms(scores, boxes, PostprocessCfg(score_threshold=0.1))
    agnostic = multiclass_nms(scores, boxes, PostprocessCfg(score_threshold=0.1, class_agnostic=True))
    assert len(per_class) == 2 and len(agnostic) == 1


def test_empty_and_below_threshold():
    assert multiclass_nms(np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32), PostprocessCfg()).shape == (0, 6)
    s = np.full((10, 3), 0.01, np.float32)
    assert multiclass_nms(s, random_boxes(np.random.default_rng(0), 10), PostprocessCfg()).shape == (0, 6)


def test_topk_select():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = topk_select(scores, boxes, 2)
    assert out[:, 0].tolist() == [1, 0] and out[:, 1].tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_array_equal(out[0, 2:], boxes[0])
    np.testing.assert_array_equal(out[1, 2:], boxes[1])


def test_to_original_divides_by_scale_and_clips():
    dets = np.array([[0, 0.9, 10, 20, 500, 300]], np.float32)
    out = to_original(dets, (0.5, 2.0), (100, 200))
    np.testing.assert_allclose(out[0, 2:], [5, 40, 200, 100])


def test_inside_uses_box_centre():
    boxes = np.array([[0, 0, 10, 10], [90, 40, 108, 58], [95, 0, 120, 10]], np.float32)  # centres (5,5) (99,49) (107.5,5)
    assert inside(boxes, (50, 100)).tolist() == [True, True, False]


def test_postprocess_batch_per_image_and_padding_drop():
    rng = np.random.default_rng(0)
    b, n, c = 3, 50, 2
    scores = rng.random((b, n, c)).astype(np.float32)
    boxes = np.stack([random_boxes(rng, n, 64) for _ in range(b)])
    cfg = PostprocessCfg(score_threshold=0.5)
    out = postprocess_batch([scores, boxes], ["scores", "boxes"], cfg, [(1.0, 1.0)] * b, [(64, 64)] * b)
    for i in range(b):  # a batch is exactly its images one by one
        single = postprocess_batch([scores[i:i + 1], boxes[i:i + 1]], ["scores", "boxes"], cfg,
                                   [(1.0, 1.0)], [(64, 64)])[0]
        np.testing.assert_array_equal(out[i], single)
    cut = postprocess_batch([scores, boxes], ["scores", "boxes"], cfg, [(1.0, 1.0)] * b, [(64, 64)] * b,
                            content_hws=[(32, 32)] * b)
    for d in cut:
        cx, cy = (d[:, 2] + d[:, 4]) / 2, (d[:, 3] + d[:, 5]) / 2
        assert (cx < 32).all() and (cy < 32).all()
    with pytest.raises(ValueError):
        postprocess_batch([scores, boxes], ["scores", "boxes"], cfg, [(1.0, 1.0)] * 2, [(64, 64)] * 2)


def test_topk_outputs_pass_through():
    scores = np.array([[0.2, 0.9]], np.float32)
    labels = np.array([[3, 1]], np.int64)
    boxes = np.array([[[0, 0, 4, 4], [2, 2, 6, 6]]], np.float32)
    out = postprocess_batch([scores, labels, boxes], ["scores", "labels", "boxes"],
                            PostprocessCfg(type="none"), [(2.0, 2.0)], [(10, 10)])[0]
    assert out[:, 0].tolist() == [1, 3]
    np.testing.assert_allclose(out[0, 2:], [1, 1, 3, 3])


def test_match_detections_tolerance():
    a = np.array([[0, 0.9, 0, 0, 10, 10], [1, 0.5, 5, 5, 20, 20]], np.float32)
    b = a.copy()
    b[0, 1] += 0.01
    assert match_detections(a, b).ok
    b[0, 1] += 0.05
    assert not match_detections(a, b).ok
    c = a[:1]  # second detection (0.5) missing on one side
    rep = match_detections(a, c, Tolerance(min_score=0.3))
    assert rep.unmatched == 1
    assert match_detections(a, c, Tolerance(min_score=0.6)).ok
