"""--slim_config: PaddleDetection's slim layouts (written here in ppdet's form, not copied)
parse onto our settings, errors name the key, and each method runs through the tools' API."""
import os

import numpy as np
import pytest

from conftest import REPO
from gfl_helpers import save_random_weights, write_test_config
from ppdet_ext.engine.config import ConfigError, load_config
from ppdet_ext.slim.ppdet_slim_config import read_slim_config, split_overrides

# ppdet's QAT layout, as configs/slim/quant/*.yml write it (flow mapping, PACT, a schedule
# with ppdet's !Tags, model keys next to the slim block)
PPDET_QAT = """pretrain_weights: null
slim: QAT
QAT:
  quant_config: {
    'activation_preprocess_type': 'PACT',
    'weight_quantize_type': 'channel_wise_abs_max', 'activation_quantize_type': 'moving_average_abs_max',
    'weight_bits': 8, 'activation_bits': 8, 'dtype': 'int8', 'window_size': 10000, 'moving_rate': 0.9,
    'quantizable_layer_type': ['Conv2D', 'Linear']}
  print_model: False
epoch: 1
LearningRate:
  base_lr: 0.0001
  schedulers:
  - !PiecewiseDecay {gamma: 0.1, milestones: [1]}
  - !LinearWarmup {start_factor: 0., steps: 1}
TrainReader:
  batch_size: 2
"""
PPDET_PTQ = """weights: null
slim: PTQ
PTQ:
  ptq_config: {'activation_quantizer': 'AbsmaxQuantizer', 'upsample_bins': 127}
  quant_batch_num: 1
  fuse: True
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_ppdet_qat_layout_maps_onto_qat_config(tmp_path):
    slim = read_slim_config(_write(tmp_path, "my_quant.yml", PPDET_QAT))
    q = slim.settings
    assert slim.method == "QAT" and slim.name == "my_quant" and slim.print_model is False
    assert (q.activation_preprocess_type, q.weight_preprocess_type) == ("PACT", None)
    assert q.quantizable_layer_type == ["Conv2D", "Linear"] and q.moving_rate == 0.9
    assert q.weight_quantize_type == "channel_wise_abs_max" and q.onnx_format is True
    assert sorted(slim.model_keys) == ["LearningRate", "TrainReader", "epoch", "pretrain_weights"]
    assert slim.model_keys["LearningRate"]["schedulers"][0].tag == "!PiecewiseDecay"


def test_our_flat_layouts_keep_working():
    for name in ("qat_gfl.yml", "ptq_hist.yml"):
        slim = read_slim_config(os.path.join(REPO, "configs", "slim", name))
        assert slim.method in ("QAT", "PTQ") and slim.model_keys == {}
    ptq = read_slim_config(os.path.join(REPO, "configs", "slim", "ptq_hist.yml")).settings
    assert (ptq.ptq.algo, ptq.ptq.hist_percent, ptq.quant_batch_num, ptq.fuse) == \
        ("hist", 0.999, 8, True)


def test_ppdet_ptq_and_prune_layouts(tmp_path):
    ptq = read_slim_config(_write(tmp_path, "p.yml", PPDET_PTQ)).settings
    assert (ptq.ptq.algo, ptq.ptq.weight_quantize_type) == ("abs_max", "channel_wise_abs_max")
    assert (ptq.quant_batch_num, ptq.fuse) == (1, True)
    prune = read_slim_config(_write(tmp_path, "q.yml", "slim: Pruner\nPruner:\n  criterion: fpgm\n"
                                    "  pruned_params: ['conv2d_3.w_0']\n  pruned_ratios: [0.5]\n"))
    assert prune.settings.pruned_params == ["conv2d_3.w_0"]
    un = read_slim_config(_write(tmp_path, "u.yml", "slim: UnstructuredPruner\nUnstructuredPruner:\n"
                                 "  {stable_epochs: 0, pruning_epochs: 6, tunning_epochs: 0,\n"
                                 "   pruning_steps: 1, ratio: 0.5, initial_ratio: 0.15}\n"))
    assert un.model_keys["unstructured_prune"] is True
    assert un.model_keys["UnstructuredPruner"]["ratio"] == 0.5


@pytest.mark.parametrize("text, msg", [
    (PPDET_QAT.replace("'window_size'", "'window_sise'"),
     r"unknown key 'QAT.quant_config.window_sise' \(did you mean 'window_size'\?\)"),
    (PPDET_QAT.replace("'PACT'", "'PAKT'"), r"'QAT.quant_config': activation_preprocess_type must be PACT"),
    (PPDET_QAT.replace("print_model", "print_modle"), r"unknown key 'QAT.print_modle'"),
    (PPDET_QAT.replace("'int8'", "'uint8'"), r"'QAT.quant_config.dtype: uint8': only int8"),
    (PPDET_PTQ.replace("AbsmaxQuantizer", "MseQuantizer"), r"'PTQ.ptq_config.activation_quantizer: MseQuantizer'"),
    (PPDET_PTQ + "  fuse_list: [a]\n", r"'PTQ.fuse_list' is not supported"),
    ("slim: QTA\n", r"'slim: QTA' is not a slim method \(did you mean 'QAT'\?\)"),
    ("slim: Distill\n", r"'slim: Distill' is not supported here"),
    ("epoch: 1\n", r"no 'slim' key"),
    ("slim: QAT\nQAT: {}\nPTQ: {}\n", r"key 'PTQ' is not used by 'slim: QAT'"),
    ("slim: Pruner\nPruner: {criterion: l2, pruned_params: [a], pruned_ratios: [0.1]}\n",
     r"'Pruner.criterion: l2'"),
    ("slim: Pruner\nPruner: {criterion: fpgm, pruned_params: [a, b], pruned_ratios: [0.1]}\n",
     r"'Pruner.pruned_params' \(2\) and 'Pruner.pruned_ratios' \(1\) differ in length"),
    ("slim: QAT\nQAT: [1]\n", r"'QAT' must be a mapping, got list"),
], ids=["qat-key", "qat-pact", "qat-print", "qat-dtype", "ptq-quantizer", "ptq-fuse-list",
        "method-typo", "method-unsupported", "no-slim", "other-block", "prune-criterion",
        "prune-lengths", "block-type"])
def test_errors_name_the_file_and_key(tmp_path, text, msg):
    path = _write(tmp_path, "bad.yml", text)
    with pytest.raises(ConfigError, match=f"{path}: {msg}"):
        read_slim_config(path)


def test_overrides_of_the_slim_block_reach_the_slim_config(tmp_path):
    from ppdet_ext.engine.config import parse_overrides
    slim_over, model_over = split_overrides(parse_overrides(
        ["PTQ.quant_batch_num=3", "epoch=2", "PTQ.ptq_config.activation_quantizer=KLQuantizer"]))
    assert model_over == {"epoch": 2}
    s = read_slim_config(_write(tmp_path, "p.yml", PPDET_PTQ), slim_over).settings
    assert (s.quant_batch_num, s.ptq.algo) == (3, "KL")


def test_slim_model_keys_are_checked_under_the_slim_file(tmp_path, repo_cwd):
    path = _write(tmp_path, "q.yml", PPDET_QAT.replace("epoch: 1", "epohc: 1"))
    slim = read_slim_config(path)
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'epohc'.*did you mean 'epoch'"):
        load_config(write_test_config(tmp_path), layers=[(slim.path, slim.model_keys)])


@pytest.fixture
def tiny(tmp_path, repo_cwd):
    """A tiny GFL config, and random-init weights saved as its 'pretrained' checkpoint."""
    cfg_path = write_test_config(tmp_path, sample_num=2, epoch=1)
    return cfg_path, save_random_weights(cfg_path, str(tmp_path / "fp32"))


def _load(cfg_path, slim, over=()):
    over = ["TrainReader.batch_size=2"] + list(over)  # 2 samples, drop_last
    return load_config(cfg_path, over, layers=[(slim.path, slim.model_keys)], name=slim.name)


def test_pruner_trains_evaluates_and_exports_pruned(tmp_path, tiny):
    """ppdet's Pruner: pretrained weights loaded, then filters removed, then training; the
    checkpoint loads only into the same pruned model (eval/infer/export build it)."""
    import paddle
    from ppdet_ext.slim import slim_runs
    from ppdet_ext_deploy import Runner
    cfg_path, fp32 = tiny
    slim = read_slim_config(_write(tmp_path, "gfl_prune.yml", "slim: Pruner\nPruner:\n"
                                   "  criterion: l1_norm\n  pruned_params: ['conv2d_3.w_0', 'conv2d_6.w_0']\n"
                                   "  pruned_ratios: [0.5, 0.25]\n  print_params: false\n"))
    cfg, user = _load(cfg_path, slim, [f"pretrain_weights={fp32}"])
    slim_runs.train(cfg, user, slim, seed=0)
    ckpt = os.path.join(str(tmp_path), "runs", "gfl_prune", "model_final")
    state = paddle.load(ckpt + ".pdparams")
    full = paddle.load(fp32 + ".pdparams")
    pruned = [k for k in full if list(state[k].shape) != list(full[k].shape)]
    assert len(pruned) >= 4  # 2 convs' filters, their BN, the next convs' input channels
    assert all(np.prod(state[k].shape) < np.prod(full[k].shape) for k in pruned)

    cfg, user = _load(cfg_path, slim)
    model = slim_runs.model_for(cfg, slim, ckpt)
    for k, v in model.state_dict().items():  # the pruned checkpoint, loaded exactly
        np.testing.assert_array_equal(v.numpy(), state[k].numpy())
    out = str(tmp_path / "export")
    slim_runs.export(cfg, user, slim, weights=ckpt, output_dir=out)
    x = np.random.RandomState(0).rand(1, 3, 128, 192).astype("float32")
    scores, boxes = Runner(out, backend="paddle-cpu").backend.infer(x)
    assert scores.shape[-1] == 80 and np.isfinite(boxes).all()

    with pytest.raises(ConfigError, match=r"fp32.pdparams: not a checkpoint of the model "
                                          r"'.*gfl_prune.yml' builds \(\d+ tensors of other shapes"):
        slim_runs.model_for(cfg, slim, fp32)              # unpruned weights, pruned model
    slim.settings.pruned_params = ["conv2d_999.w_0"]
    with pytest.raises(ConfigError, match=r"'Pruner.pruned_params': 'conv2d_999.w_0' is not a "
                                          r"conv weight of GFL \(conv2d_0.w_0 ... conv2d_\d+.w_0\)"):
        slim_runs.model_for(cfg, slim, None)


def test_ppdet_qat_settings_build_pact_fake_quant_layers(tmp_path, tiny):
    """ppdet's quant_config reaches the quantizer: PACT clipping before every quantized
    activation, Conv2D and Linear quantized, and the model still runs forward."""
    import paddle
    from paddleslim.dygraph.quant.qat import PACT
    from ppdet_ext.slim import slim_runs
    from ppdet_ext.slim.qat import count_quantized
    cfg_path, fp32 = tiny
    slim = read_slim_config(_write(tmp_path, "gfl_quant.yml", PPDET_QAT))
    cfg, _ = _load(cfg_path, slim)
    model = slim_runs.model_for(cfg, slim, None)
    n = count_quantized(model)
    assert n > 10 and sum(isinstance(l, PACT) for l in model.sublayers()) == n
    x = {"image": paddle.rand([1, 3, 128, 192]), "im_shape": paddle.to_tensor([[128., 192.]]),
         "scale_factor": paddle.ones([1, 2])}
    with paddle.no_grad():
        assert model(x)["bbox"].shape[-1] == 6


@pytest.mark.slow  # 80-150 s here: QAT training plus two INT8 exports
def test_qat_checkpoint_exports_the_graph_training_exported(tmp_path, tiny):
    """train.py --slim_config (ppdet's QAT layout, PACT) trains and writes its INT8 export;
    export_model.py --slim_config rebuilds the fake-quant model from the checkpoint and
    exports the same graph (identical outputs)."""
    from ppdet_ext.slim import slim_runs
    from ppdet_ext_deploy import Runner
    cfg_path, fp32 = tiny
    slim = read_slim_config(_write(tmp_path, "gfl_quant.yml", PPDET_QAT))
    cfg, user = _load(cfg_path, slim, [f"pretrain_weights={fp32}"])
    slim_runs.train(cfg, user, slim, seed=0)
    run = os.path.join(str(tmp_path), "runs", "gfl_quant")
    assert os.path.isfile(os.path.join(run, "model_final.pdparams"))
    cfg, user = _load(cfg_path, slim)
    out = str(tmp_path / "export")
    meta = slim_runs.export(cfg, user, slim, weights=os.path.join(run, "model_final"),
                            output_dir=out)
    assert meta["quantization"]["method"] == "qat"
    x = np.random.RandomState(0).rand(1, 3, 128, 192).astype("float32")
    a = Runner(out, backend="paddle-cpu").backend.infer(x)
    b = Runner(os.path.join(run, "qat_export"), backend="paddle-cpu").backend.infer(x)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


def test_ptq_calibrates_on_eval_images(tmp_path, tiny):
    from ppdet_ext.slim import slim_runs
    from ppdet_ext_deploy import Runner
    from ppdet_ext_deploy.meta import load_meta
    cfg_path, fp32 = tiny
    slim = read_slim_config(_write(tmp_path, "gfl_ptq.yml", PPDET_PTQ))
    cfg, user = _load(cfg_path, slim, [f"weights={fp32}", "EvalReader.batch_size=2"])
    out = str(tmp_path / "int8")
    res = slim_runs.post_quant(cfg, user, slim, weights=fp32, output_dir=out)
    assert len(res.calib_files) == 2 and res.quantized_layers > 10   # 1 batch x 2 images
    assert os.path.isdir(out + "_fp32_bnfold")                       # fuse: True
    import yaml
    with open(os.path.join(out, "infer_cfg.yml")) as f:
        assert yaml.safe_load(f)["quantization"]["algo"] == "abs_max"
    assert load_meta(out).output_names == load_meta(out + "_fp32").output_names
    x = np.random.RandomState(0).rand(1, 3, 128, 192).astype("float32")
    scores, boxes = Runner(out, backend="paddle-cpu-int8").backend.infer(x)
    assert np.isfinite(scores).all() and np.isfinite(boxes).all()
    with pytest.raises(ConfigError, match="'slim: PTQ' is post-training quantization: run "
                                          "tools/post_quant.py"):
        slim_runs.train(cfg, user, slim)


PICO_TINY = """_BASE_: ['{repo}/configs/datasets/coco_mini.yml', '{repo}/configs/runtime.yml',
         '{repo}/configs/picodet/_base_/picodet_esnet_s.yml', '{repo}/configs/gfl/_base_/optimizer_1x.yml']
save_dir: {tmp}/runs
worker_num: 0
log_iter: 1
epoch: 6
snapshot_epoch: 6
TrainDataset: {{sample_num: 2}}
TrainReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [160, 160], keep_ratio: false, interp: 1}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_transforms:
  - PadBatch: {{pad_to_stride: 32}}
  batch_size: 1
  shuffle: false
