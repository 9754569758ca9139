"""Published RT-DETRv2 checkpoints (rtdetrv2_pytorch ``.pth``, PaddleDetection develop
``.pdparams``) -> weights of our ``ExtRTDETR`` built from the matching config.

Files are read with :func:`ppdet_ext.weights.load_state` (no code from the file runs, no
torch needed). Names go through :mod:`.rtdetrv2_names`; then, per tensor, as needed:

* torch ``nn.Linear`` weights transposed ``[out, in] -> [in, out]``;
* packed attention projections split into our ``q_proj``/``k_proj``/``v_proj``
  (torch ``[3C, C]`` row blocks, then transposed; ppdet ``[C, 3C]`` column blocks);
* BatchNorm statistics renamed (``running_mean``/``running_var`` -> ``_mean``/``_variance``;
  ``num_batches_tracked`` dropped);
* a fused RepVGG conv (a checkpoint saved after ``convert_to_deploy``) written back as the
  3x3 branch with an identity BatchNorm plus a zero 1x1 branch (same function, trainable);
* PaddleDetection's ``denoising_class_embed`` (``num_classes`` rows) padded with the zero
  padding row ours has;
* class rows: a head with one row per COCO category id (>= 91 rows) is reduced to the 80
  contiguous labels in ppdet's order (sorted category ids: ``_coco17_category``), which is
  also the order of 80-class rtdetrv2_pytorch / PaddleDetection checkpoints (theirs come
  from the same sorted id list), so 80-class heads map one to one;
* derived buffers (anchors, ``valid_mask``, ``num_points_scale``) dropped; the sampling-point
  scales are checked against the config first.
"""
import collections
import math
import re

import numpy as np

from ..weights import WeightsFormatError, load_state
from .rtdetrv2_names import LAYOUTS, translate
from .weight_report import ConversionReport

__all__ = ['read_rtdetrv2_checkpoint', 'convert_rtdetrv2', 'coco_label_rows', 'STEPS']

STEPS = {
    'transpose': 'Linear weights transposed, torch [out, in] -> paddle [in, out]',
    'qkv': 'packed attention in_proj split into q_proj / k_proj / v_proj',
    'bn': 'BatchNorm statistics renamed running_mean/var -> _mean/_variance',
    'repvgg_fused': 'fused RepVGG conv -> 3x3 branch with identity BN + zero 1x1 branch',
    'dn_pad': 'denoising class embedding: zero padding row appended (num_classes + 1 rows)',
    'label_map': 'class rows: COCO category ids -> 80 contiguous labels',
}
_CLASS_TENSORS = re.compile(r'transformer\.(enc_score_head|dec_score_head\.\d+)\.(weight|bias)$')
_DN_EMBED = 'transformer.denoising_class_embed.weight'


def coco_label_rows():
    """Row index (COCO category id) of each of ppdet's 80 contiguous COCO labels."""
    from ppdet.data.source.category import _coco17_category
    clsid2catid, _ = _coco17_category()
    return [clsid2catid[i] for i in range(len(clsid2catid))]


def _flat_arrays(obj):
    return isinstance(obj, dict) and obj and all(
        isinstance(v, np.ndarray) or k == 'StructuredToParameterName@@' for k, v in obj.items())


def read_rtdetrv2_checkpoint(path, entry='auto'):
    """Read a checkpoint and tell its layout.

    Args:
        path (str): ``.pth`` (rtdetrv2_pytorch: a state dict or a training checkpoint with
            ``model`` / ``ema {module}`` entries) or ``.pdparams`` (PaddleDetection).
        entry (str): ``auto`` (``ema`` if present, else ``model``), ``ema`` or ``model``.

    Returns:
        tuple: ``(state {name: ndarray}, layout, entry used)``.
    """
    obj = load_state(path)
    used = ''
    if isinstance(obj, dict) and ('model' in obj or 'ema' in obj) and not _flat_arrays(obj):
        want = ('ema' if 'ema' in obj else 'model') if entry == 'auto' else entry
        if want not in obj:
            raise WeightsFormatError(f"{path}: no '{want}' entry (has {sorted(obj)})")
        obj = obj[want]
        if want == 'ema' and isinstance(obj, dict) and 'module' in obj:
            obj = obj['module']
        used = want
    if not _flat_arrays(obj):
        raise WeightsFormatError(f"{path}: not a state dict of arrays (top-level keys: "
                                 f"{sorted(obj)[:8] if isinstance(obj, dict) else type(obj)})")
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in obj.items()
             if k != 'StructuredToParameterName@@'}
    names = set(state)
    if any(n.startswith('decoder.decoder.layers.') for n in names):
        layout = 'rtdetrv2_pytorch'
    elif any(n.startswith('transformer.decoder.layers.') for n in names):
        layout = 'paddledet_develop'
    elif any(n.startswith('transformer.layers.') for n in names):
        raise WeightsFormatError(f"{path}: already in ppdet_ext's layout; load it directly "
                                 "(-o weights=... / pretrain_weights=...)")
    else:
        raise WeightsFormatError(f"{path}: not an RT-DETRv2 checkpoint of a known layout "
                                 f"({', '.join(LAYOUTS)})")
    return state, layout, used


