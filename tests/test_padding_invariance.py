"""Padding invariance of PicoDet's dynamic-shape export (``ppdet_ext/export/padding_mask``,
``adapter_picodet.py``).

An image's outputs must not depend on how much zero padding its batch adds bottom/right.

Stated tolerances (float32, CPU):
* random-weight PicoDet-S, one image on its own canvas vs inside a bigger one, with masking:
  scores <= 1e-5, DFL logits <= 1e-4 abs at every cell of the image (all levels); without
  masking the same comparison must differ by > 1e-3 (so the test can see the effect).

Region arithmetic: tests/test_padding_region.py; layer hooks and a traced graph:
tests/test_padding_layers.py; GFL: tests/test_padding_invariance_gfl.py.
"""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO
from ppdet_ext_deploy.imageio import list_images
from padding_helpers import _padded, _randomize

from ppdet_ext.export import padding_mask as pm
from ppdet_ext.export.padding_mask.layers import _is_global_avg_pool

CONFIG_320 = os.path.join(REPO, "configs", "picodet", "picodet_s_320_coco_ext.yml")
SCORE_TOL, LOGIT_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def picodet():
    from ppdet_ext.convert import build_model
    from ppdet_ext.registry import reset_global_config

    paddle.seed(0)
    model, _ = build_model(CONFIG_320)
    reset_global_config()
    _randomize(model)
    return model


