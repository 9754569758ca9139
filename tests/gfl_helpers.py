"""Tiny GFL configs for fast CPU tests (written into a tmp dir, _BASE_ on the shipped one)."""
import os

from conftest import REPO

TINY = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")


def _reader(h, w, interp):
    """A reader's ``sample_transforms`` (YAML lines): keep-ratio resize, ImageNet mean/std."""
    return f"""  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [{h}, {w}], keep_ratio: true, interp: {interp}}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
"""


def write_test_config(tmp_path, *, sample_num=8, size=(128, 192), epoch=2, extra=""):
    """A deterministic (no random flip) tiny GFL on ``sample_num`` coco_mini images."""
    h, w = size
    text = f"""_BASE_: ['{TINY}']
save_dir: {tmp_path}/runs
epoch: {epoch}
log_iter: 1
snapshot_epoch: 1
TrainDataset:
  sample_num: {sample_num}
EvalDataset:
  sample_num: 4
TrainReader:
{_reader(h, w, 1)}  batch_size: 4
EvalReader:
{_reader(h, w, 2)}TestReader:
{_reader(h, w, 2)}{extra}"""
    path = tmp_path / "gfl_test.yml"
    path.write_text(text)
    return str(path)


def save_random_weights(cfg_path, path, *, seed=0, overrides=()):
    """Seeded random-init weights of ``cfg_path``'s model saved as ``path.pdparams`` (no
    training needed to test the plumbing); leaves ppdet's global config reset."""
    import paddle
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.export import build_model
    from ppdet_ext.registry import reset_global_config
    reset_global_config()
    cfg, _ = load_config(cfg_path, list(overrides))
    paddle.seed(seed)
    paddle.save(build_model(cfg).state_dict(), path + ".pdparams")
    reset_global_config()
    return path


def export_random_tiny_gfl(tmp_path_factory, name, seed):
    """A seeded random-init tiny GFL, its export dir and the metadata the exporter returned:
    ``(model, export_dir, meta)``."""
    import paddle
    from conftest import REPO
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.export import build_model, export_model
    from ppdet_ext.registry import reset_global_config
    os.chdir(REPO)
    reset_global_config()
    tmp = tmp_path_factory.mktemp(name)
    cfg, _ = load_config(write_test_config(tmp))
    paddle.seed(seed)
    model = build_model(cfg)
    out = str(tmp / "gfl")
    meta = export_model(cfg, out, model=model)
    reset_global_config()
    return model, out, meta
