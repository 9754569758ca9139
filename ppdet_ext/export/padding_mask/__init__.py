"""Make a conv net's outputs independent of the zero padding around each image.

A keep-ratio export is fed batches zero-padded bottom/right to the batch maximum; inside
:func:`padding_invariant` a model's spatial layers see each image as if it were alone, so
every batch gives the bs = 1 outputs. Three pieces:

* ``region.py``: where each image lies (:func:`valid_extent`, :class:`PaddingExtent`);
* ``layers.py``: the hook each layer kind gets;
* ``context.py``: :func:`padding_invariant` / :func:`padding_context`, what adapters enter.

Design, engine choices, limits and measurements: docs/padding_invariance.md.
"""
from .context import PAD_ROUND, masks_padding, padding_context, padding_invariant, probe_strides
from .region import MAX_LOG2_STRIDE, PROBE_SIZE, PaddingExtent, axis_mask, valid_extent

__all__ = ["valid_extent", "axis_mask", "PaddingExtent", "padding_invariant", "probe_strides",
           "masks_padding", "padding_context", "MAX_LOG2_STRIDE", "PROBE_SIZE", "PAD_ROUND"]
