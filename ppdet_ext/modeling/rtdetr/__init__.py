"""RT-DETRv2 (issue #3): hybrid encoder, deformable decoder with per-level points and a
``default | discrete`` sampling switch, varifocal/L1/GIoU loss, top-k post-process.

Every class registers into ppdet's workspace under an ``Ext`` name; the backbone is
ppdet 2.6.0's own ``ResNet`` (variant ``d``).
"""
from . import (architecture, attention, criterion, csp_rep, decoder,  # noqa: F401
               decoder_layer, deformable_attention, hybrid_encoder, postprocess,
               varifocal_loss)
from .architecture import ExtRTDETR  # noqa: F401
from .criterion import ExtRTDETRLoss  # noqa: F401
from .decoder import ExtRTDETRDecoder  # noqa: F401
from .hybrid_encoder import ExtHybridEncoder  # noqa: F401
from .postprocess import ExtRTDETRPostProcess  # noqa: F401
from .varifocal_loss import ExtVarifocalLoss  # noqa: F401
