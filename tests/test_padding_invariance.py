"""Padding invariance of dynamic-shape exports (issue #4, ``ppdet_ext/export/padding_mask.py``).

An image's outputs must not depend on how much zero padding its batch adds bottom/right.

Stated tolerances (float32, CPU):
* masked squeeze-excitation on a padded map vs plain SE on the unpadded map: 1e-5 abs;
* random-weight PicoDet-S, one image on its own canvas vs inside a bigger one, with masking:
  scores <= 1e-5, DFL logits <= 1e-4 abs at every cell of the image (all levels); without
  masking the same comparison must differ by > 1e-3 (so the test can see the effect);
* traced graph (Paddle Inference with and without oneDNN, ONNX Runtime opset 11) vs dygraph,
  batch of 2 differently padded images vs each image alone: 1e-4 abs;
* masked GroupNorm on a padded map vs GroupNorm of each image's map alone: 1e-5 abs (without
  the mask: > 1e-2).

GFL: tests/test_padding_invariance_gfl.py.
"""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO
from ppdet_ext_deploy.imageio import list_images
from padding_helpers import _padded, _paddle_inference, _program_ops, _randomize

from ppdet_ext.export import padding_mask as pm

CONFIG_320 = os.path.join(REPO, "configs", "picodet", "picodet_s_320_coco_ext.yml")
SE_TOL = 1e-5
SCORE_TOL, LOGIT_TOL = 1e-5, 1e-4
GRAPH_TOL = 1e-4


# ----------------------------------------------------------------------------- valid extent
def test_valid_extent_on_hand_made_batches():
    b = np.zeros((5, 3, 12, 16), np.float32)
    b[0, :, :7, :9] = 1.0                      # plain 7 x 9 image
    b[1, :, :, :] = -0.5                       # fills the canvas (negative values)
    b[2, 1, 4, 10] = 3.0                       # one pixel, one channel -> 5 x 11
    b[3, :, :9, :5] = 1.0
    b[3, :, 2:6, :] = 0.0                      # zero rows inside the image do not cut it
    b[3, 0, 0, 0], b[3, 1, 0, 0], b[3, 2, 0, 0] = 1.0, -1.0, 0.0   # channels sum to 0: kept
    # b[4] all zero (a warm-up batch): 0 x 0, no division by zero downstream
    vh, vw = pm.valid_extent(paddle.to_tensor(b))
    assert vh.numpy().tolist() == [7, 12, 5, 9, 0]
    assert vw.numpy().tolist() == [9, 16, 11, 5, 0]
    mask, share = pm.PaddingExtent(paddle.to_tensor(b)).masks(None, paddle.ones([5, 4, 3, 4]))
    cells = [2 * 3, 3 * 4, 2 * 3, 3 * 2, 0]                            # stride 4: ceil(v / 4)
    assert mask.shape == [5, 1, 3, 4] and share.shape == [5, 1, 1, 1]
    assert mask.numpy().sum(axis=(1, 2, 3)).tolist() == cells
    np.testing.assert_allclose(share.numpy().ravel(), [max(c, 1) / 12 for c in cells], rtol=1e-6)


def test_round_to_grows_each_region_to_the_pad_stride():
    b = np.zeros((3, 3, 12, 16), np.float32)
    b[0, :, :7, :9] = 1.0
    b[1, :, :12, :13] = 1.0
    b[2, :, :1, :1] = 1.0
    ext = pm.PaddingExtent(paddle.to_tensor(b), round_to=8)
    assert ext.valid_h.numpy().tolist() == [8, 12, 8]          # clipped to the canvas
    assert ext.valid_w.numpy().tolist() == [16, 16, 8]


@pytest.mark.parametrize("size_in, size_feat, stride", [
    (416, 13, 32), (416, 7, 64), (448, 7, 64), (100, 13, 8), (200, 1, 256), (96, 96, 1),
    (100, 6, None)])
