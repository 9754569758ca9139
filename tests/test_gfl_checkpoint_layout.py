"""ppdet 2.6's published GFL checkpoints load into our GFL configs with nothing left over.

The manifest (tests/data/gfl/README.md) lists the parameter names and shapes of the models
PaddleDetection release/2.6's own GFL configs build with ppdet 2.6.0's modules -- the
layout of its published ``gfl_*_coco.pdparams``. It proves the layouts agree; the
published files themselves (not downloadable here) were not loaded.
"""
import json
import os

import numpy as np
import pytest

from conftest import REPO
from ppdet_ext.engine.config import load_config
from ppdet_ext.export import build_model

MANIFEST = os.path.join(REPO, 'tests', 'data', 'gfl', 'ppdet26_gfl_manifest.json')
with open(MANIFEST) as _f:
    MODELS = json.load(_f)['models']


@pytest.mark.parametrize('name', sorted(MODELS))
def test_published_layout_loads_without_leftovers(name, repo_cwd):
    published = {k: tuple(v) for k, v in MODELS[name].items()}
    cfg, _ = load_config(os.path.join(REPO, 'configs', 'gfl', f'{name}.yml'))
    model = build_model(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(published) - set(ours)) == []      # unmapped checkpoint tensors
    assert sorted(set(ours) - set(published)) == []      # tensors the checkpoint lacks
    assert {k: (v, ours[k]) for k, v in published.items() if ours[k] != v} == {}
    # and paddle's own loader agrees: every tensor found, nothing unexpected
    missing, unexpected = model.set_state_dict(
        {k: np.zeros(v, 'float32') for k, v in published.items()})
    assert missing == [] and unexpected == []