def _image_cells(level, feat, valid_hw, stride):
    """``[ceil(h/s), ceil(w/s), C]``: the image's cells of one level output ``[1, H*W, C]``
    of a ``[1, C', H, W]`` feature map."""
    hh, ww = feat.shape[2:]
    grid = level[0].reshape(hh, ww, -1)
    return grid[:-(-valid_hw[0] // stride), :-(-valid_hw[1] // stride)]


def test_picodet_image_in_bigger_canvas_equals_own_canvas(picodet):
    from ppdet_ext.export.adapter_picodet import picodet_level_outputs

    img = np.random.default_rng(1).standard_normal((3, 72, 100)).astype("float32")
    own, big = _padded([img], (96, 128)), _padded([img], (160, 224))
    diffs = {}
    for mask in (True, False):
        with paddle.no_grad():
            (s_a, l_a, f_a), (s_b, l_b, f_b) = [
                picodet_level_outputs(picodet, paddle.to_tensor(x), mask_padding=mask)
                for x in (own, big)]
        for what, a_levels, b_levels in (("scores", s_a, s_b), ("logits", l_a, l_b)):
            diffs[(mask, what)] = max(
                float(np.abs(_image_cells(a.numpy(), fa, (72, 100), s)
                             - _image_cells(b.numpy(), fb, (72, 100), s)).max())
                for a, b, fa, fb, s in zip(a_levels, b_levels, f_a, f_b, picodet.head.fpn_stride))
    assert diffs[(True, "scores")] <= SCORE_TOL, diffs
    assert diffs[(True, "logits")] <= LOGIT_TOL, diffs
    assert diffs[(False, "scores")] > 1e-3, diffs          # unmasked: padding shows


def test_picodet_cells_in_the_padding_propose_nothing(picodet):
    """As for GFL: masked, the padding's cells score 0 and the region's equal bs = 1."""
    from ppdet_ext.export.adapter_picodet import picodet_level_outputs

    img = np.random.default_rng(1).standard_normal((3, 72, 100)).astype("float32")
    with paddle.no_grad():
        (s_a, _, f_a), (s_b, _, f_b) = [
            picodet_level_outputs(picodet, paddle.to_tensor(_padded([img], c)))
            for c in ((96, 128), (160, 224))]
    for a, b, fa, fb, stride in zip(s_a, s_b, f_a, f_b, picodet.head.fpn_stride):
        region = _image_cells(b.numpy(), fb, (96, 128), stride)
        assert np.abs(region - _image_cells(a.numpy(), fa, (96, 128), stride)).max() <= SCORE_TOL
        assert np.isclose(np.abs(b.numpy()).sum(), np.abs(region).sum(), rtol=1e-5, atol=0)
        assert region.size < b.numpy().size                     # there were padding cells


def _assert_mask_changes_nothing(model, x):
    from ppdet_ext.export.adapter_picodet import picodet_raw_outputs

    with paddle.no_grad():
        on = [t.numpy() for t in picodet_raw_outputs(model, x, mask_padding=True)]
        off = [t.numpy() for t in picodet_raw_outputs(model, x, mask_padding=False)]
    np.testing.assert_allclose(on[0], off[0], atol=SCORE_TOL)
    np.testing.assert_allclose(on[1], off[1], atol=1e-3)              # boxes, px


def test_picodet_masking_is_a_no_op_without_padding(picodet):
    x = paddle.to_tensor(np.random.default_rng(2).standard_normal((2, 3, 64, 96))
                         .astype("float32"))
    _assert_mask_changes_nothing(picodet, x)


def test_picodet_bs1_canvas_is_unchanged_by_the_mask(picodet):
    """A stride-padded image alone fills its region (rounded up to PAD_ROUND): masked and
    plain graphs agree, so bs = 1 results of the export did not move."""
    from ppdet_ext.export.adapter_picodet import PAD_ROUND

    img = np.random.default_rng(3).standard_normal((3, 72, 100)).astype("float32")
    x = paddle.to_tensor(_padded([img], (-(-72 // PAD_ROUND) * PAD_ROUND,
                                         -(-100 // PAD_ROUND) * PAD_ROUND)))
    _assert_mask_changes_nothing(picodet, x)


def test_picodet_fixed_size_trace_keeps_the_plain_graph(picodet):
    """The mask decision is made outside the trace: inside it, dy2static turns
    ``mask_padding=None`` into a truthy placeholder, which would mask fixed-size graphs too."""
    from ppdet_ext.export.exporter import static_program

    fixed = [op.type for op in static_program(picodet, [1, 3, 128, 128]).global_block().ops]
    dynamic = [op.type for op in static_program(picodet, [1, 3, -1, -1]).global_block().ops]
    assert "abs" not in fixed and "abs" in dynamic
    assert len(fixed) < len(dynamic)


def test_mask_default_follows_export_shape():
    """Dygraph and dynamic-H/W traces mask; a fixed-size trace keeps the plain graph."""
    from ppdet_ext.export.adapter_picodet import masks_padding

    assert masks_padding(paddle.ones([1, 3, 32, 32]))
    paddle.enable_static()
    try:
        with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
            assert masks_padding(paddle.static.data("a", [-1, 3, -1, -1], "float32"))
            assert masks_padding(paddle.static.data("b", [1, 3, 416, -1], "float32"))
            assert not masks_padding(paddle.static.data("c", [1, 3, 416, 416], "float32"))
    finally:
        paddle.disable_static()


# ------------------------------------------------- real weights (slow, needs ../shared/data)
def _real_scores(model, x, mode, record=None, replay=None):
    """Level scores ``[N, 80]`` of one image; ``mode``: plain / se (pools only) / full."""
    import contextlib

    from ppdet_ext.export.adapter_picodet import picodet_level_outputs

    pools = [m for m in model.sublayers() if _is_global_avg_pool(m)]
    hooks = []
    if record is not None:
        hooks = [p.register_forward_post_hook(lambda lay, i, o: record.append(o))
                 for p in pools]
    if replay is not None:
        it = iter(replay)
        hooks = [p.register_forward_post_hook(lambda lay, i, o: next(it)) for p in pools]
    ctx = (pm.padding_invariant(model, x, borders=False) if mode == "se"
           else contextlib.nullcontext())
    try:
        with paddle.no_grad(), ctx:
            scores, _, feats = picodet_level_outputs(model, x, mask_padding=(mode == "full"))
    finally:
        for h in hooks:
            h.remove()
    return [s.numpy() for s in scores], feats


@pytest.mark.slow
@pytest.mark.needs_shared
def test_real_picodet_isolation_se_vs_border(shared_data):
    """Issue #4 isolation, 2 coco_val158 images, own canvas vs +192 px padding (|dscore| at
    the image's cells): the SE pools alone (oracle: pooled vectors copied from the own
    canvas) leave large border differences; masking every spatial layer removes them."""
    from ppdet.utils.checkpoint import load_weight
    from ppdet_ext.convert.parity import keep_ratio_batch
    from ppdet_ext.convert.picodet_onnx import build_model

    weights = os.path.join(REPO, "output", "weights", "picodet_s_416_coco.pdparams")
    if not os.path.isfile(weights):
        pytest.skip(f"{weights} not found (tools/convert_picodet_onnx.py writes it)")
    model, _ = build_model(os.path.join(REPO, "configs", "picodet",
                                        "picodet_s_416_coco_ext_keep_ratio_short416.yml"))
    load_weight(model, weights)
    model.eval()
    paths = list_images(os.path.join(shared_data, "coco_val158", "images"), 2)
    worst = {}
    for p in paths:
        own = keep_ratio_batch([p])
        vh, vw = (int(v) for v in pm.valid_extent(paddle.to_tensor(own)))
        big = np.zeros(own.shape[:2] + (own.shape[2] + 192, own.shape[3] + 192), np.float32)
        big[:, :, :own.shape[2], :own.shape[3]] = own
        rec = []
        pairs = {"plain": (_real_scores(model, paddle.to_tensor(own), "plain", record=rec),
                           _real_scores(model, paddle.to_tensor(big), "plain"))}
        pairs["oracle_se"] = (pairs["plain"][0],
                              _real_scores(model, paddle.to_tensor(big), "plain", replay=rec))
        pairs["full"] = tuple(_real_scores(model, paddle.to_tensor(x), "full")
                              for x in (own, big))
        for name, ((sa, fa), (sb, fb)) in pairs.items():
            d = max(float(np.abs(_image_cells(a, f1, (vh, vw), s)
                                 - _image_cells(b, f2, (vh, vw), s)).max())
                    for a, b, f1, f2, s in zip(sa, sb, fa, fb, (8, 16, 32, 64)))
            worst[name] = max(worst.get(name, 0.0), d)
    assert worst["plain"] > 0.05, worst
    assert worst["oracle_se"] > 0.01, worst        # border effect: not the SE pools
    assert worst["full"] < 1e-4, worst
