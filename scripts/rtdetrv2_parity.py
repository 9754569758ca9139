"""Full-size parity: our RT-DETRv2 on converted weights vs rtdetrv2_pytorch, all five sizes,
both sampling methods, 640x640, float32 CPU (the "measured by" table of docs/rtdetrv2.md).

    .venv/bin/python scripts/rtdetrv2_parity.py --ref-python /work/i12-ref-venv/bin/python \
        --ref-root REF --out docs/results/rtdetrv2_parity

For each size: ``scripts/rtdetrv2_reference.py`` (run by ``--ref-python``, a venv with
torch) builds the reference model with random weights (its init + noise 0.02), saves the
checkpoint and its outputs on one COCO image resized to 640x640; here the checkpoint goes
through ``ppdet_ext.convert.rtdetrv2_weights`` into the model of our config, which runs on
the same input with grid-sample and with discrete sampling. Reported per size and method:
max |delta| of the decoder's final logits ``[1, 300, 80]`` and boxes ``[1, 300, 4]``
(cxcywh normalized) with the queries paired by the encoder token they were selected from
(see :func:`compare`), and how many of the reference's top-300 detections are not in ours.
Writes ``OUT/parity.json`` and ``OUT/parity.md``.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import ppdet_ext  # noqa: F401  (before paddle)
import cv2
import numpy as np
import paddle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {'r18vd': 'rtdetrv2_r18vd_120e_coco', 'r34vd': 'rtdetrv2_r34vd_120e_coco',
           'r50vd_m': 'rtdetrv2_r50vd_m_7x_coco', 'r50vd': 'rtdetrv2_r50vd_6x_coco',
           'r101vd': 'rtdetrv2_r101vd_6x_coco'}
IMAGE = 'dataset/coco_mini/images/000000000139.jpg'


def top_pairs(logits, tokens, k=300):
    """The ``k`` best detections of ``[1, Q, C]`` logits as a set of (encoder token of the
    query, class): independent of the order the queries come in."""
    flat = logits[0].reshape(-1)
    idx = np.argsort(-flat, kind='stable')[:k]
    return {(int(tokens[0][i // logits.shape[2]]), int(i % logits.shape[2])) for i in idx}


def run_ours(model, image, method):
    """-> logits ``[1, Q, C]``, boxes ``[1, Q, 4]``, encoder token of each query ``[1, Q]``
    (the top-k of the encoder's class scores, as ``ExtRTDETRDecoder`` selects them)."""
    for layer in model.transformer.layers:
        layer.cross_attn.method = method
    seen = []
    hook = model.transformer.enc_score_head.register_forward_post_hook(
        lambda layer, inp, out: seen.append(out))
    with paddle.no_grad():
        boxes, logits = model.transformer(model.neck(model.backbone({'image': image})))
    hook.remove()
    tokens = paddle.topk(seen[0].max(-1), model.transformer.num_queries, axis=1)[1]
    return logits.numpy(), boxes.numpy(), tokens.numpy()


def compare(ours, ref):
    """Max |delta| of logits and boxes with the queries paired by their encoder token: near-
    tied encoder scores (random weights) can put the same queries in another order, which
    the decoder's self-attention does not care about. Also counts the queries whose order
    differs, the tokens only one side selected and the top-300 detections only the
    reference has."""
    (logits, boxes, tokens), (r_logits, r_boxes, r_tokens) = ours, ref
    pos = {int(t): i for i, t in enumerate(tokens[0])}
    pairs = [(pos[int(t)], j) for j, t in enumerate(r_tokens[0]) if int(t) in pos]
    mine, theirs = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {
        'max_abs_logits': float(np.abs(logits[0][mine] - r_logits[0][theirs]).max()),
        'max_abs_boxes': float(np.abs(boxes[0][mine] - r_boxes[0][theirs]).max()),
        'queries_reordered': int((mine != theirs).sum()),
        'tokens_not_selected_by_both': int(r_tokens.shape[1] - len(pairs)),
        'top300_not_in_ours': len(top_pairs(r_logits, r_tokens) - top_pairs(logits, tokens)),
        'max_abs_logits_unpaired': float(np.abs(logits - r_logits).max()),
    }


def compare_size(size, args, input_path, work):
    from ppdet_ext.convert import build_model
    from ppdet_ext.convert.rtdetrv2_weights import convert_rtdetrv2
    from ppdet_ext.registry import reset_global_config

    out = os.path.join(work, size)
    t0 = time.time()
    subprocess.run([args.ref_python, os.path.join(ROOT, 'scripts', 'rtdetrv2_reference.py'),
                    '--ref-root', args.ref_root, '--size', size, '--input', input_path,
                    '--out', out], check=True)
    t_ref = time.time() - t0
    reset_global_config()
    model, _ = build_model(os.path.join(ROOT, 'configs', 'rtdetrv2', CONFIGS[size] + '.yml'))
    state, report = convert_rtdetrv2(os.path.join(out, 'checkpoint.pth'), model)
    if not report.ok:
        raise SystemExit('\n'.join(report.lines()))
    model.set_state_dict(state)
    ref = np.load(os.path.join(out, 'outputs.npz'))
    img = np.load(input_path).astype('float32').transpose(2, 0, 1)[None] / 255.0
    rows = []
    for method in ('default', 'discrete'):
        ours = run_ours(model, paddle.to_tensor(img), method)
        r = tuple(ref[f'{method}_{k}'] for k in ('logits', 'boxes', 'tokens'))
        rows.append({
            'size': size, 'method': method, 'config': CONFIGS[size], **compare(ours, r),
            'logit_std_reference': float(r[0].std()),
            'discrete_vs_default_reference': float(np.abs(
                ref['discrete_logits'] - ref['default_logits']).max()),
            'tensors_mapped': report.num_mapped})
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))     # R101 checkpoint is ~300 MB
    print(f"{size}: {rows[0]['max_abs_logits']:.2e} / {rows[1]['max_abs_logits']:.2e} "
          f"(reference run {t_ref:.0f} s)", flush=True)
    return rows


