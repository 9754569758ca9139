"""Simulated INT8 on chosen layers of an FP32 static graph, for analysis (not deployment).

Symmetric INT8 as Paddle's PTQ does it: weights per output channel with abs-max scales,
activations per tensor with a calibrated scale ``s``: ``q(x) = clip(round(x * 127 / s),
-127, 127) * s / 127``. Activations are fake-quantized by ops inserted in a *clone* of the
program (scale -> round -> clip -> scale, basic ops every Paddle build has); weights are
swapped in the scope by :func:`quantized_weights` and restored afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, Mapping

import numpy as np

from .static_graph import QuantLayer, StaticModel, in_static_mode

QMAX = 127.0


def fake_quant_weight(w: np.ndarray, bits: int = 8) -> np.ndarray:
    """Per-output-channel (axis 0) symmetric fake quantization of a conv weight."""
    qmax = float(2 ** (bits - 1) - 1)
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    s = np.where(flat > 0, flat, 1.0).reshape((-1,) + (1,) * (w.ndim - 1)) / qmax
    return (np.clip(np.round(w / s), -qmax, qmax) * s).astype(w.dtype)


def fake_quant_act(x: np.ndarray, scale: float) -> np.ndarray:
    """Per-tensor symmetric fake quantization with abs-max ``scale`` (numpy reference)."""
    s = max(float(scale), 1e-12) / QMAX
    return (np.clip(np.round(x / s), -QMAX, QMAX) * s).astype(x.dtype)


@in_static_mode
def program_with_act_quant(model: StaticModel, layers: Iterable[QuantLayer],
                           act_scales: Mapping[str, float]):
    """A clone of ``model.program`` whose listed layers read fake-quantized inputs.

    Args:
        layers: Layers whose activation input is quantized.
        act_scales: ``{layer.input: abs-max scale}``.
    """
    prog = model.program.clone(for_test=True)
    block = prog.global_block()
    todo = sorted(layers, key=lambda l: l.op_index, reverse=True)  # insert back to front
    for k, layer in enumerate(todo):
        op = block.ops[layer.op_index]
        assert op.input("Filter")[0] == layer.name, "program changed under the layer list"
        src = block.var(layer.input)
        s = max(float(act_scales[layer.input]), 1e-12)
        names = [f"{layer.input}.fq{k}.{j}" for j in range(4)]
        for n in names:
            block.create_var(name=n, shape=src.shape, dtype=src.dtype)
        chain = [("scale", {"scale": QMAX / s, "bias": 0.0, "bias_after_scale": True}),
                 ("round", {}),
                 ("clip", {"min": -QMAX, "max": QMAX}),
                 ("scale", {"scale": s / QMAX, "bias": 0.0, "bias_after_scale": True})]
        prev = layer.input
        for j, (typ, attrs) in enumerate(chain):
            block._insert_op(layer.op_index + j, type=typ, inputs={"X": [prev]},
                             outputs={"Out": [names[j]]}, attrs=attrs)
            prev = names[j]
        block.ops[layer.op_index + len(chain)]._rename_input(layer.input, prev)
    prog._sync_with_cpp()
    return prog


@contextlib.contextmanager
def quantized_weights(model: StaticModel, layers: Iterable[QuantLayer],
                      cache: Dict[str, np.ndarray] = None) -> Iterator[None]:
    """Swap the listed layers' weights for fake-quantized copies inside the block."""
    saved = {}
    try:
        for layer in layers:
            if layer.name in saved:  # a weight shared by several ops
                continue
            w = model.get(layer.name)
            saved[layer.name] = w
            q = cache.get(layer.name) if cache is not None else None
            if q is None:
                q = fake_quant_weight(w)
                if cache is not None:
                    cache[layer.name] = q
            model.set(layer.name, q)
        yield
    finally:
        for name, w in saved.items():
            model.set(name, w)
