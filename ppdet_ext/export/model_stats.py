"""Model size and cost: parameters, and multiply-accumulates of the inference graph.

FLOPs = 2 x multiply-accumulates (the convention of the published RT-DETR table),
counted on the static graph of the deploy forward (``adapters.raw_outputs``), per op, for
``conv2d``/``depthwise_conv2d`` (out elements x Cin/groups x kh x kw) and
``matmul``/``matmul_v2`` (out elements x reduced dim). Element-wise ops, norms, softmax
and the sampling ops are left out (well under 1% of the total for our models).
Parameters exclude BatchNorm running statistics.
"""
from .exporter import static_program

_STAT_SUFFIXES = ("_mean", "_variance")


def count_params(model):
    """Number of parameters of ``model`` without BatchNorm running statistics."""
    return sum(int(p.numel()) for n, p in model.named_parameters()
               if not n.endswith(_STAT_SUFFIXES))


def _prod(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _op_macs(op, block):
    def shape(slot):
        return list(block._var_recursive(op.input(slot)[0] if slot in op.input_names
                                         else op.output(slot)[0]).shape)
    if op.type in ("conv2d", "depthwise_conv2d"):
        k = shape("Filter")                  # [Cout, Cin/groups, kh, kw]
        return _prod(shape("Output")) * k[1] * k[2] * k[3]
    if op.type in ("matmul_v2", "matmul"):
        x = shape("X")
        trans_x = op.attr("trans_x") if op.has_attr("trans_x") else op.attr("transpose_X")
        reduced = x[-2] if (trans_x and len(x) > 1) else x[-1]
        return _prod(shape("Out")) * int(reduced)
    return 0


def count_macs(model, height, width):
    """Multiply-accumulates of the deploy forward on a ``[1, 3, height, width]`` input."""
    program = static_program(model, [1, 3, height, width])
    return sum(_op_macs(op, block) for block in program.blocks for op in block.ops)
