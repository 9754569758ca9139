"""2-D sin-cos position embedding, computed for the actual feature size.

The size is taken from the feature map each call, so non-square inputs (and inputs whose
size differs from training) get a matching embedding. ``h``/``w`` may be Python ints
(dygraph, fixed-shape export: the embedding folds to a constant) or 0-D int tensors
(dynamic-shape export).
"""
import paddle


def sincos_2d_embedding(h, w, dim, temperature=10000.0):
    """Position embedding of an ``h x w`` grid, rows flattened row-major.

    Args:
        h (int | Tensor): grid height.
        w (int | Tensor): grid width.
        dim (int): embedding size, a multiple of 4.
        temperature (float): frequency base.

    Returns:
        Tensor: ``[1, h * w, dim]`` float32; the first ``dim / 2`` channels encode x,
        the rest y (sin then cos in each half).
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos embedding needs dim % 4 == 0, got {dim}")
    quarter = dim // 4
    omega = paddle.arange(quarter, dtype='float32') / quarter
    omega = 1.0 / (temperature ** omega)
    grid_y, grid_x = paddle.meshgrid(
        paddle.arange(h, dtype='float32'), paddle.arange(w, dtype='float32'))
    out_x = grid_x.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    out_y = grid_y.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    emb = paddle.concat(
        [paddle.sin(out_x), paddle.cos(out_x), paddle.sin(out_y), paddle.cos(out_y)], axis=1)
    return emb.unsqueeze(0)
