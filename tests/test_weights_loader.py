"""ppdet_ext.weights.load_state: real paddle.save / torch.save files round-trip; pickles that
would run code are refused before anything runs."""
import io
import os
import pickle
import zipfile

import numpy as np
import paddle
import pytest

from ppdet_ext.weights import UnsafeWeightsError, WeightsFormatError, load_state
from rtdetr_helpers import build_tiny_model, make_batch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'weights')


class _RunsCode:
    """Unpickling this calls ``os.system`` (the classic weights-file attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def paddle_states(tmp_path_factory):
    """A real model state and optimizer state (AdamW + warmup/piecewise LR) after one
    training step, written by paddle.save with its default protocol and with protocol 2."""
    out = tmp_path_factory.mktemp('paddle_states')
    model = build_tiny_model()
    sched = paddle.optimizer.lr.LinearWarmup(
        paddle.optimizer.lr.PiecewiseDecay([10], [1e-4, 1e-5]), 5, 1e-7, 1e-4)
    opt = paddle.optimizer.AdamW(sched, parameters=model.parameters(), weight_decay=1e-4)
    model.train()
    model(make_batch(64, 64))['loss'].backward()
    opt.step()
    sched.step()
    opt_state = opt.state_dict()
    opt_state['last_epoch'] = 3
    paths = {}
    for proto in (4, 2):
        paths[('model', proto)] = str(out / f'model_p{proto}.pdparams')
        paths[('opt', proto)] = str(out / f'model_p{proto}.pdopt')
        paddle.save(model.state_dict(), paths[('model', proto)], protocol=proto)
        paddle.save(opt_state, paths[('opt', proto)], protocol=proto)
    return paths


@pytest.mark.parametrize('proto', [4, 2])
def test_paddle_model_state_round_trips(paddle_states, proto):
    path = paddle_states[('model', proto)]
    got, want = load_state(path), paddle.load(path)
    arrays = {k for k, v in want.items() if isinstance(v, paddle.Tensor)}
    assert arrays and arrays <= set(got)
    for k in arrays:
        assert isinstance(got[k], np.ndarray)
        np.testing.assert_array_equal(got[k], want[k].numpy())
    # paddle.load drops paddle.save's name table; load_state keeps what the file holds
    names = got['StructuredToParameterName@@']
    assert set(names) == arrays and all(isinstance(v, str) for v in names.values())


@pytest.mark.parametrize('proto', [4, 2])
def test_paddle_optimizer_state_round_trips(paddle_states, proto):
    path = paddle_states[('opt', proto)]
    got, want = load_state(path), paddle.load(path)
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, paddle.Tensor):
            np.testing.assert_array_equal(got[k], v.numpy())
        else:
            assert got[k] == v, k
    assert got['LR_Scheduler']['LinearWarmup_LR'] == want['LR_Scheduler']['LinearWarmup_LR']
    assert got['last_epoch'] == 3


def test_paddle_static_tensor_and_numpy_scalars(tmp_path):
    """Nested static-graph tensors are saved as ``eval('data', {...})``: answered without
    eval; numpy scalars become Python numbers."""
    paddle.enable_static()
    try:
        prog, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(prog, startup):
            paddle.static.nn.fc(paddle.static.data('x', [None, 4]), 3)
        paddle.static.Executor().run(startup)
        weight = prog.state_dict()['fc_0.w_0']
        path = str(tmp_path / 'static.pdparams')
        paddle.save({'nested': [weight], 'lr': np.float64(0.5), 'n': np.int64(3)}, path)
        want = np.array(weight)
    finally:
        paddle.disable_static()
    got = load_state(path)
    np.testing.assert_array_equal(got['nested'][0], want)
    assert got['lr'] == 0.5 and type(got['lr']) is float
    assert got['n'] == 3 and type(got['n']) is int


def test_torch_files_round_trip_without_torch():
    expected = np.load(os.path.join(DATA, 'torch_expected.npz'), allow_pickle=False)
    state = load_state(os.path.join(DATA, 'torch_state.pth'))
    ckpt = load_state(os.path.join(DATA, 'torch_checkpoint.pth'))

    def lookup(obj, path):
        for part in path.split('/')[1:]:
            obj = obj[int(part)] if isinstance(obj, (list, tuple)) else obj[
                int(part) if isinstance(obj, dict) and part.isdigit() and int(part) in obj
                else part]
        return obj

    roots = {'state': state, 'checkpoint': ckpt}
    for name in expected.files:
        got = lookup(roots[name.split('/')[0]], name)
        assert isinstance(got, np.ndarray) and got.flags.c_contiguous, name
        assert got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)
    assert len(expected.files) > 40
    assert ckpt['ema']['updates'] == 42 and ckpt['date'].startswith('2024')
    assert ckpt['lr_scheduler']['milestones'] == {2: 1, 4: 1}   # a Counter, read as dict
    np.testing.assert_array_equal(ckpt['extras']['transposed'],
                                  np.arange(12, dtype='float32').reshape(3, 4).T)
    assert ckpt['extras']['scalar'].shape == ()


def _assert_refused(path, marker, global_name):
    with pytest.raises(UnsafeWeightsError) as err:
        load_state(path)
    msg = str(err.value)
    assert '\n' not in msg and str(path) in msg and global_name in msg
    assert not os.path.exists(marker), "the pickle's code ran"


@pytest.mark.parametrize('proto', [2, 4])
def test_pickle_that_runs_code_is_refused(tmp_path, proto):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pdparams'
    payload = {'conv.weight': np.zeros(3, 'float32'), 'x': _RunsCode(marker)}
    path.write_bytes(pickle.dumps(payload, protocol=proto))
    # the same bytes do run code through the standard unpickler: the test is not vacuous
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    _assert_refused(path, marker, 'system')


def test_torch_zip_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps({'w': _RunsCode(marker)}, protocol=2))
        z.writestr('archive/version', '3\n')
    _assert_refused(path, marker, 'system')


def test_paddle_eval_only_in_its_one_form(tmp_path):
    """``builtins.eval`` is admitted only as paddle.save's ``eval('data', {'data': a})``."""
    marker = tmp_path / 'pwned'

    class _Eval:
        def __reduce__(self):
            return (eval, (f"__import__('os').system('touch {marker}')",))

    path = tmp_path / 'eval.pdparams'
    path.write_bytes(pickle.dumps({'x': _Eval()}, protocol=4))
    _assert_refused(path, marker, 'eval')


def test_bad_files_fail_with_one_line(tmp_path):
    cases = {'missing.pdparams': None, 'empty.pdparams': b'',
             'text.pdparams': b'not a pickle at all',
             'truncated.pdparams': pickle.dumps({'a': np.ones(100)}, protocol=4)[:60]}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(WeightsFormatError) as err:
            load_state(path)
        assert '\n' not in str(err.value) and name in str(err.value)
    obj = tmp_path / 'objects.pdparams'
    obj.write_bytes(pickle.dumps({'a': np.array([{}, 1], dtype=object)}, protocol=4))
    with pytest.raises(UnsafeWeightsError, match='objects'):
        load_state(obj)
    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    assert buf.getvalue()[:1] != b'\x80'
