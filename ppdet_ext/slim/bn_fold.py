"""Fold inference-mode ``batch_norm`` into the preceding conv of an exported static graph.

Why before INT8: an unfolded graph has conv -> batch_norm, so PTQ quantizes the *pre-BN*
conv output per tensor, whose channels differ by the BN scale ``gamma / sqrt(var + eps)``
(orders of magnitude in ESNet/PicoDet); the small channels round to zero and BN then
amplifies the error. Measured on PicoDet-S: COCO AP 0.335 -> 0.000 (Paddle PTQ) and 0.010
(ORT QDQ) without folding (docs/quantization.md). Runtimes fold BN anyway for FP32, so the
folded graph is the one whose quantization matters.

``W' = W * s[:, None, None, None]``, ``b' = beta - mean * s`` with ``s = gamma / sqrt(var +
eps)``; the batch_norm op becomes ``elementwise_add(conv_out, b', axis=1)``. Conv weight
names are kept, so skip-lists and sensitivity reports name the same layers.
"""
from __future__ import annotations

import os
import shutil
from typing import List

import numpy as np

from ppdet_ext_deploy.meta import copy_meta

from .static_graph import in_static_mode


@in_static_mode
def fold_batch_norm(model_dir: str, out_dir: str) -> List[str]:
    """Write ``out_dir``: ``model_dir`` with every conv -> batch_norm pair folded.

    Returns the conv weight names that were folded.
    """
    import paddle

    from .static_graph import StaticModel

    m = StaticModel(model_dir)
    block = m.program.global_block()
    consumers = {}
    for op in block.ops:
        for n in op.input_arg_names:
            consumers.setdefault(n, []).append(op)
    producer = {o: op for op in block.ops for o in op.output_arg_names}
    folded = []
    for i, op in enumerate(list(block.ops)):
        if op.type != "batch_norm":
            continue
        x = op.input("X")[0]
        conv = producer.get(x)
        if conv is None or conv.type not in ("conv2d", "depthwise_conv2d") or len(consumers.get(x, [])) != 1:
            continue
        wname = conv.input("Filter")[0]
        if len(consumers.get(wname, [])) != 1:
            continue  # shared weight: folding would change the other users
        gamma, beta = m.get(op.input("Scale")[0]), m.get(op.input("Bias")[0])
        mean, var = m.get(op.input("Mean")[0]), m.get(op.input("Variance")[0])
        s = gamma / np.sqrt(var + op.attr("epsilon"))
        w = m.get(wname)
        m.set(wname, (w * s.reshape(-1, 1, 1, 1)).astype(w.dtype))
        bias = (beta - mean * s).astype(np.float32)
        bname = f"{wname}.bn_bias"
        block.create_var(name=bname, shape=list(bias.shape), dtype=block.var(wname).dtype,
                         persistable=True)
        m.scope.var(bname).get_tensor().set(bias, paddle.CPUPlace())
        y = op.output("Y")[0]
        idx = list(block.ops).index(op)
        block._remove_op(idx)
        block._insert_op(idx, type="elementwise_add", inputs={"X": [x], "Y": [bname]},
                         outputs={"Out": [y]}, attrs={"axis": 1})
        folded.append(wname)
    m.program._sync_with_cpp()
    os.makedirs(out_dir, exist_ok=True)
    feeds = [block.var(n) for n in m.feeds]
    fetches = [block.var(n) for n in m.fetch_names]
    with paddle.static.scope_guard(m.scope):
        paddle.static.save_inference_model(os.path.join(out_dir, "model"), feeds, fetches, m.exe,
                                           program=m.program)
    copy_meta(model_dir, out_dir)
    if os.path.isfile(os.path.join(model_dir, "config.yml")):
        shutil.copy(os.path.join(model_dir, "config.yml"), os.path.join(out_dir, "config.yml"))
    return folded
