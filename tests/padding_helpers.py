"""Shared pieces of the padding-invariance tests (PicoDet and GFL files)."""
import numpy as np
import paddle


def _padded(images, canvas):
    """Zero-pad ``[3, h, w]`` arrays bottom/right into one ``[B, 3, H, W]`` batch."""
    out = np.zeros((len(images), images[0].shape[0]) + tuple(canvas), np.float32)
    for k, im in enumerate(images):
        out[k, :, :im.shape[1], :im.shape[2]] = im
    return out


def masked_vs_alone(layer, sizes, feats, rng, canvas=(64, 64)):
    """``layer`` on a stride-4 batch holding each ``[C, h, w]`` of ``feats`` top-left, the rest
    "padding" (``rng`` normal + 3, what a conv + BN makes of zeros), for images of ``sizes``
    on ``canvas``: ``(masked, plain, alone, extent)`` outputs with and without
    ``padding_invariant``, and each feature map through the layer on its own."""
    from ppdet_ext.export.padding_mask import padding_invariant

    image = _padded([np.ones((3, h, w), np.float32) for h, w in sizes], canvas)
    big = rng.standard_normal((len(feats), feats[0].shape[0], canvas[0] // 4, canvas[1] // 4))
    big = big.astype("float32") + 3.0
    for k, f in enumerate(feats):
        big[k, :, :f.shape[1], :f.shape[2]] = f
    with paddle.no_grad():
        with padding_invariant(layer, paddle.to_tensor(image)) as extent:
            masked = layer(paddle.to_tensor(big)).numpy()
        plain = layer(paddle.to_tensor(big)).numpy()
        alone = [layer(paddle.to_tensor(f[None])).numpy()[0] for f in feats]
    return masked, plain, alone, extent


def assert_region_equals_alone(masked, plain, alone, tol, effect):
    """Each image's region of the masked output equals its output alone within ``tol``; the
    plain output differs there by more than ``effect`` (the test can see the padding)."""
    for k, ref in enumerate(alone):
        h, w = ref.shape[1:]
        np.testing.assert_allclose(masked[k, :, :h, :w], ref, atol=tol)
        assert np.abs(plain[k, :, :h, :w] - ref).max() > effect


def _randomize(model, seed=0):
    """He-normal conv weights and zero conv biases: ppdet's own init (std 0.01 head convs,
    prior-probability bias) leaves the scores a near-constant 0.01 that no padding moves."""
    rng = np.random.default_rng(seed)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            shape = layer.weight.shape
            std = np.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
            layer.weight.set_value((rng.standard_normal(shape) * std).astype("float32"))
            if layer.bias is not None:
                layer.bias.set_value(np.zeros(layer.bias.shape, "float32"))


def _paddle_inference(prefix, x, mkldnn):
    import paddle.inference as pi

    config = pi.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(1)
    if mkldnn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _program_ops(prefix):
    """Op types of a saved inference program, in order."""
    paddle.enable_static()
    try:
        exe = paddle.static.Executor(paddle.CPUPlace())
        prog, _, _ = paddle.static.load_inference_model(prefix, exe)
    finally:
        paddle.disable_static()
    return [op.type for op in prog.global_block().ops]
