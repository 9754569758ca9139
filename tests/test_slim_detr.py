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
