"""2-D sin-cos position embedding, computed for the actual feature size.

Channel layout (pinned by ``tests/test_rtdetr_position.py`` on a hand-computed 2x3 grid):
for the token at row ``y``, column ``x`` (tokens flattened row-major, ``k = y * w + x``) and
``q = dim / 4`` frequencies ``omega_i = temperature ** (-i / q)``::

    [sin(y * omega), cos(y * omega), sin(x * omega), cos(x * omega)]

i.e. the first half of the channels encodes the row, the second half the column. This is
exactly what rtdetrv2_pytorch and PaddleDetection's RT-DETRv2 compute on the square maps
they are trained and evaluated on (their ``meshgrid(arange(w), arange(h), 'ij')`` puts
``k // h`` in the first half and ``k % h`` in the second, which is ``(y, x)`` when
``h == w``), so their weights run unchanged here.

Non-square and dynamic inputs: the same formula with the map's own ``h`` and ``w`` (row
first, column second). The reference formula is no 2-D grid there (``k // h`` and ``k % h``
mix rows and columns when ``h != w``); keeping "first half = row, second half = column"
gives a trained model the same meaning of each channel at every aspect ratio. ``h``/``w``
may be Python ints (dygraph, fixed-shape export: the embedding folds to a constant) or
0-D int tensors (dynamic-shape export).
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
        Tensor: ``[1, h * w, dim]`` float32; channels ``[0, dim/2)`` encode the row ``y``,
        ``[dim/2, dim)`` the column ``x`` (sin then cos in each half).
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos embedding needs dim % 4 == 0, got {dim}")
    quarter = dim // 4
    omega = paddle.arange(quarter, dtype='float32') / quarter
    omega = 1.0 / (temperature ** omega)
    grid_y, grid_x = paddle.meshgrid(
        paddle.arange(h, dtype='float32'), paddle.arange(w, dtype='float32'))
    out_y = grid_y.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    out_x = grid_x.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    emb = paddle.concat(
        [paddle.sin(out_y), paddle.cos(out_y), paddle.sin(out_x), paddle.cos(out_x)], axis=1)
    return emb.unsqueeze(0)
