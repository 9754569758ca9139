"""Write the parameter names and shapes of ppdet 2.6's published GFL models.

    .venv/bin/python scripts/gfl_ppdet26_manifest.py --configs CFG \
        --out tests/data/gfl/ppdet26_gfl_manifest.json

``CFG`` is the ``configs/`` folder of PaddlePaddle/PaddleDetection at branch release/2.6
(commit 7fde274 was used; nothing of it is copied here). Each of ``gfl_r50_fpn_1x_coco``,
``gfl_r18vd_1x_coco`` and ``gfl_r34vd_1x_coco`` is loaded with ppdet's own
``load_config`` and built with ppdet 2.6.0's own modules (the PyPI release of that
branch); its ``state_dict()`` names and shapes are what ``paddle.save`` writes into a
``model_final.pdparams`` trained from that config, which is how the published weights
were made. The published files themselves cannot be downloaded here.
"""
import argparse
import json
import os
import re

import ppdet_ext  # noqa: F401  (zlib before paddle; only for reset_global_config below)
import paddle
from ppdet.core.workspace import create, load_config

from ppdet_ext.registry import reset_global_config

MODELS = ('gfl_r50_fpn_1x_coco', 'gfl_r18vd_1x_coco', 'gfl_r34vd_1x_coco')


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--configs', required=True, help='configs/ of PaddleDetection release/2.6')
    p.add_argument('--out', required=True)
    args = p.parse_args()
    manifest = {}
    for name in MODELS:
        reset_global_config()            # ppdet merges every config into one global dict
        cfg = load_config(os.path.join(args.configs, 'gfl', f'{name}.yml'))
        model = create(cfg.architecture)
        manifest[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
        print(f"{name}: {len(manifest[name])} tensors")
    import ppdet
    doc = {'source': 'PaddlePaddle/PaddleDetection release/2.6 configs/gfl, built with '
                     f'ppdet {getattr(ppdet, "__version__", "2.6.0")} (paddledet on PyPI), '
                     f'paddle {paddle.__version__}; state_dict names and shapes',
           'command': '.venv/bin/python scripts/gfl_ppdet26_manifest.py --configs CFG '
                      f'--out {args.out}',
           'models': manifest}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:     # one tensor per line
        text = json.dumps(doc, indent=1)
        f.write(re.sub(r'\[\s+([\d,\s]+?)\s+\]',
                       lambda m: '[' + ','.join(m.group(1).split()).replace(',,', ',') + ']',
                       text) + '\n')


if __name__ == '__main__':
    main()
