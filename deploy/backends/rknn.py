"""The ``rknn-sim`` backend: rknn-toolkit2's PC simulator behind the runner interface.

Builds from ``model.onnx`` when it starts (the simulator cannot load a ``.rknn``) in a worker
process under the rknn venv; see :mod:`deploy.rknn` for the build settings and the files.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..backends.base import Backend
from ..rknn.calib import write_calibration_list
from ..rknn.report import merge_reports
from ..rknn.split import SplitPipeline
from ..rknn.worker import QUANT_MODES, BuildConfig, RknnWorker


class RknnSimBackend(Backend):
    """rknn-toolkit2's PC simulator over ``model.onnx`` (rebuilt at start; see module doc).

    Args:
        meta: Export metadata; the input H and W must be fixed.
        quant: ``fp16`` | ``int8`` | ``hybrid``.
        target: RKNN platform.
        calib: int8/hybrid: a ``dataset.txt`` of ``.npy`` inputs, or a folder of images to
            build one from (:func:`write_calibration_list`).
        calib_images: Images taken from a ``calib`` folder.
        float_ops: ``hybrid``: ONNX op types kept in fp16.
        float_layers: ``hybrid``: Conv layers kept in fp16, by node or weight name
            (:func:`float_tensors`).
        float_spans: ``hybrid``: more ``[input, output]`` tensor spans kept in fp16.
        disable_rules: rknn optimizer rules to turn off (DETR graphs: squeeze_nd_add/mul).
        log_dir: Where the build log and op report go (default: a temp dir).
        quant_algorithm: rknn ``quantized_algorithm``: ``normal`` | ``kl_divergence`` | ``mmse``.
        export_path: Also write the built ``.rknn`` here (what a board loads).
    """

    def __init__(self, meta, *, quant: str = "fp16", target: str = "rk3588",
                 calib: Optional[str] = None, calib_images: int = 100,
                 float_ops: Sequence[str] = ("Softmax",), float_layers: Sequence[str] = (),
                 float_spans: Sequence[Sequence[str]] = (), disable_rules: Sequence[str] = (),
                 quant_algorithm: str = "normal", log_dir: Optional[str] = None,
                 export_path: Optional[str] = None):
        super().__init__(meta)
        if meta.fixed_hw is None:
            raise ValueError("RKNN needs a fixed input shape: export with --input_shape H W "
                             "--batch_size 1 (infer_cfg.yml input_shape has -1)")
        if quant not in QUANT_MODES:
            raise ValueError(f"quant must be one of {QUANT_MODES}, got {quant!r}")
        if (float_layers or float_spans) and quant != "hybrid":
            raise ValueError("float_layers / float_spans need quant='hybrid'")
        # absolute: the worker runs with its cwd in log_dir (hybrid step files go to work_dir)
        self.log_dir = os.path.abspath(log_dir or tempfile.mkdtemp(prefix="rknn_sim_"))
        self.quant, self.target = quant, target
        dataset = self._dataset(meta, quant, calib, calib_images)
        common = dict(target=target, float_ops=list(float_ops), disable_rules=list(disable_rules),
                      quantized_algorithm=quant_algorithm, float_layers=list(float_layers),
                      float_spans=[list(s) for s in float_spans])
        export_path = os.path.abspath(export_path) if export_path else None
        self.split = meta.rknn_split
        self.workers: Dict[str, RknnWorker] = {}
        if self.split is None:
            self._start_single(meta, dataset, export_path, common)
        else:
            if float_layers or float_spans:
                raise ValueError("float_layers / float_spans are not supported for split graphs")
            self._start_split(meta, dataset, export_path, common)
        self.op_reports = {name: w.op_report() for name, w in self.workers.items()}
        self.ops = merge_reports(list(self.op_reports.values()))

    def _dataset(self, meta, quant, calib, calib_images) -> Optional[str]:
        """int8/hybrid: the calibration ``dataset.txt`` (written from an image folder)."""
        if quant == "fp16":
            return None
        if not calib:
            raise ValueError(f"rknn quant={quant} needs calib=<dataset.txt or image folder>")
        return os.path.abspath(calib if os.path.isfile(calib) else write_calibration_list(
            meta, calib, os.path.join(self.log_dir, "calib"), num=int(calib_images)))

    def _start_single(self, meta, dataset, export_path, common) -> None:
        hw = meta.fixed_hw
        cfg = BuildConfig(onnx=os.path.abspath(meta.file("model.onnx")), inputs=["image"],
                          input_shapes=[[1, 3, hw[0], hw[1]]], quant=self.quant, dataset=dataset,
                          work_dir=os.path.join(self.log_dir, "hybrid"),
                          export_path=export_path, **common)
        self.workers["model"] = RknnWorker(cfg, os.path.join(self.log_dir, f"build_{self.quant}.log"))
        self._run = lambda x: self._per_image(self.workers["model"], x)

    def _start_split(self, meta, dataset, export_path, common) -> None:
        """RT-DETR split: quant applies to the encoder graph (backbone + hybrid encoder); the
        decoder graph (attention, softmax, box refinement) stays fp16 on the NPU."""
        hw, quant = meta.fixed_hw, self.quant
        stem = export_path[:-len(".rknn")] if export_path and export_path.endswith(".rknn") \
            else export_path
        enc = BuildConfig(onnx=os.path.abspath(meta.file(self.split["encoder"])), inputs=["image"],
                          input_shapes=[[1, 3, hw[0], hw[1]]], quant=quant, dataset=dataset,
                          work_dir=os.path.join(self.log_dir, "hybrid_encoder"),
                          export_path=f"{stem}_encoder.rknn" if stem else None, **common)
        dec = BuildConfig(onnx=os.path.abspath(meta.file(self.split["decoder"])),
                          inputs=list(self.split["decoder_inputs"]),
                          input_shapes=[list(s) for s in self.split["decoder_input_shapes"]],
                          quant="fp16", export_path=f"{stem}_decoder.rknn" if stem else None,
                          **common)
        self.workers["encoder"] = RknnWorker(
            enc, os.path.join(self.log_dir, f"build_encoder_{quant}.log"))
        self.workers["decoder"] = RknnWorker(
            dec, os.path.join(self.log_dir, "build_decoder_fp16.log"))
        self._run = SplitPipeline.from_config(self.split, self.workers["encoder"].infer,
                                              self.workers["decoder"].infer)

    @staticmethod
    def _per_image(worker: "RknnWorker", image: np.ndarray) -> List[np.ndarray]:
        per = [worker.infer(image[i:i + 1]) for i in range(image.shape[0])]
        return [np.concatenate(p, axis=0) for p in zip(*per)]

    def infer(self, image: np.ndarray) -> List[np.ndarray]:
        return self._run(image)

    def describe(self) -> Dict[str, Any]:
        w = next(iter(self.workers.values()))
        return {"engine": w.info.get("toolkit", "rknn-toolkit2"), "mode": "simulator",
                "target": self.target, "quant": self.quant, "graphs": list(self.workers),
                "npu_layers": self.ops["npu_layers"], "cpu_layers": self.ops["cpu_layers"]}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
