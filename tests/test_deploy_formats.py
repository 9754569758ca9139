"""The format table (deploy/formats.py) and the backend interface."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy import formats
from ppdet_ext_deploy.backends.base import Backend, ShapeRange
from ppdet_ext_deploy.formats import FORMATS, FormatUnavailable, create_backend, get_format, resolve_options
from ppdet_ext_deploy.runner import Runner
from deploy_fixtures import build_tiny_export, coco_mini_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return build_tiny_export(str(tmp_path_factory.mktemp("tinyf") / "export"))


def _cls(fmt):
    import importlib

    module, name = fmt.backend.split(":")
    return getattr(importlib.import_module(module, "ppdet_ext_deploy"), name)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_row_names_a_backend_that_takes_its_options(fmt):
    cls = _cls(fmt)
    assert issubclass(cls, Backend)
    params = inspect.signature(cls.__init__).parameters
    for key in list(fmt.fixed) + list(fmt.options):
        assert key in params and params[key].kind is inspect.Parameter.KEYWORD_ONLY, (fmt.name, key)
    assert all(n in formats.CAPABILITIES for n in fmt.needs)
    assert fmt.files and fmt.help


def test_names_are_unique():
    names = [f.name for f in FORMATS]
    assert len(names) == len(set(names))


def test_unknown_format_and_option_are_rejected(export_dir):
    with pytest.raises(ValueError, match="unknown backend"):
        get_format("paddle-tpu")
    with pytest.raises(ValueError, match="takes options"):
        resolve_options(get_format("paddle-cpu"), {"thread": 2})
    assert resolve_options(get_format("paddle-cpu"), {"threads": 3})["threads"] == 3


@pytest.mark.parametrize("name", ["paddle-gpu", "paddle-trt-fp32", "paddle-trt-fp16", "paddle-trt-int8"])
def test_gpu_rows_fail_clearly_without_cuda(export_dir, name):
    import paddle

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    with pytest.raises(FormatUnavailable, match="no CUDA"):
        create_backend(export_dir, name)


def test_missing_model_file_is_named(export_dir):
    with pytest.raises(FormatUnavailable, match="model.onnx"):
        create_backend(export_dir, "onnxruntime")


def test_trt_profile_comes_from_the_plan(export_dir, monkeypatch):
    """The TensorRT row builds its dynamic-shape profile from the runner's shapes (no GPU needed)."""
    from ppdet_ext_deploy.backends.paddle_inference import PaddleInferenceBackend
    from ppdet_ext_deploy.meta import load_meta

    built = []
    monkeypatch.setattr(PaddleInferenceBackend, "_build", lambda self: built.append(self._range))
    be = PaddleInferenceBackend(load_meta(export_dir), device="gpu", trt_precision="fp16")
    assert built == []  # TensorRT waits for the shapes
    r = ShapeRange.from_shapes([(8, 800, 1344), (3, 1344, 800), (1, 800, 800)])
    be.prepare(r)
    assert built[-1].max == (8, 3, 1344, 1344) and built[-1].min == (1, 3, 800, 800)
    be.prepare(ShapeRange.from_shapes([(2, 800, 1216)]))  # inside: no rebuild
    assert len(built) == 1
    be.prepare(ShapeRange.from_shapes([(16, 1344, 1344)]))  # wider: rebuilt on the union
    assert len(built) == 2 and built[-1].max == (16, 3, 1344, 1344) and built[-1].min == (1, 3, 800, 800)
    with pytest.raises(ValueError, match="calib_dir"):
        PaddleInferenceBackend(load_meta(export_dir), device="gpu", trt_precision="int8")
    with pytest.raises(ValueError, match="TensorRT runs on the GPU"):
        PaddleInferenceBackend(load_meta(export_dir), device="cpu", trt_precision="fp16")


class ConstantBackend(Backend):
    """A stand-in engine: one box per image in its top-left quarter."""

    def __init__(self, meta, *, score: float = 0.9):
        super().__init__(meta)
        self.score = score

    def infer(self, image):
        b, _, h, w = image.shape
        scores = np.zeros((b, 1, 2), np.float32)
        scores[:, 0, 1] = self.score
        boxes = np.tile(np.array([[[0, 0, 16, 16]]], np.float32), (b, 1, 1))
        return [scores, boxes]


def test_a_new_backend_is_one_class_plus_one_row(export_dir, monkeypatch):
    row = formats.Format("constant", f"{__name__}:ConstantBackend", ("infer_cfg.yml",), (), {},
                         {"score": 0.9}, "test stand-in")
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (row,))
    rep = Runner(export_dir, backend="constant", backend_options={"score": 0.8}, batch_size=3,
                 policy="buckets").run(coco_mini_images(5))
    assert rep.images_ok == 5
    for r in rep.results:
        assert r.dets.shape == (1, 6) and r.dets[0, 0] == 1 and r.dets[0, 1] == pytest.approx(0.8)


def test_deploy_imports_no_training_code():
    code = ("import sys, ppdet_ext_deploy, ppdet_ext_deploy.runner, ppdet_ext_deploy.benchmark, ppdet_ext_deploy.sweep_report, ppdet_ext_deploy.coco_eval, "
            "ppdet_ext_deploy.backends.paddle_inference, ppdet_ext_deploy.backends.onnxruntime; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ppdet', 'ppdet_ext')]; "
            "assert not bad, bad; assert list(sys.modules).index('zlib') < list(sys.modules).index('paddle') "
            "if 'paddle' in sys.modules else True")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
