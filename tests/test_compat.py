"""Each compatibility fix has a test that shows the failure it fixes."""
import subprocess

from conftest import PYTHON


def _run(code):
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300)


def test_paddle_before_ppdet_crashes_without_the_fix():
    # the failure ppdet_ext/compat/zlib_first.py exists for (SIGSEGV on Paddle 2.6.2);
    # if this ever passes, the fix is no longer needed and can be dropped
    r = _run("import paddle; import ppdet")
    assert r.returncode != 0, "paddle-then-ppdet imported fine: zlib_first fix is obsolete"


def test_importing_ppdet_ext_first_works_and_then_paddle_runs():
    r = _run("import ppdet_ext, paddle; print(float(paddle.to_tensor([2.0]).sum()))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("2.0")
