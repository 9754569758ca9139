"""Model slimming: post-training quantization (PTQ), quantization-aware training (QAT),
per-layer quantization sensitivity, and DETR depth/width slimming.

One concept per module:

* :mod:`.calib`       — calibration batches from an image folder or COCO file, preprocessed
  exactly as the export's ``infer_cfg.yml`` says (``deploy.preprocess``).
* :mod:`.static_graph` — loading an exported static graph and listing its quantizable layers.
* :mod:`.fakequant`   — simulate INT8 on chosen layers of an FP32 static graph (for analysis).
* :mod:`.sensitivity` — per-layer quantization error on the calibration set + a skip-list.
* :mod:`.ptq`         — static post-training quantization of an export directory (Paddle's
  ``PostTrainingQuantization``, the engine behind PaddleSlim's ``quant_post_static``).
* :mod:`.onnx_ptq`    — ONNX Runtime static QDQ INT8 of an export's ``model.onnx``.
* :mod:`.qat`         — dygraph quantization-aware training on a ppdet model.
* :mod:`.detr_prune`  — RT-DETRv2 decoder truncation and structured pruning.

Nothing here is imported by ``import ppdet_ext``; import the submodule you need.
"""