def write_table(rows, out_dir, command):
    lines = ['| size | sampling | max abs diff logits | max abs diff boxes | '
             'top-300 detections not in ours | queries in another order |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['size']} | {r['method']} | {r['max_abs_logits']:.1e} | "
                     f"{r['max_abs_boxes']:.1e} | {r['top300_not_in_ours']} | "
                     f"{r['queries_reordered']} |")
    with open(os.path.join(out_dir, 'parity.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n\n```\n' + command + '\n```\n')
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ref-python', required=True, help='python of a venv with torch')
    p.add_argument('--ref-root', required=True, help='rtdetrv2_pytorch checkout')
    p.add_argument('--out', default='docs/results/rtdetrv2_parity')
    p.add_argument('--sizes', nargs='*', default=list(CONFIGS), choices=list(CONFIGS))
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='rtdetrv2_parity_') as work:
        im = cv2.imread(os.path.join(ROOT, IMAGE))[:, :, ::-1]
        input_path = os.path.join(work, 'input_640.npy')
        np.save(input_path, np.ascontiguousarray(
            cv2.resize(im, (640, 640), interpolation=cv2.INTER_LINEAR)))
        rows = []
        for size in args.sizes:
            rows += compare_size(size, args, input_path, work)
    command = ' '.join(['.venv/bin/python scripts/rtdetrv2_parity.py'] + sys.argv[1:])
    torch_version = subprocess.run(
        [args.ref_python, '-c', 'import torch; print(torch.__version__)'],
        capture_output=True, text=True, check=True).stdout.strip()
    env = {'paddle': paddle.__version__, 'torch': torch_version,
           'cpu': platform.processor() or platform.machine(),
           'image': IMAGE + ' resized to 640x640 (OpenCV INTER_LINEAR), /255',
           'reference': 'lyuwenyu/RT-DETR rtdetrv2_pytorch @ 068dfde',
           'weights': 'reference init + N(0, 0.02) noise, BN variances U[0.5, 1.5), seed 0'}
    with open(os.path.join(args.out, 'parity.json'), 'w') as f:
        json.dump({'command': command, 'environment': env, 'rows': rows}, f, indent=1)
    print('\n'.join(write_table(rows, args.out, command)))


if __name__ == '__main__':
    main()
