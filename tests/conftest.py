"""Shared test fixtures. ``import ppdet_ext`` comes first (zlib-before-paddle fix)."""
import os
import sys

import ppdet_ext  # noqa: F401  (must precede paddle)
import pytest

from ppdet_ext.registry import reset_global_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
COCO_MINI = os.path.join(REPO, "dataset", "coco_mini")
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _clean_ppdet_config():
    """ppdet keeps config in a process-global dict: reset it around every test."""
    reset_global_config()
    yield
    reset_global_config()


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (only on dev machines)")
    return SHARED_DATA


@pytest.fixture
def repo_cwd(monkeypatch):
    """Run with the repo root as cwd (configs use repo-relative dataset paths)."""
    monkeypatch.chdir(REPO)
    return REPO
