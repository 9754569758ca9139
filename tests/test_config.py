"""Config loading: _BASE_, overrides, validation errors that name the key."""
import os
import subprocess

import pytest
import yaml

from conftest import PYTHON, REPO
from ppdet.core import workspace
from ppdet_ext.engine.config import ConfigError, load_config, parse_overrides

TINY = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")


def test_base_merge_and_overrides(repo_cwd):
    cfg, user = load_config(TINY, ["epoch=3", "TrainReader.batch_size=2", "ResNet.depth=34"])
    assert cfg["epoch"] == 3 and user["epoch"] == 3
    assert cfg["TrainReader"]["batch_size"] == 2
    assert cfg["ResNet"]["depth"] == 34
    assert cfg["FPN"]["out_channel"] == 64            # leaf delta over _base_ (256)
    assert cfg["FPN"]["extra_stage"] == 2              # inherited from _base_
    assert cfg["TrainDataset"].__class__.__name__ == "COCODataSet"


def test_global_config_does_not_leak_between_loads(repo_cwd):
    load_config(TINY, ["ResNet.depth=34"])
    cfg, _ = load_config(TINY)
    assert cfg["ResNet"]["depth"] == 18


@pytest.mark.parametrize("override, key", [
    (["epohc=3"], "epohc"),
    (["GFLHead.reg_mx=7"], "GFLHead.reg_mx"),
    (["TrainReader.batchsize=2"], "TrainReader.batchsize"),
    (["TrainDataset.anno=x.json"], "TrainDataset.anno"),
])
def test_unknown_keys_are_errors_naming_the_key(repo_cwd, override, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_config(TINY, override)


def test_suggests_close_matches(repo_cwd):
    with pytest.raises(ConfigError, match="did you mean 'epoch'"):
        load_config(TINY, ["epoc=3"])


def test_unknown_transform_names_it(repo_cwd, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(f"_BASE_: ['{TINY}']\nEvalReader:\n  sample_transforms:\n  - Decode: {{}}\n"
                   "  - Resise: {target_size: [1, 1]}\n")
    with pytest.raises(ConfigError, match="unknown transform 'EvalReader.sample_transforms\\[1\\].Resise'"):
        load_config(str(bad))


@pytest.mark.parametrize("item, msg", [
    ("epoch", "expected key=value"),
    ("=3", "empty key"),
    ("a..b=1", "empty key"),
    ("epoch=[1,", "key 'epoch'"),
])
def test_malformed_overrides(item, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_overrides([item])


def test_override_values_are_yaml_typed():
    out = parse_overrides(["a.b=[1, 2]", "c=true", "d=0.5", "e=text", "f=null"])
    assert out == {"a": {"b": [1, 2]}, "c": True, "d": 0.5, "e": "text", "f": None}


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/does_not_exist.yml")


def test_cli_typo_exits_nonzero_naming_the_key(repo_cwd):
    r = subprocess.run([PYTHON, "tools/train.py", "-c", TINY, "-o", "TrainReader.bach_size=2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "TrainReader.bach_size" in r.stderr
    assert "batch_size" in r.stderr  # the suggestion


def test_every_shipped_config_validates(repo_cwd):
    configs = []
    for root, _, files in os.walk(os.path.join(REPO, "configs")):
        if "_base_" in root:
            continue
        configs += [os.path.join(root, f) for f in files if f.endswith(".yml")]
    assert configs
    def is_model_config(path):  # slim configs (top-level `slim:`) have their own loader
        with open(path) as f:
            top = yaml.safe_load(f) or {}
        return "slim" not in top and ("architecture" in top or "_BASE_" in top)

    leafs = [c for c in configs if is_model_config(c)]
    assert len(leafs) >= 19  # gfl 4, rtdetrv2 10, picodet 4, slim fine-tune 1
    for path in leafs:
        try:
            load_config(path)
        except ConfigError as e:
            if "../shared" in open(path).read() and not os.path.isdir(os.path.join(REPO, "..", "shared")):
                continue
            raise AssertionError(f"{path}: {e}")
        assert workspace.global_config["filename"] == os.path.splitext(os.path.basename(path))[0]


def test_slim_configs_load_with_their_own_loader():
    from ppdet_ext.slim.ppdet_slim_config import read_slim_config
    from ppdet_ext.slim.qat import load_slim_config
    slim_dir = os.path.join(REPO, "configs", "slim")
    qat = [f for f in os.listdir(slim_dir) if f.startswith("qat_")]
    assert qat
    for f in qat:
        load_slim_config(os.path.join(slim_dir, f))
    methods = set()
    for f in os.listdir(slim_dir):
        with open(os.path.join(slim_dir, f)) as fh:
            if "slim" in (yaml.safe_load(fh) or {}):
                methods.add(read_slim_config(os.path.join(slim_dir, f)).method)
    assert methods == {"QAT", "PTQ"}
