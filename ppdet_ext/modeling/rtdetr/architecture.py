"""RT-DETRv2 architecture: ResNet-vd -> hybrid encoder -> decoder -> loss / post-process."""
import paddle

from ppdet.core.workspace import create
from ppdet.modeling.architectures.meta_arch import BaseArch

from ppdet_ext.registry import register
from .box_ops import cxcywh_to_xyxy
from .postprocess import topk_detections
from .shapes import spatial_hw

__all__ = ['ExtRTDETR']


@register
class ExtRTDETR(BaseArch):
    """Args:
        backbone (nn.Layer): returns strides 8/16/32 (ppdet ``ResNet`` vd, return_idx [1,2,3]).
        neck (ExtHybridEncoder): built with the backbone's ``out_shape``.
        transformer (ExtRTDETRDecoder): built with the neck's ``out_shape``.
        loss (ExtRTDETRLoss): training loss.
        post_process (ExtRTDETRPostProcess): inference top-k.
    """
    __category__ = 'architecture'
    __inject__ = ['post_process']

    def __init__(self, backbone, neck, transformer, loss, post_process='ExtRTDETRPostProcess'):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.transformer = transformer
        self.loss = loss
        self.post_process = post_process

    @classmethod
    def from_config(cls, cfg, *args, **kwargs):
        backbone = create(cfg['backbone'])
        neck = create(cfg['neck'], input_shape=backbone.out_shape)
        transformer = create(cfg['transformer'], input_shape=neck.out_shape)
        return {'backbone': backbone, 'neck': neck, 'transformer': transformer,
                'loss': create(cfg['loss'])}

    def _features(self, image):
        return self.neck(self.backbone({'image': image}))

    def _forward(self):
        feats = self._features(self.inputs['image'])
        if self.training:
            out = self.transformer(feats, self.inputs)
            return self.loss(out, self.inputs['gt_bbox'], self.inputs['gt_class'])
        boxes, logits = self.transformer(feats)
        return self.post_process(boxes, logits, self.inputs['im_shape'],
                                 self.inputs['scale_factor'])

    def get_loss(self):
        losses = self._forward()
        losses['loss'] = paddle.add_n(list(losses.values()))
        return losses

    def get_pred(self):
        bbox, bbox_num = self._forward()
        return {'bbox': bbox, 'bbox_num': bbox_num}

    # ---- deploy side (see docs/export_format.md) ----
    def convert_to_deploy(self):
        """Deploy-time rewrites: fold RepVGG branches, drop decoder layers after eval_idx."""
        targets = [m for m in self.sublayers() if hasattr(m, 'convert_to_deploy')]
        for m in targets:
            m.convert_to_deploy()
        return self

    def export_raw(self, image):
        """``image`` ``[B, 3, H, W]`` -> scores ``[B, Q, C]`` (sigmoid), boxes ``[B, Q, 4]``
        xyxy in network-input pixels. Call ``eval()`` first (training returns losses)."""
        if self.training:
            raise RuntimeError("export_raw needs eval mode: call model.eval() first")
        boxes, logits = self.transformer(self._features(image))
        h, w = spatial_hw(image)
        if isinstance(h, int) and isinstance(w, int):
            whwh = paddle.to_tensor([w, h, w, h], dtype='float32')
        else:
            whwh = paddle.stack([w, h, w, h]).astype('float32')
        return paddle.nn.functional.sigmoid(logits), cxcywh_to_xyxy(boxes) * whwh

    def export_raw_topk(self, image):
        """Same input; returns scores ``[B, K]``, labels ``[B, K]`` int64, boxes
        ``[B, K, 4]`` xyxy network-input pixels, ``K = post_process.num_top_queries``."""
        scores, boxes = self.export_raw(image)
        k = min(self.post_process.num_top_queries, scores.shape[1] * scores.shape[2])
        return topk_detections(scores, boxes, k)

    def export_postprocess_cfg(self, kind='dense'):
        """``Postprocess`` metadata for an export of output kind ``dense`` or ``topk``."""
        if kind == 'topk':
            return {'type': 'none'}
        return {'type': 'topk', 'num_top_queries': self.post_process.num_top_queries}
