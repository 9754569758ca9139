#!/usr/bin/env bash
# Create (or reuse) .venv-rknn: rknn-toolkit2 2.5.0 (RKNN converter + PC simulator) in a venv
# of its own, because its pins clash with the core stack (numpy<=1.26.4 vs paddledet's
# numpy<1.24 is fine, but protobuf<=4.25.4, onnx<=1.18 and torch<=2.4.0 are not ours to impose).
#
# Idempotent: exits at once when the venv holds exactly these pins (stamp file).
# Usage: bash scripts/setup_rknn_env.sh        (~5.6 GB on disk, a few minutes)
#
# torch: rknn-toolkit2's API imports torch (torch>=1.10.1,<=2.4.0). Python 3.11 needs
# torch>=2.0, and every torch 2.x wheel on PyPI for Linux x86_64 is the CUDA build that pulls
# ~2.5 GB of nvidia-* wheels; the CPU-only "+cpu" builds live only on the PyTorch index,
# which this project cannot reach (only PyPI), and the local wheelhouse holds torch 2.13 CPU,
# outside the pin. So we take torch 2.4.0 from PyPI as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${RKNN_VENV:-.venv-rknn}

PINS=(
  "rknn-toolkit2==2.5.0"
  "torch==2.4.0"
  "numpy==1.26.4"
  "protobuf==4.25.4"
  "onnx==1.16.2"
  "onnxruntime==1.19.2"
  "opencv-python==4.10.0.84"
  "scipy==1.13.1"
  "psutil==6.1.1"
  "ruamel.yaml==0.18.10"
  "tqdm==4.67.1"
  "fast-histogram==0.14"
  "PyYAML==6.0.2"
  "setuptools==75.8.2"   # rknn imports pkg_resources, removed in setuptools 81
)
stamp="$VENV/.setup-stamp"
want=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
avail_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$avail_gb" -lt 7 ]; then
  echo "[setup-rknn] need ~6 GB free here, have ${avail_gb} GB" >&2
  exit 1
fi
echo "[setup-rknn] creating $VENV with rknn-toolkit2 2.5.0 (a few minutes, ~5.6 GB)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip_ install "pip==24.3.1" "setuptools==75.8.2" wheel
pip_ install "${PINS[@]}"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
from rknn.api import RKNN  # noqa: F401  (imports torch, pkg_resources, onnx)
assert md.version("rknn-toolkit2") == "2.5.0", md.version("rknn-toolkit2")
print("[setup-rknn] rknn-toolkit2", md.version("rknn-toolkit2"), "torch", md.version("torch"))
EOF
echo "$want" > "$stamp"
echo "[setup-rknn] ok: $VENV" >&2
