"""The RT-DETRv2 reference test data (tests/data/rtdetrv2/README.md) as the tests use it."""
import json
import os

import numpy as np
import paddle

from ppdet_ext.convert.rtdetrv2_weights import read_rtdetrv2_checkpoint
from ppdet_ext.weights import load_state
from rtdetrv2_synthetic import synthetic_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'tests', 'data', 'rtdetrv2')
CONFIG = os.path.join(DATA, 'rtdetrv2_tiny_ref.yml')
LAYOUTS = {'rtdetrv2_pytorch': ('checkpoint.pth', 'fused_convs.pth', 'torch'),
           'paddledet_develop': ('checkpoint.pdparams', 'fused_convs.pdparams', 'paddle')}


def reference_state(layout, fused=False):
    """The reference's full state ``{name: ndarray}``: stored checkpoint + rebuilt backbone
    (+ the fused convs in place of the RepVGG branches, as a checkpoint saved after
    ``convert_to_deploy``)."""
    ckpt, fused_file, kind = LAYOUTS[layout]
    folder = os.path.join(DATA, layout)
    state, found, _ = read_rtdetrv2_checkpoint(os.path.join(folder, ckpt))
    assert found == layout
    with open(os.path.join(folder, 'backbone_shapes.json')) as f:
        state.update(synthetic_backbone(json.load(f), kind))
    if fused:
        convs = load_state(os.path.join(folder, fused_file))
        for name in convs:
            block = name.rsplit('.conv.', 1)[0]
            for branch in [n for n in state if n.startswith((f'{block}.conv1.',
                                                             f'{block}.conv2.'))]:
                del state[branch]
        state.update(convs)
    return state


def reference_outputs(layout):
    return np.load(os.path.join(DATA, layout, 'outputs.npz'))


def reference_image():
    """``[1, 3, 192, 192]`` float32 in [0, 1], as both references were fed."""
    img = np.load(os.path.join(DATA, 'input_192.npy'))
    return paddle.to_tensor(img.astype('float32').transpose(2, 0, 1)[None] / 255.0)
