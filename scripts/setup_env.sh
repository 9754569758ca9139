#!/usr/bin/env bash
# Create (or reuse) the project venv in .venv with the pinned core stack.
# Idempotent: re-runs only when a requirements file or setup.py changed.
# Usage: bash scripts/setup_env.sh            (core + dev/test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-.venv}
stamp="$VENV/.setup-stamp"
want=$(cat requirements/*.txt setup.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $VENV with the pinned Paddle 2.6.2 stack (about 2 minutes, ~1.8 GB)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# (the sed drops this machine's noise about absent local package mirrors)
pip_() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 \
           | sed '/is ignored: it is neither a file nor a directory/d'; }
pip_ install "pip==24.3.1" "setuptools<81" wheel
pip_ install -c requirements/constraints.txt -r requirements/core.txt -r requirements/dev.txt
# paddleslim pins opencv-python==4.6.0.66, which clashes with paddledet's <=4.6.0 pin
pip_ install --no-deps -r requirements/nodeps.txt
pip_ install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import ppdet_ext, ppdet, paddleslim, paddle2onnx, onnxruntime" 2>/dev/null \
  || { echo "[setup] import check failed" >&2; "$VENV/bin/python" -c "import ppdet_ext, ppdet, paddleslim, paddle2onnx, onnxruntime"; exit 1; }
echo "$want" > "$stamp"
echo "[setup] ok: $VENV" >&2