def test_stride_from_sizes(size_in, size_feat, stride):
    assert pm._stride_int(size_in, size_feat) == stride
    got = pm._stride_graph(paddle.to_tensor(float(size_in)), paddle.to_tensor(float(size_feat)))
    assert float(got) == (stride or 0)


@pytest.mark.parametrize("canvas", [416, 448, 640])
def test_axis_mask_counts_are_canvas_independent(canvas):
    """Stride 64 of a 416 canvas (h = 7, not 416 / 64): still ceil(v / 64) valid cells."""
    valid = paddle.to_tensor([300.0, 416.0, 1.0, 0.0])
    keep, count = pm.axis_mask(valid, 64, -(-canvas // 64))
    assert keep.astype("int32").sum(axis=1).numpy().tolist() == [5, 7, 1, 0]
    assert count.numpy().tolist() == [5, 7, 1, 0]
    keep, count = pm.axis_mask(valid, paddle.to_tensor(0.0), -(-canvas // 64))  # unknown
    assert count.numpy().tolist() == [-(-canvas // 64)] * 3 + [0]


# ----------------------------------------------------------------------- (a) masked SE block
def test_masked_se_of_padded_map_equals_plain_se_of_unpadded():
    from ppdet.modeling.backbones.esnet import SEModule

    paddle.seed(0)
    se = SEModule(16)
    se.eval()
    rng = np.random.default_rng(0)
    sizes = [(36, 44), (64, 20)]                           # valid image sizes, canvas 64 x 64
    image = _padded([np.ones((3, h, w), np.float32) for h, w in sizes], (64, 64))
    feats = [rng.standard_normal((16, -(-h // 4), -(-w // 4))).astype("float32")
             for h, w in sizes]                            # stride 4: 9 x 11 and 16 x 5
    big = rng.standard_normal((2, 16, 16, 16)).astype("float32") + 3.0   # "BN'd padding"
    for k, f in enumerate(feats):
        big[k, :, :f.shape[1], :f.shape[2]] = f
    with paddle.no_grad():
        with pm.padding_invariant(se, paddle.to_tensor(image)) as extent:
            masked = se(paddle.to_tensor(big)).numpy()
        plain = se(paddle.to_tensor(big)).numpy()
        for k, f in enumerate(feats):
            ref = se(paddle.to_tensor(f[None])).numpy()[0]
            h, w = f.shape[1:]
            np.testing.assert_allclose(masked[k, :, :h, :w], ref, atol=SE_TOL)
            assert np.abs(plain[k, :, :h, :w] - ref).max() > 1e-3      # the effect is real
    assert extent.hooked == 1
    assert not se.avg_pool._forward_pre_hooks and not se.avg_pool._forward_post_hooks


def test_unhandled_global_statistics_warn():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.InstanceNorm2D(4),
                               paddle.nn.AvgPool2D(2, exclusive=False),
                               paddle.nn.GroupNorm(2, 4, data_format="NHWC"))
    with pytest.warns(UserWarning, match="AvgPool2D', 'GroupNorm', 'InstanceNorm2D"):
        with pm.padding_invariant(net, paddle.ones([1, 3, 8, 8])):
            pass


def test_qat_quantized_convs_are_masked_like_convs():
    """QAT replaces every conv by a QuantizedConv2D; its borders must be masked too."""
    from paddle.quantization import ImperativeQuantAware

    paddle.seed(3)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU(),
                               paddle.nn.Conv2D(8, 8, 3, padding=1, stride=2), paddle.nn.ReLU(),
                               paddle.nn.Conv2D(8, 4, 3, padding=1))
    for conv in net[0], net[2]:     # paddle's zero bias init would hide the border effect
        conv.bias.set_value(paddle.full_like(conv.bias, 0.3))
    ImperativeQuantAware(weight_quantize_type="channel_wise_abs_max",
                         activation_quantize_type="moving_average_abs_max").quantize(net)
    net.train()                     # calibrate the activation scales (moving average)
    for _ in range(3):
        net(paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 96)), "float32"))
    net.eval()
    convs = [m for m in net.sublayers() if type(m).__name__ == "QuantizedConv2D"]
    assert len(convs) == 3 and all(pm._is_spatial_conv(m) for m in convs)
    img = np.random.default_rng(3).standard_normal((3, 20, 26)).astype("float32")
    alone, big = _padded([img], (32, 32)), _padded([img], (64, 96))
    outs = {}
    for name, x in (("alone", alone), ("big", big)):
        with pm.padding_invariant(net, paddle.to_tensor(x), round_to=32):
            outs[name] = net(paddle.to_tensor(x)).numpy()[0, :, :16, :16]
        outs[name + "_plain"] = net(paddle.to_tensor(x)).numpy()[0, :, :16, :16]
    assert np.abs(outs["alone"] - outs["big"]).max() < 1e-5
    assert np.abs(outs["alone_plain"] - outs["big_plain"]).max() > 1e-3   # the border effect


def test_group_norm_and_vd_avg_pool_are_handled(recwarn):
    """GFL's GroupNorm and ResNet-vd's shortcut pool no longer warn (and are hooked)."""
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.GroupNorm(2, 4),
                               paddle.nn.AvgPool2D(2, 2, ceil_mode=True))
    with pm.padding_invariant(net, paddle.ones([1, 3, 8, 8])) as extent:
        pass
    assert extent.hooked == 3
    assert not [w for w in recwarn if "padding_invariant" in str(w.message)]


# ------------------------------------------------------------------- (b) masked GroupNorm
@pytest.mark.parametrize("groups", [1, 4, 16])
def test_masked_group_norm_equals_group_norm_of_the_image_alone(groups):
    paddle.seed(0)
    gn = paddle.nn.GroupNorm(groups, 16)
    gn.eval()
    rng = np.random.default_rng(groups)
    gn.weight.set_value(rng.uniform(0.5, 1.5, 16).astype("float32"))
    gn.bias.set_value(rng.standard_normal(16).astype("float32"))
    sizes = [(36, 44), (64, 20)]                           # valid image sizes, canvas 64 x 64
    image = _padded([np.ones((3, h, w), np.float32) for h, w in sizes], (64, 64))
    feats = [(rng.standard_normal((16, -(-h // 4), -(-w // 4))) * 2 + 1).astype("float32")
             for h, w in sizes]                            # stride 4: 9 x 11 and 16 x 5
    big = rng.standard_normal((2, 16, 16, 16)).astype("float32") + 3.0   # "conv'd padding"
    for k, f in enumerate(feats):
        big[k, :, :f.shape[1], :f.shape[2]] = f
    with paddle.no_grad():
        with pm.padding_invariant(gn, paddle.to_tensor(image)) as extent:
            masked = gn(paddle.to_tensor(big)).numpy()
        plain = gn(paddle.to_tensor(big)).numpy()
        for k, f in enumerate(feats):
            ref = gn(paddle.to_tensor(f[None])).numpy()[0]
            h, w = f.shape[1:]
            np.testing.assert_allclose(masked[k, :, :h, :w], ref, atol=SE_TOL)
            assert np.abs(plain[k, :, :h, :w] - ref).max() > 1e-2      # the effect is real
    assert np.isfinite(masked).all()
    assert extent.hooked == 1 and not gn._forward_pre_hooks and not gn._forward_post_hooks


def test_vd_shortcut_pool_needs_no_mask_at_the_pad_stride():
    """ResNet-vd's AvgPool2D(2, 2, ceil_mode=True) at input strides 4, 8, 16: with regions
    rounded to 32 its windows never straddle a region edge (no-op); at stride 32, or with
    exact regions, they can, and the pool is masked instead."""
    pool = paddle.nn.AvgPool2D(2, 2, padding=0, ceil_mode=True)
    for s in (4, 8, 16):
        assert pm._windows_tile_region(pool, (s, s), 32)
    assert not pm._windows_tile_region(pool, (32, 32), 32)
    assert not pm._windows_tile_region(pool, (4, 4), 1)
    assert not pm._windows_tile_region(pool, None, 32)                 # stride unknown
    assert not pm._windows_tile_region(paddle.nn.AvgPool2D(3, 2, padding=1), (4, 4), 32)


def test_masked_avg_pool_of_odd_regions_equals_the_pool_alone():
    """The masked case (exact regions, round_to 1): odd region sizes at the pool input, so
    the last window half-covers the region; alone it is the canvas edge (ceil_mode)."""
    pool = paddle.nn.AvgPool2D(2, 2, padding=0, ceil_mode=True)
    rng = np.random.default_rng(7)
    sizes = [(36, 44), (20, 60)]                           # stride 4: 9 x 11 and 5 x 15
    image = _padded([np.ones((3, h, w), np.float32) for h, w in sizes], (64, 64))
    feats = [rng.standard_normal((4, -(-h // 4), -(-w // 4))).astype("float32")
             for h, w in sizes]
    big = rng.standard_normal((2, 4, 16, 16)).astype("float32") + 3.0
    for k, f in enumerate(feats):
        big[k, :, :f.shape[1], :f.shape[2]] = f
    with paddle.no_grad():
        with pm.padding_invariant(pool, paddle.to_tensor(image)):
            masked = pool(paddle.to_tensor(big)).numpy()
        plain = pool(paddle.to_tensor(big)).numpy()
        for k, f in enumerate(feats):
            ref = pool(paddle.to_tensor(f[None])).numpy()[0]
            h, w = ref.shape[1:]
            np.testing.assert_allclose(masked[k, :, :h, :w], ref, atol=SE_TOL)
            assert np.abs(plain[k, :, :h, :w] - ref).max() > 1e-2


# ------------------------------------------------------------ (c) random-weight PicoDet-S
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


def test_picodet_masking_is_a_no_op_without_padding(picodet):
    from ppdet_ext.export.adapter_picodet import picodet_raw_outputs

    x = paddle.to_tensor(np.random.default_rng(2).standard_normal((2, 3, 64, 96))
                         .astype("float32"))
    with paddle.no_grad():
        on = [t.numpy() for t in picodet_raw_outputs(picodet, x, mask_padding=True)]
        off = [t.numpy() for t in picodet_raw_outputs(picodet, x, mask_padding=False)]
    np.testing.assert_allclose(on[0], off[0], atol=SCORE_TOL)
    np.testing.assert_allclose(on[1], off[1], atol=1e-3)              # boxes, px


def test_picodet_bs1_canvas_is_unchanged_by_the_mask(picodet):
    """A stride-padded image alone fills its region (rounded up to PAD_ROUND): masked and
    plain graphs agree, so bs = 1 results of the export did not move."""
    from ppdet_ext.export.adapter_picodet import PAD_ROUND, picodet_raw_outputs

    img = np.random.default_rng(3).standard_normal((3, 72, 100)).astype("float32")
    x = paddle.to_tensor(_padded([img], (-(-72 // PAD_ROUND) * PAD_ROUND,
                                         -(-100 // PAD_ROUND) * PAD_ROUND)))
    with paddle.no_grad():
        on = [t.numpy() for t in picodet_raw_outputs(picodet, x, mask_padding=True)]
        off = [t.numpy() for t in picodet_raw_outputs(picodet, x, mask_padding=False)]
    np.testing.assert_allclose(on[0], off[0], atol=SCORE_TOL)
    np.testing.assert_allclose(on[1], off[1], atol=1e-3)              # boxes, px


def test_picodet_fixed_size_trace_keeps_the_plain_graph(picodet):
    """Regression: the mask decision used to sit in the traced adapter, where dy2static
    turned ``mask_padding=None`` into a truthy placeholder and masked fixed-size graphs too."""
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


# ------------------------------------------------- traced graph: Paddle Inference and ONNX
class _Tiny(paddle.nn.Layer):
    """ESNet-like: strided conv + max pool + SE (ppdet's SEModule) + depthwise conv."""

    def __init__(self):
        from ppdet.modeling.backbones.esnet import SEModule

        super().__init__()
        self.stem = paddle.nn.Conv2D(3, 16, 3, stride=2, padding=1)
        self.pool = paddle.nn.MaxPool2D(3, stride=2, padding=1)
        self.se = SEModule(16)
        self.dw = paddle.nn.Conv2D(16, 16, 5, stride=2, padding=2, groups=16)
        self.out = paddle.nn.Conv2D(16, 4, 1)

    def body(self, image):
        x = paddle.nn.functional.relu(self.stem(image))   # hard_swish would need opset 14
        return self.out(self.dw(self.se(self.pool(x))))

    def forward(self, image):
        with pm.padding_invariant(self, image, probe=self.body):
            y = self.body(image)
        return y


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    from paddle.static import InputSpec

    paddle.seed(3)
    net = _Tiny()
    net.eval()
    _randomize(net, seed=3)
    static = paddle.jit.to_static(net, input_spec=[InputSpec([-1, 3, -1, -1], "float32",
                                                             "image")], full_graph=True)
    prefix = str(tmp_path_factory.mktemp("padmask") / "model")
    paddle.jit.save(static, prefix)
    return net, prefix


def _tiny_cases():
    rng = np.random.default_rng(4)
    ims = [rng.standard_normal((3, 50, 70)).astype("float32"),
           rng.standard_normal((3, 64, 36)).astype("float32")]
    return ims, _padded(ims, (64, 96))


def _check_batch_against_alone(net, batch_out, ims):
    for k, im in enumerate(ims):
        alone = _padded([im], (-(-im.shape[1] // 8) * 8, -(-im.shape[2] // 8) * 8))
        with paddle.no_grad():
            ref = net(paddle.to_tensor(alone)).numpy()[0]
        h, w = -(-im.shape[1] // 8), -(-im.shape[2] // 8)               # stride 8 output
        np.testing.assert_allclose(batch_out[k, :, :h, :w], ref[:, :h, :w], atol=GRAPH_TOL)


def test_traced_graph_is_small_and_has_no_probe(tiny_graph):
    _, prefix = tiny_graph
    types = _program_ops(prefix)
    assert types.count("conv2d") + types.count("depthwise_conv2d") == 5   # no probe copy
    assert types.count("abs") == 1                                    # one valid_extent
    # one mask per stride a hooked layer reads (2, 4; the image itself needs none):
    # 2 ranges each, + 2 for the extent
    assert types.count("range") == 2 * 2 + 2


@pytest.mark.parametrize("mkldnn", [False, True])
def test_paddle_inference_batch_equals_alone(tiny_graph, mkldnn):
    """oneDNN on: also the regression test for a Paddle 2.6 oneDNN bug (pool2d output times
    a [B, 1, 1, 1] tensor is wrong for B > 1), which padding_mask avoids."""
    net, prefix = tiny_graph
    ims, batch = _tiny_cases()
    _check_batch_against_alone(net, _paddle_inference(prefix, batch, mkldnn), ims)


def test_onnx_opset11_batch_equals_alone(tiny_graph):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    from ppdet_ext.export.onnx_export import paddle_to_onnx

    net, prefix = tiny_graph
    model = paddle_to_onnx(prefix + ".pdmodel", prefix + ".pdiparams", opset=11)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    ims, batch = _tiny_cases()
    out = session.run(None, {session.get_inputs()[0].name: batch})[0]
    _check_batch_against_alone(net, out, ims)


# ------------------------------------------------- real weights (slow, needs ../shared/data)
def _real_scores(model, x, mode, record=None, replay=None):
    """Level scores ``[N, 80]`` of one image; ``mode``: plain / se (pools only) / full."""
    import contextlib

    from ppdet_ext.export.adapter_picodet import picodet_level_outputs

    pools = [m for m in model.sublayers() if pm._is_global_avg_pool(m)]
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