"""
UNSTRUCTURED = """slim: UnstructuredPruner
UnstructuredPruner:
  stable_epochs: 0
  pruning_epochs: 6
  tunning_epochs: 0
  pruning_steps: 1
  ratio: 0.5
  initial_ratio: 0.15
  prune_params_type: conv1x1_only
"""


def test_unstructured_pruner_zeroes_1x1_weights(tmp_path, repo_cwd):
    """ppdet's own UnstructuredPruner path (its Trainer steps PaddleSlim's GMP pruner) on a
    160 px PicoDet: 12 steps, the 1x1 conv weights of the checkpoint hold zeros, 3x3 none."""
    import paddle
    from ppdet_ext.slim import slim_runs
    cfg_path = _write(tmp_path, "pico.yml", PICO_TINY.format(repo=REPO, tmp=tmp_path))
    slim = read_slim_config(_write(tmp_path, "pico_unprune.yml", UNSTRUCTURED))
    cfg, user = _load(cfg_path, slim, ["TrainReader.batch_size=1"])
    slim_runs.train(cfg, user, slim, seed=0)
    state = paddle.load(str(tmp_path / "runs" / "pico_unprune" / "model_final.pdparams"))
    zeros = {k: float((v.numpy() == 0).mean()) for k, v in state.items()
             if v.ndim == 4 and k.endswith(".weight")}
    one_by_one = [z for k, z in zeros.items() if state[k].shape[2:] == [1, 1]]
    three = [z for k, z in zeros.items() if state[k].shape[2:] == [3, 3]]
    assert np.mean(one_by_one) > 0.1 and max(three) == 0.0


def test_unstructured_pruner_on_a_shared_head_is_a_clear_error(tmp_path, tiny):
    from ppdet_ext.slim import slim_runs
    cfg_path, _ = tiny
    slim = read_slim_config(_write(tmp_path, "u.yml", UNSTRUCTURED))
    cfg, user = _load(cfg_path, slim, ["epoch=6", "TrainReader.batch_size=1"])
    with pytest.raises(ConfigError, match="cannot train GFL: PaddleSlim's pruner re-masks"):
        slim_runs.train(cfg, user, slim, seed=0)
