"""Shared pieces of the padding-invariance tests (PicoDet and GFL files)."""
import numpy as np
import paddle


def _padded(images, canvas):
    """Zero-pad ``[3, h, w]`` arrays bottom/right into one ``[B, 3, H, W]`` batch."""
    out = np.zeros((len(images), images[0].shape[0]) + tuple(canvas), np.float32)
    for k, im in enumerate(images):
        out[k, :, :im.shape[1], :im.shape[2]] = im
    return out


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
