"""Write the torch.save test files of tests/data/weights/ (run once, with torch installed).

    python scripts/make_weights_testdata.py tests/data/weights

Needs torch (not a dependency of this project: run it from a separate venv). Writes
``torch_state.pth`` (a small module state_dict), ``torch_checkpoint.pth`` (a training
checkpoint in rtdetrv2_pytorch's layout: model, ema {module, updates}, optimizer,
MultiStepLR state with its Counter, date, last_epoch; dtypes float32/float16/bfloat16/
int64/bool, a transposed view, two tensors sharing one storage, a 0-d tensor) and
``torch_expected.npz``: every tensor as numpy, flattened to ``path/to/key`` names, which
``tests/test_weights_loader.py`` compares ``ppdet_ext.weights.load_state`` against.
"""
import os
import sys

import numpy as np
import torch


def _flatten(obj, prefix, out):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}/{i}", out)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach()
        out[prefix] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def main(out_dir):
    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = {k: v.clone() for k, v in model.state_dict().items()}   # before the step below
    torch.save(state, os.path.join(out_dir, 'torch_state.pth'))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    model(torch.rand(2, 3, 3, 3)).sum().backward()
    opt.step()
    sched.step()
    base = torch.arange(12, dtype=torch.float32)
    extras = {
        'half': torch.linspace(-2, 2, 5).half(),
        'bf16': torch.tensor([1.5, -0.25, 3.0]).bfloat16(),
        'long': torch.tensor([[1, -2], [3, 4]]),
        'mask': torch.tensor([True, False, True]),
        'transposed': base.reshape(3, 4).t(),          # non-contiguous view
        'shared_a': base[2:6], 'shared_b': base[4:10],  # one storage, two offsets
        'scalar': torch.tensor(7.0),
    }
    ckpt = {'date': '2024-01-01T00:00:00', 'last_epoch': 3, 'model': state,
            'ema': {'module': state, 'updates': 42}, 'optimizer': opt.state_dict(),
            'lr_scheduler': sched.state_dict(), 'extras': extras}
    torch.save(ckpt, os.path.join(out_dir, 'torch_checkpoint.pth'))
    arrays = {}
    _flatten({'state': state, 'checkpoint': ckpt}, '', arrays)
    np.savez(os.path.join(out_dir, 'torch_expected.npz'), **arrays)
    print(f"torch {torch.__version__}: wrote {len(arrays)} arrays to {out_dir}")


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'tests/data/weights')
