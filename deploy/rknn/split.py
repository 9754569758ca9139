"""RT-DETR NPU/CPU split at run time: encoder graph -> numpy query selection -> decoder graph
(ppdet_ext/export/rknn_split.py writes the graphs)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..meta import load_meta


def split_config(model_dir: str) -> Optional[Mapping[str, Any]]:
    """The ``rknn_split`` block of ``infer_cfg.yml`` (``None`` for a single-graph export)."""
    return load_meta(model_dir).rknn_split


def select_queries(enc_score: np.ndarray, out_memory: np.ndarray, enc_coord: np.ndarray,
                   k: int):
    """The query selection that runs on the CPU: top-``k`` tokens by score, their rows.

    Args:
        enc_score: ``[B, L, C]`` class logits per encoder token (the encoder graph's
            ``enc_logits``; the max over classes is taken here, RKNN would run its ReduceMax
            on the CPU anyway), or ``[B, L]`` best class logit (``enc_score`` of older exports).
        out_memory: ``[B, L, D]``; enc_coord: ``[B, L, 4]`` cxcywh logits.

    Returns:
        ``target [B, k, D]``, ``ref_unact [B, k, 4]`` in descending score order.
    """
    if enc_score.ndim == 3:
        enc_score = enc_score.max(-1)
    idx = np.argsort(-enc_score, axis=1, kind="stable")[:, :k]
    take = lambda a: np.take_along_axis(a, idx[..., None], axis=1)  # noqa: E731
    return take(out_memory), take(enc_coord)


class SplitPipeline:
    """encoder graph -> numpy top-k -> decoder graph: dense ``[scores, boxes]``.

    Args:
        run_encoder: ``image [1, 3, H, W] -> [enc_logits, out_memory, enc_coord, memory]``.
        run_decoder: ``(target, ref_unact, memory) -> [scores, boxes]``.
        num_queries: ``K``.
        channels_first: the encoder writes ``[1, X, L]`` (``encoder_layout: channels_first``
            in ``rknn_split``); ``memory`` then goes to the decoder as it is.
    """

    def __init__(self, run_encoder, run_decoder, num_queries: int, channels_first: bool = False):
        self.run_encoder, self.run_decoder, self.k = run_encoder, run_decoder, int(num_queries)
        self.channels_first = bool(channels_first)

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], run_encoder, run_decoder) -> "SplitPipeline":
        """From the ``rknn_split`` block of ``infer_cfg.yml``."""
        return cls(run_encoder, run_decoder, cfg["num_queries"],
                   cfg.get("encoder_layout") == "channels_first")

    def __call__(self, image: np.ndarray) -> List[np.ndarray]:
        outs = []
        for i in range(image.shape[0]):
            enc_logits, out_memory, enc_coord, memory = self.run_encoder(image[i:i + 1])
            if self.channels_first:  # [1, X, L] -> [1, L, X] (views; only K rows are copied)
                enc_logits, out_memory, enc_coord = (np.swapaxes(a, 1, 2) for a in
                                                     (enc_logits, out_memory, enc_coord))
            target, ref = select_queries(enc_logits, out_memory, enc_coord, self.k)
            outs.append(self.run_decoder(target, ref, memory))
        return [np.concatenate(o, axis=0) for o in zip(*outs)]


def onnxruntime_split_pipeline(model_dir: str, threads: int = 1) -> SplitPipeline:
    """The same split on ONNX Runtime (CPU): checks the split without rknn-toolkit2."""
    import onnxruntime as ort

    cfg = split_config(model_dir)
    if cfg is None:
        raise ValueError(f"{model_dir}: infer_cfg.yml has no rknn_split block")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    enc = ort.InferenceSession(os.path.join(model_dir, cfg["encoder"]), so,
                               providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(model_dir, cfg["decoder"]), so,
                               providers=["CPUExecutionProvider"])
    names = list(cfg["decoder_inputs"])
    return SplitPipeline.from_config(
        cfg, lambda x: enc.run(list(cfg["encoder_outputs"]), {"image": x}),
        lambda *xs: dec.run(["scores", "boxes"], dict(zip(names, xs))))
