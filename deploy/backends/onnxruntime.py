"""ONNX Runtime over ``model.onnx`` in the export directory (same contract as the Paddle graph).

Graph outputs are matched to ``infer_cfg.yml`` names when the ONNX graph uses those names,
else taken in graph order (paddle2onnx keeps Paddle's order).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Union

import numpy as np

from ..backends.base import Backend
from ..meta import ExportMeta


class OnnxRuntimeBackend(Backend):
    """``onnxruntime.InferenceSession``.

    Args:
        meta: Export metadata.
        threads: Intra-op threads (0 = all cores).
        providers: Execution providers, comma-separated string or list
            (``CPUExecutionProvider``; ``CUDAExecutionProvider`` with onnxruntime-gpu).
    """

    def __init__(self, meta: ExportMeta, *, threads: int = 0,
                 providers: Union[str, Sequence[str]] = "CPUExecutionProvider"):
        super().__init__(meta)
        import onnxruntime as ort

        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeError(f"onnxruntime {ort.__version__} lacks providers {missing}; "
                               f"available: {ort.get_available_providers()}")
        so = ort.SessionOptions()
        self.threads = int(threads) or (os.cpu_count() or 1)
        so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        self.providers = list(providers)
        self.session = ort.InferenceSession(meta.file("model.onnx"), so, providers=self.providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"expected one graph input 'image', found {[i.name for i in inputs]}")
        self._input = inputs[0].name
        graph_out = [o.name for o in self.session.get_outputs()]
        want = list(meta.output_names)
        self._fetch = want if set(want) <= set(graph_out) else graph_out[: len(want)]
        if len(self._fetch) != len(want):
            raise ValueError(f"graph has outputs {graph_out}, infer_cfg.yml names {want}")
        self._version = ort.__version__

    def infer(self, image: np.ndarray) -> List[np.ndarray]:
        return self.session.run(self._fetch, {self._input: np.ascontiguousarray(image, np.float32)})

    def describe(self) -> Dict[str, Any]:
        return {"engine": f"onnxruntime {self._version}", "threads": self.threads,
                "providers": self.providers}

    def close(self) -> None:
        self.session = None
