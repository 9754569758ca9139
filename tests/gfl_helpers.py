"""Tiny GFL configs for fast CPU tests (written into a tmp dir, _BASE_ on the shipped one)."""
import os

from conftest import REPO

TINY = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")


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
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [{h}, {w}], keep_ratio: true, interp: 1}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_size: 4
EvalReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [{h}, {w}], keep_ratio: true, interp: 2}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
TestReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [{h}, {w}], keep_ratio: true, interp: 2}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
{extra}"""
    path = tmp_path / "gfl_test.yml"
    path.write_text(text)
    return str(path)
