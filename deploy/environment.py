"""The machine a benchmark ran on: CPU, load, library versions, times (for result files)."""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Dict, Optional


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# instruction-set extensions that decide CPU inference speed (INT8 needs VNNI/AMX to gain)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo(key: str) -> str:
    """The first ``key : value`` of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), "")
    except OSError:
        return ""


def _versions() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for mod in ("paddle", "onnxruntime", "numpy", "cv2"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001  (a missing or broken engine is a record, not an error)
            out[mod] = None
    try:
        import paddle

        out["paddle_cuda"] = bool(paddle.device.is_compiled_with_cuda())
    except Exception:  # noqa: BLE001
        pass
    return out


def environment(threads: Optional[Any] = None) -> Dict[str, Any]:
    """Machine and library versions for a benchmark record; call it before the work starts
    (``loadavg_start`` is then the load of everything else), and :func:`finish` after it."""
    env: Dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "time_utc": _utc(),
    }
    cpu = _cpuinfo("model name")
    if cpu:
        env["cpu_model"] = cpu
        flags = set(_cpuinfo("flags").split())
        env["cpu_isa"] = [f for f in ISA_FLAGS if f in flags]
    try:
        env["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    env.update(_versions())
    env["threads_requested"] = threads
    return env


def finish(env: Dict[str, Any]) -> Dict[str, Any]:
    """Add the end time and load average to ``env`` (in place); returns it."""
    try:
        env["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    env["time_utc_end"] = _utc()
    return env
