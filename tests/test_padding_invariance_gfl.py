"""Padding invariance of the GFL export (``ppdet_ext/export/adapter_gfl.py``, ``padding_mask``).

* random-weight tiny GFL (configs/gfl/gfl_tiny_coco_mini.yml), one image alone (canvas = its
  size rounded up to 32) vs inside a bigger canvas or batch, at every cell of the image (all
  5 levels), dygraph and the traced export through Paddle Inference (oneDNN on and off):
  scores (sigmoid) <= 1e-5, boxes <= 1e-3 px (float32 rounding of coordinates up to ~2000
  px); without masking the scores differ by > 1e-2.
"""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO
from export_helpers import export_in_repo
from padding_helpers import _padded, _paddle_inference, _program_ops, _randomize

from ppdet_ext.export import adapter_gfl

GFL_CONFIG = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")
GFL_SCORE_TOL, GFL_BOX_TOL = 1e-5, 1e-3


def _round32(v):
    return -(-v // 32) * 32


def _gfl_cells(out, canvas, valid):
    """The image's cells of one image's GFL output ``[N, C]`` on ``canvas`` (multiple of
    32), per level: ``[ceil(h / s), ceil(w / s), C]`` for s = 8 .. 128."""
    hw = [(canvas[0] // s, canvas[1] // s) for s in (8, 16, 32)]
    for _ in range(2):                                     # extra stride-2 convs (ceil)
        hw.append((-(-hw[-1][0] // 2), -(-hw[-1][1] // 2)))
    cells, start = [], 0
    for s, (h, w) in zip((8, 16, 32, 64, 128), hw):
        grid = out[start:start + h * w].reshape(h, w, -1)
        cells.append(grid[:-(-valid[0] // s), :-(-valid[1] // s)])
        start += h * w
    assert start == out.shape[0]
    return cells


def _gfl_diff(a, canvas_a, b, canvas_b, valid):
    return max(float(np.abs(x - y).max())
               for x, y in zip(_gfl_cells(a, canvas_a, valid), _gfl_cells(b, canvas_b, valid)))


@pytest.fixture(scope="module")
def gfl():
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.export import build_model
    from ppdet_ext.registry import reset_global_config

    cfg, _ = load_config(GFL_CONFIG)
    paddle.seed(0)
    model = build_model(cfg)
    reset_global_config()
    _randomize(model)           # GFL's own head init leaves near-constant scores
    return model


def test_gfl_image_in_bigger_canvas_equals_own_canvas(gfl):
    from ppdet_ext.export.adapter_gfl import gfl_raw_outputs

    img = np.random.default_rng(1).standard_normal((3, 72, 100)).astype("float32")
    own, big = (96, 128), (160, 224)
    diffs = {}
    for mask in (True, False):
        with paddle.no_grad():
            (s_a, b_a), (s_b, b_b) = [
                [t.numpy()[0] for t in gfl_raw_outputs(gfl, paddle.to_tensor(_padded([img], c)),
                                                       mask_padding=mask)]
                for c in (own, big)]
        diffs[(mask, "scores")] = _gfl_diff(s_a, own, s_b, big, (72, 100))
        diffs[(mask, "boxes")] = _gfl_diff(b_a, own, b_b, big, (72, 100))
    assert diffs[(True, "scores")] <= GFL_SCORE_TOL, diffs
    assert diffs[(True, "boxes")] <= GFL_BOX_TOL, diffs
    assert diffs[(False, "scores")] > 1e-2, diffs          # unmasked: padding shows


def _gfl_outside(out, canvas, region):
    """Values of one image's GFL output ``[N, C]`` at the cells outside ``region``."""
    inside = np.zeros(out.shape[0], bool)
    hw = [(canvas[0] // s, canvas[1] // s) for s in (8, 16, 32)]
    for _ in range(2):
        hw.append((-(-hw[-1][0] // 2), -(-hw[-1][1] // 2)))
    start = 0
    for s, (h, w) in zip((8, 16, 32, 64, 128), hw):
        grid = np.zeros((h, w), bool)
        grid[:-(-region[0] // s), :-(-region[1] // s)] = True
        inside[start:start + h * w] = grid.ravel()
        start += h * w
    return out[~inside]


def test_gfl_cells_in_the_padding_propose_nothing(gfl):
    """Masked, a batch proposes exactly the bs = 1 candidates: the cells of the image's own
    canvas (its region) as alone, every cell beyond it scoring 0 (their boxes could
    otherwise reach into the image: candidates bs = 1 never has)."""
    from ppdet_ext.export.adapter_gfl import gfl_raw_outputs

    img = np.random.default_rng(1).standard_normal((3, 72, 100)).astype("float32")
    own, big = (96, 128), (160, 224)
    with paddle.no_grad():
        (s_a, _), (s_b, _) = [
            [t.numpy()[0] for t in gfl_raw_outputs(gfl, paddle.to_tensor(_padded([img], c)))]
            for c in (own, big)]
        plain = gfl_raw_outputs(gfl, paddle.to_tensor(_padded([img], big)), mask_padding=False)
    assert _gfl_diff(s_a, own, s_b, big, own) <= GFL_SCORE_TOL     # all of own's cells
    assert np.abs(_gfl_outside(s_b, big, own)).max() == 0.0
    assert np.abs(_gfl_outside(plain[0].numpy()[0], big, own)).max() > 0.01   # not by itself


def test_gfl_bs1_canvas_is_unchanged_by_the_mask(gfl):
    """A stride-padded image alone fills its region (rounded up to PAD_ROUND): masked and
    plain GFL agree, so bs = 1 results of the export did not move."""
    from ppdet_ext.export.adapter_gfl import PAD_ROUND, gfl_raw_outputs

    assert PAD_ROUND == 32
    img = np.random.default_rng(3).standard_normal((3, 72, 100)).astype("float32")
    x = paddle.to_tensor(_padded([img], (_round32(72), _round32(100))))
    with paddle.no_grad():
        on = [t.numpy() for t in gfl_raw_outputs(gfl, x, mask_padding=True)]
        off = [t.numpy() for t in gfl_raw_outputs(gfl, x, mask_padding=False)]
    np.testing.assert_allclose(on[0], off[0], atol=GFL_SCORE_TOL)
    np.testing.assert_allclose(on[1], off[1], atol=GFL_BOX_TOL)       # boxes, px


@pytest.fixture(scope="module")
def gfl_export(gfl, tmp_path_factory):
    """The tiny GFL exported with a dynamic ``[-1, 3, -1, -1]`` input (masked graph)."""
    return export_in_repo(GFL_CONFIG, str(tmp_path_factory.mktemp("gflmask") / "gfl"), model=gfl)


def test_gfl_traced_graph_masks_once_per_stride(gfl_export):
    """Head layers shared by the 5 FPN levels get each call's stride from the probe: one
    mask per stride (2 .. 128: 7), not one per call; the unused group_norm ops are pruned."""
    types = _program_ops(os.path.join(gfl_export, "model"))
    assert types.count("abs") == 1                                    # one valid_extent
    # 2 per mask + 2 for the extent, + the head's own cell centres (2 per level)
    assert types.count("range") == 2 * 7 + 2 + 2 * 5
    assert "group_norm" not in types
    assert types.count("sqrt") == 4 * 5                               # 4 GN layers x 5 levels


def test_gfl_fixed_size_trace_keeps_the_plain_graph(gfl):
    from ppdet_ext.export.exporter import static_program

    types = [op.type for op in static_program(gfl, [1, 3, 128, 128]).global_block().ops]
    assert types.count("group_norm") == 4 * 5 and "abs" not in types


class _PlainGFL(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return adapter_gfl.gfl_raw_outputs(self.model, image, mask_padding=False)


@pytest.fixture(scope="module")
def gfl_plain_graph(gfl, tmp_path_factory):
    """The same GFL traced without the mask (dynamic input): what the export was before."""
    from paddle.static import InputSpec

    static = paddle.jit.to_static(_PlainGFL(gfl), input_spec=[InputSpec([-1, 3, -1, -1], "float32",
                                                                    "image")], full_graph=True)
    prefix = str(tmp_path_factory.mktemp("gflplain") / "model")
    paddle.jit.save(static, prefix)
    return prefix


def _gfl_batch_cases():
    rng = np.random.default_rng(5)
    ims = [rng.standard_normal((3,) + hw).astype("float32")
           for hw in [(100, 70), (64, 120), (90, 90)]]
    return ims, (128, 128)


@pytest.mark.parametrize("mkldnn", [False, True])
def test_gfl_paddle_inference_batch_equals_alone(gfl_export, gfl_plain_graph, mkldnn):
    """Traced GFL through Paddle Inference CPU (the deploy backend), batch of 3 differently
    sized images on one canvas vs each image alone on its stride-32 canvas. oneDNN on: the
    masked GroupNorm's [B, G, 1, 1] statistics at B > 1 (cf. the oneDNN broadcast bug).
    The plain graph, same comparison: the padding shows."""
    from ppdet_ext_deploy.backends.paddle_inference import PaddleInferenceBackend
    from ppdet_ext_deploy.meta import load_meta

    backend = PaddleInferenceBackend(load_meta(gfl_export), threads=1, mkldnn=mkldnn)
    ims, canvas = _gfl_batch_cases()
    batch = _padded(ims, canvas)
    scores, boxes = backend.infer(batch)
    plain = _paddle_inference(gfl_plain_graph, batch, mkldnn)           # scores only
    assert scores.shape[0] == plain.shape[0] == 3
    plain_diff = 0.0
    for k, im in enumerate(ims):
        valid = im.shape[1:]
        own = (_round32(valid[0]), _round32(valid[1]))
        s_alone, b_alone = backend.infer(_padded([im], own))
        assert _gfl_diff(scores[k], canvas, s_alone[0], own, valid) <= GFL_SCORE_TOL
        assert _gfl_diff(boxes[k], canvas, b_alone[0], own, valid) <= GFL_BOX_TOL
        plain_alone = _paddle_inference(gfl_plain_graph, _padded([im], own), mkldnn)
        plain_diff = max(plain_diff, _gfl_diff(plain[k], canvas, plain_alone[0], own, valid))
    assert plain_diff > 1e-2