def _stage_counts(state):
    counts = collections.Counter()
    for n in state:
        m = re.match(r'backbone\.res_layers\.(\d+)\.blocks\.(\d+)\.', n)
        if m:
            s, i = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts[s], i + 1)
    return counts


def _apply(kind, arr, layout):
    """One transform of :mod:`.rtdetrv2_names` on one array."""
    if kind in ('copy', 'bn', 'repvgg_fused'):
        return arr
    if kind == 'transpose':
        return arr.T
    if kind == 'dn_pad':
        return np.concatenate([arr, np.zeros((1, arr.shape[1]), arr.dtype)], 0)
    i = 'qkv'.index(kind)
    if layout == 'rtdetrv2_pytorch':          # [3C, C] rows / [3C]
        part = arr[i * arr.shape[0] // 3:(i + 1) * arr.shape[0] // 3]
        return part.T if arr.ndim == 2 else part
    if arr.ndim == 2:                         # ppdet [C, 3C] columns
        c = arr.shape[1] // 3
        return arr[:, i * c:(i + 1) * c]
    c = arr.shape[0] // 3
    return arr[i * c:(i + 1) * c]


def _unfuse_repvgg(out, fused, eps):
    """``{block_prefix: {'weight', 'bias'}}`` -> conv1 (3x3, identity BN) + zero conv2."""
    gain = np.float32(math.sqrt(1.0 + eps))
    for prefix, t in fused.items():
        w = t.get('weight')
        c = w.shape[0] if w is not None else t['bias'].shape[0]
        ones, zeros = np.ones(c, 'float32'), np.zeros(c, 'float32')
        if w is not None:
            out[f'{prefix}.conv1.conv2d.weight'] = w
            out[f'{prefix}.conv2.conv2d.weight'] = np.zeros((c, w.shape[1], 1, 1), w.dtype)
        for branch, beta in (('conv1', t.get('bias', zeros)), ('conv2', zeros)):
            out[f'{prefix}.{branch}.bn.weight'] = ones * gain   # (x-0)/sqrt(1+eps)*gain = x
            out[f'{prefix}.{branch}.bn.bias'] = beta
            out[f'{prefix}.{branch}.bn._mean'] = zeros
            out[f'{prefix}.{branch}.bn._variance'] = ones


def _map_classes(out, num_classes, report):
    src = out.get('transformer.enc_score_head.bias')
    if src is None or src.shape[0] == num_classes:
        return
    if not (num_classes == 80 and src.shape[0] >= 91):
        report.notes.append(f"checkpoint has {src.shape[0]} classes, the config "
                            f"{num_classes}: convert with the matching (COCO) config, then "
                            "fine-tune with -o pretrain_weights=... (class heads re-initialised)")
        return
    rows = coco_label_rows()
    for name in list(out):
        if _CLASS_TENSORS.match(name):
            arr = out[name]
            out[name] = arr[:, rows] if arr.ndim == 2 else arr[rows]
            report.applied['label_map'] += 1
    dn = out.get(_DN_EMBED)
    if dn is not None and dn.shape[0] > num_classes + 1:
        out[_DN_EMBED] = np.concatenate([dn[rows], np.zeros((1, dn.shape[1]), dn.dtype)], 0)
        report.applied['label_map'] += 1


def _check_points_scale(model, src_name, arr, report):
    m = re.search(r'layers\.(\d+)\.cross_attn', src_name)
    layers = model.transformer.layers
    if not m or int(m.group(1)) >= len(layers):
        return
    ours = layers[int(m.group(1))].cross_attn.points_scale.numpy()
    if ours.shape != arr.shape or not np.allclose(ours, arr):
        report.mismatched.append((src_name, 'num_points of the config', tuple(arr.shape),
                                  tuple(ours.shape)))
        report.notes.append(f"{src_name}: sampling points per level differ from the config "
                            f"(checkpoint 1/n = {np.unique(arr).round(4).tolist()})")


def convert_rtdetrv2(source, model, *, entry='auto'):
    """Map a published RT-DETRv2 checkpoint onto ``model``'s parameters.

    Args:
        source (str | tuple): checkpoint path, or ``(state, layout)`` already read.
        model (ExtRTDETR): built from the matching config (its state names and shapes are
            the target; it is not modified).
        entry (str): for training checkpoints: ``auto``, ``ema`` or ``model``.

    Returns:
        tuple: ``(state {our name: ndarray}, ConversionReport)``; load the state only when
        ``report.ok``.
    """
    if isinstance(source, str):
        state, layout, used = read_rtdetrv2_checkpoint(source, entry)
        report = ConversionReport(source, layout, used)
    else:
        state, layout = source
        report = ConversionReport('<state>', layout)
    report.steps = dict(STEPS)
    if layout != 'rtdetrv2_pytorch':
        for k in ('transpose', 'bn'):
            report.steps.pop(k)
    counts = _stage_counts(state)
    out, fused = {}, collections.defaultdict(dict)
    for name, arr in state.items():
        targets = translate(name, layout, counts)
        if targets is None:
            report.unmapped.append((name, tuple(arr.shape)))
            continue
        for dst, kind in targets:
            if kind.startswith('drop:'):
                report.dropped.append((name, kind[5:]))
                if name.endswith('num_points_scale'):
                    _check_points_scale(model, name, arr, report)
                continue
            report.applied['qkv' if kind in 'qkv' else kind] += 1
            if kind == 'repvgg_fused':
                prefix, _, what = dst.rpartition('.fused.')
                fused[prefix][what] = arr
                continue
            out[dst] = np.ascontiguousarray(_apply(kind, arr, layout))
    for prefix in [p for p in fused if f'{p}.conv1.conv2d.weight' in out]:
        del fused[prefix]      # saved with both branches next to the fused conv: keep those
        report.applied['repvgg_fused'] -= 2
        report.dropped.append((f'{prefix}.conv', 'fused RepVGG conv saved next to its branches'))
    bn_eps = {n: l._epsilon for n, l in model.named_sublayers() if hasattr(l, '_epsilon')}
    _unfuse_repvgg(out, fused, bn_eps.get(next((f'{p}.conv1.bn' for p in fused), ''), 1e-5))
    _map_classes(out, model.transformer.num_classes, report)

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, shape in expected.items():
        if name not in out:
            report.missing.append((name, shape))
        elif tuple(out[name].shape) != shape:
            report.mismatched.append((name, name, tuple(out[name].shape), shape))
    for name in sorted(set(out) - set(expected)):
        report.unmapped.append((name, tuple(out[name].shape)))
        del out[name]
    report.num_mapped = len(set(out) & set(expected))
    return out, report


def convert_rtdetrv2_file(src, config, out, *, entry='auto', overrides=None):
    """Convert ``src`` for the model of ``config`` and, when everything maps, save it.

    Args:
        src (str): checkpoint (``.pth`` / ``.pdparams``).
        config (str): our config of the matching model (``configs/rtdetrv2/...``).
        out (str): output path; ``.pdparams`` is appended when missing.
        entry (str): ``auto`` | ``ema`` | ``model`` (training checkpoints).
        overrides (list[str]): ``key=value`` config overrides.

    Returns:
        tuple: ``(ConversionReport, saved path or None)``; nothing is written unless
        ``report.ok``.
    """
    from .picodet_onnx import build_model, save_weights

    model, _ = build_model(config, overrides)
    state, report = convert_rtdetrv2(src, model, entry=entry)
    if not report.ok:
        return report, None
    model.set_state_dict(state)
    return report, save_weights(model, out)
