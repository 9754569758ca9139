"""An exported static graph loaded into its own scope, and its quantizable layers."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import paddle

QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d")


def in_static_mode(fn):
    """Run ``fn`` in Paddle static mode and restore the caller's mode afterwards (the static
    graph APIs need static mode; leaving it on would break dygraph code that runs later in the
    same process, e.g. the next test)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_dynamic = paddle.in_dynamic_mode()
        paddle.enable_static()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_dynamic:
                paddle.disable_static()

    return wrapper


@dataclass(frozen=True)
class QuantLayer:
    """A quantizable op of a static graph.

    Attributes:
        name: The weight (``Filter``) variable name: the key of skip-lists and reports.
        op_type: ``conv2d`` | ``depthwise_conv2d``.
        op_index: Position in the global block.
        input: Activation input variable name.
        output: Output variable name.
        weight_shape: ``[C_out, C_in/groups, kh, kw]``.
    """

    name: str
    op_type: str
    op_index: int
    input: str
    output: str
    weight_shape: tuple


class StaticModel:
    """``model.pdmodel``/``.pdiparams`` of an export directory in a private scope.

    Args:
        model_dir: Export directory.
    """

    @in_static_mode
    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.scope = paddle.static.Scope()
        self.exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(self.scope):
            self.program, self.feeds, self.fetches = paddle.static.load_inference_model(
                os.path.join(model_dir, "model"), self.exe)
        self.fetch_names = [v.name for v in self.fetches]

    def layers(self, op_types: Sequence[str] = QUANTIZABLE_OPS) -> List[QuantLayer]:
        """Conv layers with a persistable weight, in graph order."""
        block = self.program.global_block()
        out = []
        for i, op in enumerate(block.ops):
            if op.type not in op_types:
                continue
            w = op.input("Filter")[0]
            var = block.var(w)
            if not var.persistable:
                continue
            out.append(QuantLayer(w, op.type, i, op.input("Input")[0], op.output("Output")[0],
                                  tuple(var.shape)))
        return out

    def get(self, name: str) -> np.ndarray:
        return np.array(self.scope.find_var(name).get_tensor())

    def set(self, name: str, value: np.ndarray) -> None:
        self.scope.find_var(name).get_tensor().set(np.ascontiguousarray(value), paddle.CPUPlace())

    @in_static_mode
    def run(self, x: np.ndarray, program=None, extra_fetch: Sequence[str] = ()) -> List[np.ndarray]:
        """Graph outputs (then ``extra_fetch`` variables) for input ``x`` ``[B, 3, H, W]``."""
        with paddle.static.scope_guard(self.scope):
            return self.exe.run(program or self.program, feed={self.feeds[0]: x},
                                fetch_list=list(self.fetch_names) + list(extra_fetch))

    def param_count(self) -> Dict[str, int]:
        n = 0
        for v in self.program.list_vars():
            if v.persistable and v.name not in ("feed", "fetch") and self.scope.find_var(v.name):
                try:
                    n += int(np.prod(self.get(v.name).shape))
                except Exception:  # noqa: BLE001  (non-tensor persistables)
                    pass
        return {"params": n}
