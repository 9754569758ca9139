"""Every tool's --help runs and shows runnable examples."""
import os
import subprocess

import pytest

from conftest import PYTHON, REPO

TOOLS = sorted(f for f in os.listdir(os.path.join(REPO, "tools")) if f.endswith(".py"))


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool):
    r = subprocess.run([PYTHON, os.path.join("tools", tool), "--help"], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
    assert "python tools/" in r.stdout, f"{tool} --help shows no example"
