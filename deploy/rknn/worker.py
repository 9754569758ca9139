"""The rknn-toolkit2 worker process and its build settings (see :mod:`deploy.rknn`)."""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from .hybrid import mark_float16, resolve_float_layers
from .report import parse_op_table, summarize_ops

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VENV = os.path.join(REPO, ".venv-rknn")
QUANT_MODES = ("fp16", "int8", "hybrid")
# DETR-family graphs fail rknn's squeeze fusion rules (docs/stack.md)
DETR_DISABLE_RULES = ("squeeze_nd_add", "squeeze_nd_mul")


@dataclass
class BuildConfig:
    """What one ONNX -> RKNN build needs (plain data: it crosses the process boundary).

    Attributes:
        onnx: Path of the ONNX graph (fixed input shapes).
        inputs: Graph input names (``["image"]``; the RT-DETR decoder part has three).
        input_shapes: One fixed shape per input (``[[1, 3, H, W]]``).
        quant: ``fp16`` | ``int8`` | ``hybrid``.
        target: RKNN platform (``rk3588``).
        dataset: Calibration list (one ``.npy`` path a line), needed for int8/hybrid.
        float_ops: ``hybrid``: ONNX op types kept in fp16 (each node's input->output span).
        float_layers: ``hybrid``: Conv layers kept in fp16, by node or weight name.
        float_spans: ``hybrid``: ``[input tensor, output tensor]`` spans kept in fp16 (e.g. a
            whole backbone stage ``["image", "..."]``). Both are resolved against rknn's own
            graph after step 1 and written into its cfg (:func:`float_tensors`).
        disable_rules: rknn graph-optimizer rules to switch off.
        quantized_algorithm: ``normal`` | ``mmse`` | ``kl_divergence``.
        export_path: Write the ``.rknn`` here (``None``: do not export).
        work_dir: Scratch dir for hybrid step files.
    """

    onnx: str
    inputs: List[str]
    input_shapes: List[List[int]]
    quant: str = "fp16"
    target: str = "rk3588"
    dataset: Optional[str] = None
    float_ops: List[str] = field(default_factory=lambda: ["Softmax"])
    float_layers: List[str] = field(default_factory=list)
    float_spans: List[List[str]] = field(default_factory=list)
    disable_rules: List[str] = field(default_factory=list)
    quantized_algorithm: str = "normal"
    export_path: Optional[str] = None
    work_dir: Optional[str] = None


# -- environment ----------------------------------------------------------------------------
def rknn_python() -> Optional[str]:
    """The python that has rknn-toolkit2: ``$RKNN_PYTHON``, else ``.venv-rknn``, else None."""
    env = os.environ.get("RKNN_PYTHON")
    if env:
        return env if os.path.isfile(env) else None
    py = os.path.join(DEFAULT_VENV, "bin", "python")
    if os.path.isfile(py) and glob.glob(os.path.join(DEFAULT_VENV, "lib", "python*",
                                                     "site-packages", "rknn", "api")):
        return py
    return None


def unavailable_reason() -> Optional[str]:
    """``None`` when the rknn worker can start, else why not (for skips and format checks)."""
    if rknn_python() is None:
        return ("rknn-toolkit2 is not installed: it is an optional extra in its own venv; run "
                "`bash scripts/setup_rknn_env.sh` (creates .venv-rknn, ~5.6 GB) or set RKNN_PYTHON")
    return None


def constant_outputs(cfg: "BuildConfig", log_text: str):
    """``(num_outputs, {index: array})`` for the outputs rknn-toolkit2 removed as constants.

    rknn folds an output that does not depend on the input into a constant and drops it from
    the model (its log: "These outputs [...] of model are constants, remove it"); e.g. a
    freshly initialised RT-DETR's ``enc_coord`` (zero-initialised box head + anchors). Their
    value is input-independent, so ONNX Runtime computes it once here and the backend puts it
    back in place, keeping the output list of the ONNX graph.
    """
    import onnx

    outs = [o.name for o in onnx.load(cfg.onnx, load_external_data=False).graph.output]
    m = re.search(r"These outputs \[([^\]]*)\] of model are constants", log_text)
    dropped = [n.strip().strip("'\"") for n in m.group(1).split(",")] if m else []
    if not dropped:
        return len(outs), {}
    import onnxruntime as ort

    sess = ort.InferenceSession(cfg.onnx, providers=["CPUExecutionProvider"])
    feeds = {n: np.zeros(s, np.float32) for n, s in zip(cfg.inputs, cfg.input_shapes)}
    values = dict(zip(dropped, sess.run(dropped, feeds)))
    return len(outs), {outs.index(n): values[n] for n in dropped}


