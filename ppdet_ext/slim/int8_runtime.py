"""Running INT8 export directories through the deploy runner.

``deploy/formats.py`` has no CPU-INT8 row yet: Paddle Inference 2.6 runs a quantized graph's
``quantize_linear``/``dequantize_linear`` pairs as *float* fake-quant ops unless
``config.enable_mkldnn_int8()`` is called, which swaps in the oneDNN INT8 pass pipeline.
Until deploy grows that row (proposed: ``paddle-cpu-int8``, fixed ``{"device": "cpu",
"mkldnn_int8": True}``), :func:`make_runner` builds a standard :class:`deploy.Runner` and
replaces its backend with :class:`PaddleCpuInt8Backend`, a subclass that adds that one call.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import deploy  # noqa: F401  (zlib before paddle)
from deploy.backends.paddle_inference import PaddleInferenceBackend
from deploy.runner import Runner

#: Backend names this module understands on top of deploy's table.
EXTRA_BACKENDS = ("paddle-cpu-int8",)


class PaddleCpuInt8Backend(PaddleInferenceBackend):
    """Paddle Inference CPU + oneDNN with the INT8 passes (``enable_mkldnn_int8``)."""

    def __init__(self, meta, **kw):
        kw.setdefault("device", "cpu")
        kw["mkldnn"] = True
        super().__init__(meta, **kw)

    def _config(self):
        from deploy.backends.paddle_inference import BROKEN_PASSES

        config = super()._config()
        config.enable_mkldnn_int8()
        # enable_mkldnn_int8() rebuilds the CPU pass list, bringing back the pass the base
        # class deleted (matmul_v2_scale_fuse_pass: wrong GFL/PicoDet DFL boxes)
        for name in BROKEN_PASSES:
            config.delete_pass(name)
        return config

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "mkldnn_int8": True}


def make_runner(model_dir: str, backend: str = "paddle-cpu",
                backend_options: Optional[Mapping[str, Any]] = None, **runner_kw) -> Runner:
    """A :class:`deploy.Runner`; ``backend="paddle-cpu-int8"`` gets the oneDNN INT8 backend."""
    if backend not in EXTRA_BACKENDS:
        return Runner(model_dir, backend=backend, backend_options=backend_options, **runner_kw)
    opts = dict(backend_options or {})
    opts.pop("mkldnn", None)
    runner = Runner(model_dir, backend="paddle-cpu", backend_options={**opts, "mkldnn": False},
                    **runner_kw)
    runner.backend.close()
    runner.backend = PaddleCpuInt8Backend(runner.meta, **opts)
    runner.backend_name = backend
    return runner
