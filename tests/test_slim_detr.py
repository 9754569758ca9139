"""RT-DETRv2 slimming on the tiny config with seeded random weights, CPU."""
import numpy as np
import paddle
import pytest

CFG = "configs/rtdetrv2/rtdetrv2_tiny_coco_mini.yml"


@pytest.fixture
def full_sd(repo_cwd):
    from ppdet_ext.slim.detr_prune import PruneSpec, build

    paddle.seed(0)
    model, _, _ = build(CFG, PruneSpec())
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _raw(model, x):
    with paddle.no_grad():
        return [o.numpy() for o in model.export_raw(paddle.to_tensor(x))]


def test_dropping_decoder_layers_equals_eval_idx_truncation(full_sd):
    """Keeping the first k layers with transferred weights == running the full model to
    eval_idx k-1: the weight transfer is exact for unchanged shapes."""
    from ppdet_ext.slim.detr_prune import PruneSpec, build

    x = np.random.RandomState(0).rand(1, 3, 256, 256).astype("float32")
    trunc, _, _ = build(CFG, PruneSpec(eval_idx=0), full_sd=full_sd)
    pruned, _, info = build(CFG, PruneSpec(dec_layers=1), full_sd=full_sd)
    assert info["sliced"] == 0
    trunc.convert_to_deploy()
    pruned.convert_to_deploy()
    for a, b in zip(_raw(trunc, x), _raw(pruned, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ffn_pruning_keeps_largest_channels(full_sd):
    from ppdet_ext.slim.detr_prune import PruneSpec, build, ffn_keep_indices, params_of

    small, _, info = build(CFG, PruneSpec(dec_ffn=64, enc_ffn=64), full_sd=full_sd)
    assert info["sliced"] > 0
    sd = {k: v.numpy() for k, v in small.state_dict().items()}
    prefix = "transformer.layers.0"
    key = f"{prefix}.linear1.weight"
    assert sd[key].shape[1] == 64
    idx = ffn_keep_indices(full_sd, prefix, 64)
    np.testing.assert_array_equal(sd[key], full_sd[key][:, idx])
    np.testing.assert_array_equal(sd[f"{prefix}.linear2.weight"], full_sd[f"{prefix}.linear2.weight"][idx])
    full, _, _ = build(CFG, PruneSpec(), full_sd=full_sd)
    assert params_of(small) < params_of(full)
    small.convert_to_deploy()
    scores, boxes = _raw(small, np.zeros((1, 3, 256, 256), np.float32))
    assert scores.shape[-1] == 80 and boxes.shape[-1] == 4 and np.isfinite(boxes).all()


def test_transfer_rejects_unexplained_shape(full_sd):
    from ppdet_ext.slim.detr_prune import PruneSpec, build

    bad = dict(full_sd)
    k = next(n for n in bad if n.endswith("enc_score_head.weight"))
    bad[k] = bad[k][:, :10]
    with pytest.raises(ValueError, match="no transfer rule"):
        build(CFG, PruneSpec(), full_sd=bad)


# ---- attention-head pruning -------------------------------------------------------------
# Tiny config: hidden 128, 4 heads of 32 in the AIFI encoder and in both decoder attentions,
# 2 decoder layers, 3 levels x 4 points. Pruned here to 3 decoder / 2 encoder heads of 32.
HIDDEN, HEADS, HEAD_DIM, POINTS, DEC_LAYERS = 128, 4, 32, 3 * 4, 2


def test_ext_attention_equals_paddle_multihead():
    """Same parameter names/shapes as nn.MultiHeadAttention, so its state dict loads as is;
    outputs equal to 1e-6 with and without a bool mask (True = may attend)."""
    from ppdet_ext.modeling.rtdetr.attention import ExtMultiHeadAttention

    paddle.seed(1)
    ref = paddle.nn.MultiHeadAttention(32, 4)
    ours = ExtMultiHeadAttention(32, 4)
    ref_sd = ref.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in ref_sd.items()}
    ours.set_state_dict(ref_sd)
    rng = np.random.RandomState(0)
    q, k, v = (paddle.to_tensor(rng.randn(2, 7, 32).astype("float32")) for _ in range(3))
    mask = rng.rand(7, 7) > 0.4
    mask[np.arange(7), np.arange(7)] = True      # every query may attend to something
    mask = paddle.to_tensor(mask)
    for kw in ({}, {"attn_mask": mask}):
        np.testing.assert_allclose(ours(q, k, value=v, **kw).numpy(),
                                   ref(q, k, value=v, **kw).numpy(), rtol=0, atol=1e-6)


def test_keeping_all_heads_reproduces_the_full_model(full_sd):
    """enc_heads/dec_heads equal to the full counts (head_dim pinned through the config):
    the same model, outputs equal to 1e-6 (measured 0.0)."""
    from ppdet_ext.slim.detr_prune import PruneSpec, build

    x = np.random.RandomState(0).rand(1, 3, 160, 160).astype("float32")
    full, _, _ = build(CFG, PruneSpec(), full_sd=full_sd)
    same, _, info = build(CFG, PruneSpec(enc_heads=HEADS, dec_heads=HEADS), full_sd=full_sd)
    assert info["sliced"] == 0
    for a, b in zip(_raw(full, x), _raw(same, x)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _attention_prefixes(model):
    return [(n, l) for n, l in model.named_sublayers() if hasattr(l, "head_layout")]


def test_head_pruning_equals_zeroing_the_dropped_heads(full_sd):
    """Heads are independent up to the output projection: the pruned model equals the full
    one whose dropped heads' out_proj / output_proj rows are zero (kept heads chosen by L1,
    original order). Tolerance 1e-4 (summation order of the shorter matmuls; measured 1e-7,
    while pruned vs unzeroed full differ by ~0.1 in scores)."""
    from ppdet_ext.slim.detr_prune import PruneSpec, build, head_keep_indices

    spec = PruneSpec(enc_heads=2, dec_heads=3)
    small, _, info = build(CFG, spec, full_sd=full_sd)
    small_sd = {k: v.numpy() for k, v in small.state_dict().items()}
    zeroed = dict(full_sd)
    layers = _attention_prefixes(small)
    assert len(layers) == 1 + 2 * DEC_LAYERS     # AIFI + (self, cross) per decoder layer
    for prefix, layer in layers:
        layout = layer.head_layout()
        keep = head_keep_indices(full_sd, prefix, layout, layer.num_heads)
        assert list(keep) == sorted(keep) and len(keep) == layer.num_heads
        out_name = next(n for n, axis, _, _ in layout if axis == 0 and n.endswith("proj.weight"))
        w = full_sd[f"{prefix}.{out_name}"].copy()                  # [heads*hd, C]
        for h in set(range(HEADS)) - set(keep.tolist()):
            w[h * HEAD_DIM:(h + 1) * HEAD_DIM] = 0.0
        zeroed[f"{prefix}.{out_name}"] = w
        # kept slices are the full model's, in order
        rows = np.concatenate([np.arange(h * HEAD_DIM, (h + 1) * HEAD_DIM) for h in keep])
        np.testing.assert_array_equal(small_sd[f"{prefix}.{out_name}"],
                                      full_sd[f"{prefix}.{out_name}"][rows])
    assert info["sliced"] == 7 * len(layers)
    ref, _, _ = build(CFG, PruneSpec(), full_sd=zeroed)
    x = np.random.RandomState(1).rand(1, 3, 160, 160).astype("float32")
    for a, b in zip(_raw(ref, x), _raw(small, x)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_head_pruned_model_params_and_export(full_sd, tmp_path):
    """Param count drops by the hand-computed amount; the pruned model exports (to_static,
    Paddle Inference) and matches its dygraph outputs to 1e-4."""
    from ppdet_ext_deploy.formats import create_backend
    from ppdet_ext.export import export_model
    from ppdet_ext.slim.detr_prune import PruneSpec, build, macs_of, params_of

    full, _, _ = build(CFG, PruneSpec(), full_sd=full_sd)
    small, cfg, _ = build(CFG, PruneSpec(enc_heads=2, dec_heads=3), full_sd=full_sd)
    linear = lambda i, o: i * o + o  # noqa: E731
    w = HEAD_DIM                      # width of one head
    self_attn = 3 * linear(HIDDEN, w) + w * HIDDEN          # q/k/v columns, out_proj rows
    cross_attn = (linear(HIDDEN, w) + w * HIDDEN            # value_proj, output_proj
                  + linear(HIDDEN, 2 * POINTS) + linear(HIDDEN, POINTS))  # offsets, weights
    enc_dropped, dec_dropped = HEADS - 2, HEADS - 3
    expected = enc_dropped * self_attn + DEC_LAYERS * dec_dropped * (self_attn + cross_attn)
    assert params_of(full) - params_of(small) == expected == 91656
    assert macs_of(small, (160, 160)) < macs_of(full, (160, 160))

    x = np.random.RandomState(2).rand(1, 3, 160, 160).astype("float32")
    ref = _raw(small, x)
    out = str(tmp_path / "pruned")
    export_model(cfg, out, model=small)
    got = create_backend(out, "paddle-cpu", {"threads": 1}).infer(x)
    assert got[0].shape == ref[0].shape and np.isfinite(got[1]).all()
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-3)


def test_head_pruning_rejects_more_heads_than_the_full_model():
    from ppdet_ext.slim.detr_prune import PruneSpec, spec_overrides

    with pytest.raises(ValueError, match="nhead"):
        spec_overrides(CFG, PruneSpec(dec_heads=HEADS + 1))
    assert spec_overrides(CFG, PruneSpec(dec_heads=3)) == [
        "ExtRTDETRDecoder.nhead=3", f"ExtRTDETRDecoder.head_dim={HEAD_DIM}"]