def _build(cfg: BuildConfig):
    from rknn.api import RKNN

    if cfg.quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}, got {cfg.quant!r}")
    if cfg.quant != "fp16" and not cfg.dataset:
        raise ValueError(f"quant={cfg.quant} needs a calibration list (dataset)")
    kw = {"disable_rules": list(cfg.disable_rules)} if cfg.disable_rules else {}

    def fresh():
        r = RKNN(verbose=True)
        # no mean/std: inputs arrive normalised, exactly as the runner feeds the other backends
        r.config(target_platform=cfg.target, quantized_algorithm=cfg.quantized_algorithm, **kw)
        return r

    rk = fresh()
    if rk.load_onnx(cfg.onnx, inputs=list(cfg.inputs),
                    input_size_list=[list(s) for s in cfg.input_shapes]) != 0:
        raise RuntimeError(f"rknn load_onnx failed for {cfg.onnx} (see the log)")
    if cfg.quant == "hybrid":
        work = cfg.work_dir or tempfile.mkdtemp(prefix="rknn_hybrid_")
        os.makedirs(work, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(work)  # step 1 writes <name>.model/.data/.quantization.cfg into the cwd
        try:
            # no custom_hybrid spans here: rknn checks them against its own optimised graph,
            # where many ONNX tensors no longer exist (fused BN, channel-shuffle reshapes,
            # DFL reshapes); the fp16 layers are resolved in that graph (<stem>.model) and
            # written into the step-1 cfg instead, which is what step 2 reads
            if rk.hybrid_quantization_step1(dataset=cfg.dataset) != 0:
                raise RuntimeError("rknn hybrid_quantization_step1 failed (see the log)")
            stem = os.path.splitext(os.path.basename(cfg.onnx))[0]
            marked = resolve_float_layers(f"{stem}.model", cfg.onnx, cfg.float_layers,
                                          cfg.float_spans, cfg.float_ops)
            n = mark_float16(f"{stem}.quantization.cfg", marked)
            print(f"hybrid: {len(marked)} layers requested in float16; cfg float16 layers: {n}: "
                  f"{marked}", flush=True)
            rk.release()
            rk = fresh()  # step 2 refuses an object that already loaded a model
            ret = rk.hybrid_quantization_step2(model_input=f"{stem}.model", data_input=f"{stem}.data",
                                               model_quantization_cfg=f"{stem}.quantization.cfg")
        finally:
            os.chdir(cwd)
        if ret != 0:
            raise RuntimeError("rknn hybrid_quantization_step2 failed (see the log)")
    elif rk.build(do_quantization=cfg.quant == "int8", dataset=cfg.dataset) != 0:
        raise RuntimeError("rknn build failed (see the log)")
    if cfg.export_path and rk.export_rknn(cfg.export_path) != 0:
        raise RuntimeError(f"rknn export_rknn({cfg.export_path}) failed")
    return rk


def _serve(address: str, runtime: bool) -> int:
    from multiprocessing.connection import Client

    conn = Client(address, family="AF_UNIX", authkey=bytes.fromhex(os.environ["RKNN_WORKER_KEY"]))
    rk = None
    try:
        cfg = BuildConfig(**conn.recv())
        t = time.perf_counter()
        rk = _build(cfg)
        if runtime and rk.init_runtime(target=None) != 0:  # target None = PC simulator
            raise RuntimeError("rknn init_runtime(simulator) failed")
        from importlib.metadata import version
        sys.stdout.flush()
        conn.send(("ready", {"build_s": time.perf_counter() - t,
                             "toolkit": f"rknn-toolkit2 {version('rknn-toolkit2')}"}))
        while runtime:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            xs = [np.ascontiguousarray(a, np.float32) for a in arg]
            # 4-D inputs are NCHW like the ONNX graph; rknn ignores the format of other ranks
            fmt = ["nchw"] * len(xs)
            outs = rk.inference(inputs=xs, data_format=fmt if len(xs) > 1 else fmt[0])
            conn.send(("ok", [np.asarray(o, np.float32) for o in outs]))
        return 0
    except Exception:  # noqa: BLE001  (sent to the parent, which raises it)
        conn.send(("error", traceback.format_exc()))
        return 1
    finally:
        sys.stdout.flush()
        if rk is not None:
            rk.release()
        conn.close()


# -- caller side ----------------------------------------------------------------------------
class RknnWorker:
    """A worker process under the rknn venv that builds one model (and optionally serves it).

    Args:
        cfg: The build.
        log_path: The worker's stdout/stderr (rknn's log, with the layer table).
        runtime: Keep the simulator running for :meth:`infer` after the build.
        timeout: Seconds allowed for the build.
    """

    def __init__(self, cfg: BuildConfig, log_path: str, *, runtime: bool = True,
                 timeout: float = 3600.0):
        from multiprocessing.connection import Listener

        py = rknn_python()
        if py is None:
            raise RuntimeError(unavailable_reason())
        self.log_path = log_path
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        key = secrets.token_bytes(16)
        sock_dir = tempfile.mkdtemp(prefix="rknn_")
        address = os.path.join(sock_dir, "worker.sock")
        self._listener = Listener(address, family="AF_UNIX", authkey=key)
        # The rknn venv imports this package under its installed name through a link in the
        # socket folder (adding our site-packages would shadow its own numpy/onnx pins).
        pkg = __package__.split(".")[0]
        os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   os.path.join(sock_dir, pkg))
        env = dict(os.environ, RKNN_WORKER_KEY=key.hex(),
                   PYTHONPATH=sock_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [py, "-m", f"{pkg}.rknn.worker", "serve", address] + ([] if runtime else ["--no-runtime"]),
            # cwd: rknn writes files there (e.g. constant outputs as .npy); keep them by the log
            cwd=os.path.dirname(os.path.abspath(log_path)), env=env, stdout=self._log,
            stderr=subprocess.STDOUT)
        self.conn = self._accept(timeout=300)
        self.conn.send(dataclasses.asdict(cfg))
        if not self.conn.poll(timeout):
            self.proc.kill()
            raise TimeoutError(f"rknn build took over {timeout:.0f}s; log: {log_path}")
        status, info = self._recv()
        self.info = info
        with open(log_path, errors="replace") as f:
            self._num_outputs, self._constants = constant_outputs(cfg, f.read())

    def _accept(self, timeout: float):
        """Wait for the worker to connect; fail fast if it dies first."""
        box: Dict[str, Any] = {}
        th = threading.Thread(target=lambda: box.update(conn=self._listener.accept()), daemon=True)
        th.start()
        t0 = time.monotonic()
        while th.is_alive():
            th.join(0.5)
            if th.is_alive() and (self.proc.poll() is not None or time.monotonic() - t0 > timeout):
                self.proc.kill()
                raise RuntimeError(f"rknn worker did not start; log: {self.log_path}")
        return box["conn"]

    def _recv(self):
        try:
            status, payload = self.conn.recv()
        except EOFError as e:
            raise RuntimeError(f"rknn worker exited (code {self.proc.wait()}); log: "
                               f"{self.log_path}") from e
        if status == "error":
            raise RuntimeError(f"rknn worker failed; log: {self.log_path}\n{payload}")
        return status, payload

    def infer(self, *xs: np.ndarray) -> List[np.ndarray]:
        """Run the built model on one input per graph input (each with batch 1)."""
        self.conn.send(("infer", list(xs)))
        outs = list(self._recv()[1])
        if len(outs) + len(self._constants) == self._num_outputs:  # rknn dropped constants
            for k in sorted(self._constants):
                outs.insert(k, self._constants[k].astype(np.float32))
        return outs

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.conn.send(("close", None))
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._listener.close()
        self._log.close()

    def op_report(self) -> Dict[str, Any]:
        with open(self.log_path, errors="replace") as f:
            return summarize_ops(parse_op_table(f.read()))


def build_rknn(cfg: BuildConfig, log_path: str, *, timeout: float = 3600.0) -> Dict[str, Any]:
    """Build (and export) without a runtime; returns ``{"info":..., "ops": summary}``."""
    w = RknnWorker(cfg, log_path, runtime=False, timeout=timeout)
    try:
        return {"info": w.info, "ops": w.op_report()}
    finally:
        w.close()



def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description="rknn worker (started by RknnWorker; not a user CLI)")
    p.add_argument("cmd", choices=["serve"])
    p.add_argument("address")
    p.add_argument("--no-runtime", action="store_true")
    a = p.parse_args(argv)
    return _serve(a.address, runtime=not a.no_runtime)


if __name__ == "__main__":
    sys.exit(_main())
