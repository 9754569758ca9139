"""Structured (filter) pruning of a dygraph detector with PaddleSlim — what ppdet's
``slim: Pruner`` does (``ppdet.slim.prune.Pruner``), without its FLOPs report (PaddleSlim's
``dygraph_flops`` raises IndexError on GFL's 1-D DFL projection matmul on Paddle 2.6.2).

Parameters are named as ppdet names them: the static names of a model built first in a fresh
name scope (``conv2d_27.w_0``), so :func:`build_fresh` builds the model that way; the names
of a model are listed by :func:`conv_weight_names`.
"""
from __future__ import annotations

import difflib
from typing import Dict, List, Sequence

CRITERIA = ("l1_norm", "fpgm")


def build_fresh(architecture: str):
    """``create(architecture)`` in a fresh parameter-name scope (``conv2d_0.w_0`` first)."""
    import paddle

    from ppdet.core.workspace import create

    with paddle.utils.unique_name.guard():
        return create(architecture)


def conv_weight_names(model) -> List[str]:
    """Names of the 4-D (conv) weights of ``model``, in creation order."""
    return [p.name for p in model.parameters() if len(p.shape) == 4]


def prune_filters(model, ratios: Dict[str, float], *, criterion: str = "l1_norm",
                  input_hw: Sequence[int] = (320, 320)) -> Dict[str, List[int]]:
    """Remove ``ratio`` of the output filters of each named conv weight (and the matching
    input channels / BN entries downstream), in place.

    Args:
        model: a ppdet detector taking ``{"image", "im_shape", "scale_factor"}``.
        ratios: ``{"conv2d_27.w_0": 0.2, ...}``.
        criterion: ``l1_norm`` (L1NormFilterPruner) or ``fpgm`` (FPGMFilterPruner).
        input_hw: the traced input size (the graph, not the size, matters).

    Returns:
        ``{name: new shape}`` of every pruned weight named in ``ratios``.

    Raises:
        ValueError: a name is not a conv weight of ``model`` (close matches named).
    """
    import paddle
    import paddleslim

    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    names = conv_weight_names(model)
    for name in ratios:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"'{name}' is not a conv weight of {type(model).__name__} "
                             f"({names[0]} ... {names[-1]}){hint}")
    h, w = input_hw
    spec = [{"image": paddle.ones([1, 3, h, w], "float32"),
             "im_shape": paddle.to_tensor([[float(h), float(w)]]),
             "scale_factor": paddle.ones([1, 2], "float32")}]
    training = model.training
    model.eval()
    cls = (paddleslim.dygraph.FPGMFilterPruner if criterion == "fpgm"
           else paddleslim.dygraph.L1NormFilterPruner)
    cls(model, spec).prune_vars({n: float(r) for n, r in ratios.items()}, [0])
    if training:
        model.train()
    return {p.name: list(p.shape) for p in model.parameters() if p.name in ratios}
