"""Layer hooks of the padding masks (``ppdet_ext/export/padding_mask/layers.py``): each layer
kind, inside ``padding_invariant``, gives an image in a padded batch what it gives the image
alone; and a tiny ESNet-like net traced with the hooks keeps that through Paddle Inference and
ONNX Runtime.

Stated tolerances (float32, CPU):
* masked squeeze-excitation on a padded map vs plain SE on the unpadded map: 1e-5 abs;
* masked GroupNorm on a padded map vs GroupNorm of each image's map alone: 1e-5 abs (without
  the mask: > 1e-2);
* traced graph (Paddle Inference with and without oneDNN, ONNX Runtime opset 11) vs dygraph,
  batch of 2 differently padded images vs each image alone: 1e-4 abs.
"""
import numpy as np
import paddle
import pytest

from padding_helpers import (_padded, _paddle_inference, _program_ops, _randomize,
                             assert_region_equals_alone, masked_vs_alone)

from ppdet_ext.export import padding_mask as pm
from ppdet_ext.export.padding_mask.layers import _is_spatial_conv, _windows_tile_region

SE_TOL = 1e-5
GRAPH_TOL = 1e-4


# ----------------------------------------------------------------------- (a) masked SE block
def test_masked_se_of_padded_map_equals_plain_se_of_unpadded():
    from ppdet.modeling.backbones.esnet import SEModule

    paddle.seed(0)
    se = SEModule(16)
    se.eval()
    rng = np.random.default_rng(0)
    sizes = [(36, 44), (64, 20)]                           # valid image sizes, canvas 64 x 64
    feats = [rng.standard_normal((16, -(-h // 4), -(-w // 4))).astype("float32")
             for h, w in sizes]                            # stride 4: 9 x 11 and 16 x 5
    masked, plain, alone, extent = masked_vs_alone(se, sizes, feats, rng)
    assert_region_equals_alone(masked, plain, alone, SE_TOL, effect=1e-3)
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
    assert len(convs) == 3 and all(_is_spatial_conv(m) for m in convs)
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
    feats = [(rng.standard_normal((16, -(-h // 4), -(-w // 4))) * 2 + 1).astype("float32")
             for h, w in sizes]                            # stride 4: 9 x 11 and 16 x 5
    masked, plain, alone, extent = masked_vs_alone(gn, sizes, feats, rng)
    assert_region_equals_alone(masked, plain, alone, SE_TOL, effect=1e-2)
    assert np.isfinite(masked).all()
    assert extent.hooked == 1 and not gn._forward_pre_hooks and not gn._forward_post_hooks


def test_vd_shortcut_pool_needs_no_mask_at_the_pad_stride():
    """ResNet-vd's AvgPool2D(2, 2, ceil_mode=True) at input strides 4, 8, 16: with regions
    rounded to 32 its windows never straddle a region edge (no-op); at stride 32, or with
    exact regions, they can, and the pool is masked instead."""
    pool = paddle.nn.AvgPool2D(2, 2, padding=0, ceil_mode=True)
    for s in (4, 8, 16):
        assert _windows_tile_region(pool, (s, s), 32)
    assert not _windows_tile_region(pool, (32, 32), 32)
    assert not _windows_tile_region(pool, (4, 4), 1)
    assert not _windows_tile_region(pool, None, 32)                 # stride unknown
    assert not _windows_tile_region(paddle.nn.AvgPool2D(3, 2, padding=1), (4, 4), 32)


def test_masked_avg_pool_of_odd_regions_equals_the_pool_alone():
    """The masked case (exact regions, round_to 1): odd region sizes at the pool input, so
    the last window half-covers the region; alone it is the canvas edge (ceil_mode)."""
    pool = paddle.nn.AvgPool2D(2, 2, padding=0, ceil_mode=True)
    rng = np.random.default_rng(7)
    sizes = [(36, 44), (20, 60)]                           # stride 4: 9 x 11 and 5 x 15
    feats = [rng.standard_normal((4, -(-h // 4), -(-w // 4))).astype("float32")
             for h, w in sizes]
    masked, plain, alone, _ = masked_vs_alone(pool, sizes, feats, rng)
    assert_region_equals_alone(masked, plain, alone, SE_TOL, effect=1e-2)



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


