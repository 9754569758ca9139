"""RKNN (rknn-toolkit2 2.5.0): ONNX -> ``.rknn`` for an RK NPU, and the PC simulator.

Files: :mod:`.worker` (build config, the worker process under the rknn venv),
:mod:`.calib` (calibration list), :mod:`.hybrid` (which layers stay fp16), :mod:`.report`
(op reports from the build log), :mod:`.split` (RT-DETR encoder -> numpy -> decoder);
the runner backend is :class:`deploy.backends.rknn.RknnSimBackend`.

rknn-toolkit2 is an optional extra living in its own venv (``scripts/setup_rknn_env.sh`` ->
``.venv-rknn``): its pins (protobuf<=4.25.4, onnx<=1.18, torch<=2.4.0) clash with the core
stack. Everything that imports ``rknn`` therefore runs in a worker process started with that
venv's python (``python -m deploy.rknn.worker serve``), talking to this process over a
``multiprocessing.connection`` socket; the worker imports only numpy + ``rknn`` (+ this module).

The simulator cannot load a ``.rknn`` file: it runs the model built in the same session, so a
backend builds from ``model.onnx`` when it starts (seconds for fp16; int8 adds calibration).

Build settings (:class:`BuildConfig`):

* ``quant``: ``fp16`` | ``int8`` (w8a8, calibration list) | ``hybrid`` (int8 with some layers
  kept in fp16: the op types in ``float_ops`` — by default ``Softmax``, i.e. DFL and
  attention —, the convs in ``float_layers`` (node or Paddle weight names, e.g. from a
  sensitivity report) and the subgraphs in ``float_spans``; resolved in rknn's own graph after
  ``hybrid_quantization_step1`` and written into its ``custom_quantize_layers``).
* Input: the graph takes the *normalised* ``[1, 3, H, W]`` float tensor the runner feeds
  (``mean_values`` 0, ``std_values`` 1); calibration data is written as ``.npy`` by the same
  ``deploy/preprocess.py`` code. On a board one would fold mean/std into the ``.rknn`` instead.
* RKNN needs a fixed input shape: export with ``--input_shape H W`` (and ``--batch_size 1``).
  A batch ``B > 1`` runs image by image.

The build log's layer table (``ID OpType DataType Target ...``) is rknn-toolkit2's own record of
which layer runs on the NPU and which falls back to the CPU; :func:`parse_op_table` turns it
into the op report.
"""
