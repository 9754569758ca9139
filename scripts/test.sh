#!/usr/bin/env bash
# Set up the pinned venv (if needed) and run the test suite on CPU.
#   bash scripts/test.sh                 default suite (slow tests excluded)
#   RUN_SLOW=1 bash scripts/test.sh      everything, including @pytest.mark.slow
#   bash scripts/test.sh -k sampler      extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
marker=(-m "not slow")
[ "${RUN_SLOW:-0}" = "1" ] && marker=(-m "")
exec .venv/bin/python -m pytest "${marker[@]}" -q -p no:cacheprovider --timeout=900 "$@"
