"""ppdet's `!Tag` config objects: every tag ppdet 2.6 registers loads, its arguments are
checked like any other key, and nothing else (`!!python/*`, unknown tags) gets through."""
import ast
import inspect
import os
import runpy
import subprocess

import pytest
import yaml

import ppdet
from conftest import COCO_MINI, PYTHON, REPO
from ppdet_ext.engine import tagged_yaml
from ppdet_ext.engine.config import ConfigError, load_config, load_yaml_with_base
from ppdet_ext.engine.tagged_yaml import Tagged, TagError

TINY = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")


def _ppdet_tags():
    return {t: c for t, c in tagged_yaml.registered_tags().items()
            if c.__module__.split(".")[0] == "ppdet"}


def _serializable_names_in_sources():
    """Names of classes/functions ppdet's sources decorate with ``serializable`` or with a
    helper that returns ``serializable(cls)`` (``register_op`` etc.), found by parsing."""
    trees = []
    root = os.path.dirname(ppdet.__file__)
    for folder, _, files in os.walk(root):
        trees += [ast.parse(open(os.path.join(folder, f), encoding="utf-8").read())
                  for f in files if f.endswith(".py")]
    registrars = {"serializable"}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(r, ast.Return) and isinstance(r.value, ast.Call)
                    and getattr(r.value.func, "id", None) == "serializable"
                    for r in ast.walk(node)):
                registrars.add(node.name)
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                for d in node.decorator_list:
                    if (getattr(d, "id", None) or getattr(d, "attr", None)) in registrars:
                        names.add(node.name)
    return names


def test_tags_are_enumerated_from_ppdets_registrations():
    tags = _ppdet_tags()
    # ppdet 2.6.0 (pinned): 199 @serializable registrations, every one in its sources
    assert {t[1:] for t in tags} == _serializable_names_in_sources()
    assert len(tags) == 199
    assert {"!PiecewiseDecay", "!LinearWarmup", "!CosineDecay", "!COCODataSet", "!QAT",
            "!PTQ", "!Pruner", "!UnstructuredPruner"} <= set(tags)
    ours = {t for t, c in tagged_yaml.registered_tags().items()
            if c.__module__.startswith("ppdet_ext.")}
    assert ours and all(t.startswith("!Ext") for t in ours)


def _placeholder_args(cls):
    """Required constructor arguments of ``cls`` with a placeholder value (the loader and
    the key check only look at names)."""
    params = inspect.signature(cls).parameters.values()
    return {p.name: 0 for p in params
            if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _flow(args):
    return yaml.safe_dump(args, default_flow_style=True, width=10 ** 9).strip()


def _every_tag_config():
    """A config (written here, one key per tag) that uses every tag ppdet registers."""
    lines = []
    for i, (tag, cls) in enumerate(sorted(_ppdet_tags().items())):
        args = _placeholder_args(cls) if inspect.isclass(cls) else {}
        lines.append(f"k{i}: {tag} {_flow(args)}")
    return "\n".join(lines) + "\n"


def test_every_ppdet_tag_loads_or_is_refused_by_name(tmp_path):
    allowed = tagged_yaml.allowed_tags()
    refused = {t: c for t, c in _ppdet_tags().items() if t not in allowed}
    assert set(refused) == {"!Callable", "!keypoint_2d_loss", "!keypoint_3d_loss",
                            "!mean_per_vertex_error", "!mpjpe_np", "!normed_mpjpe",
                            "!rectify_pose", "!vertices_loss", "!weighted_mpjpe"}
    text = _every_tag_config()
    lines = text.splitlines()
    ok = [l for l in lines if l.split()[1] in allowed]
    path = tmp_path / "every_tag.yml"
    path.write_text("\n".join(ok) + "\n")
    data = tagged_yaml.load(path.read_text(), str(path))
    assert len(data) == len(ok) == len(allowed) - len([t for t in allowed if t.startswith("!Ext")])
    for key, node in data.items():
        assert isinstance(node, Tagged)
        assert node.cls is allowed[node.tag]
        tagged_yaml.check_arguments(node, key)
    for n, line in enumerate(lines):
        tag = line.split()[1]
        if tag in refused:
            with pytest.raises(TagError, match=f"^f.yml:1: tag '{tag}' is refused: it "):
                tagged_yaml.load(line, "f.yml")


def test_every_tags_arguments_are_checked_with_suggestions():
    checked = 0
    for tag, cls in sorted(tagged_yaml.allowed_tags().items()):
        names = [p.name for p in inspect.signature(cls).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and len(p.name) > 3]
        if not names or any(p.kind is p.VAR_KEYWORD
                            for p in inspect.signature(cls).parameters.values()):
            continue
        args = dict(_placeholder_args(cls))
        typo = names[0] + "x"
        args[typo] = 1
        node = tagged_yaml.load(f"a: {tag} {_flow(args)}", "f.yml")["a"]
        with pytest.raises(TagError, match=f"f.yml:1: unknown key 'a.{typo}': {tag} takes .*"
                                           f"did you mean '{names[0]}'"):
            tagged_yaml.check_arguments(node, "a")
        checked += 1
    assert checked > 150


def test_default_constructible_tags_build(tmp_path, monkeypatch):
    """Every tag whose class needs no argument builds an instance of that class; a ppdet
    constructor that fails (three do with their defaults in 2.6.0) is an error naming the
    tag and line, not a traceback."""
    monkeypatch.chdir(tmp_path)  # DebugVisibleImage() creates output/debug in the cwd
    built, failed = 0, []
    for tag, cls in sorted(tagged_yaml.allowed_tags().items()):
        if _placeholder_args(cls):
            continue
        node = tagged_yaml.load(f"\n\nobj: {tag} {{}}", "f.yml")["obj"]
        try:
            obj = tagged_yaml.instantiate(node)
        except TagError as e:
            assert str(e).startswith(f"f.yml:3: building {tag} failed: "), e
            failed.append(tag)
            continue
        assert type(obj) is cls
        built += 1
    assert built >= 130 and len(failed) <= 3, failed


def test_missing_required_argument_is_named():
    node = tagged_yaml.load("s: !Pruner {criterion: fpgm, pruned_params: []}", "p.yml")["s"]
    with pytest.raises(TagError, match=r"p.yml:1: 's' \(!Pruner\) is missing .*'pruned_ratios'"):
        tagged_yaml.check_arguments(node, "s")


@pytest.mark.parametrize("text, msg", [
    ("a: !!python/object/apply:os.system ['touch x']",
     "x.yml:2: tag '!!python/object/apply:os.system' is not allowed"),
    ("a: !!python/name:os.system ''", "x.yml:2: tag '!!python/name:os.system' is not allowed"),
    ("a: !PiecewiseDekay {}", "x.yml:2: unknown tag '!PiecewiseDekay'.*did you mean !PiecewiseDecay"),
    ("a: !LinearWarmup 3", "x.yml:2: '!LinearWarmup' must be followed by a mapping"),
])
def test_other_tags_are_refused_naming_file_line_and_tag(text, msg):
    with pytest.raises(TagError, match=msg):
        tagged_yaml.load("b: 1\n" + text, "x.yml")


def _tagged_tiny(tmp_path, schedulers, extra=""):
    path = tmp_path / "tagged_tiny.yml"
    path.write_text(f"""_BASE_: ['{TINY}']
save_dir: {tmp_path}/runs
epoch: 1
log_iter: 1
LearningRate:
  base_lr: 0.001
  schedulers:
{schedulers}
TrainDataset: !COCODataSet
  dataset_dir: {COCO_MINI}
  image_dir: images
  anno_path: annotations/instances_train.json
  data_fields: ['image', 'gt_bbox', 'gt_class', 'is_crowd']
  sample_num: 2
TrainReader:
  batch_size: 2
{extra}""")
    return str(path)


PIECEWISE = """  - !PiecewiseDecay
    gamma: 0.1
    milestones: [1]
  - !LinearWarmup {start_factor: 0.1, steps: 2}"""


def test_tagged_config_installs_objects_and_dumps_its_tags(tmp_path, repo_cwd):
    from ppdet.data.source.coco import COCODataSet
    from ppdet.optimizer.optimizer import LinearWarmup, PiecewiseDecay
    from ppdet_ext.engine.config import dump_config
    path = _tagged_tiny(tmp_path, PIECEWISE)
    cfg, user = load_config(path, ["TrainDataset.sample_num=3"])
    sched = cfg["LearningRate"]["schedulers"]
    assert [type(s) for s in sched] == [PiecewiseDecay, LinearWarmup]
    assert sched[0].milestones == [1] and sched[1].steps == 2
    assert isinstance(cfg["TrainDataset"], COCODataSet)
    assert cfg["TrainDataset"].sample_num == 3   # -o merged into the tag's arguments
    dumped = tmp_path / "dumped.yml"
    dump_config(user, str(dumped))
    assert "!PiecewiseDecay" in dumped.read_text() and "!COCODataSet" in dumped.read_text()
    again = load_yaml_with_base(str(dumped))
    assert again["LearningRate"] == user["LearningRate"]
    assert again["TrainDataset"].tag == "!COCODataSet"
    assert dict(again["TrainDataset"]) == dict(user["TrainDataset"])


def test_unknown_key_inside_a_tag_names_file_line_and_key(tmp_path, repo_cwd):
    path = _tagged_tiny(tmp_path, PIECEWISE.replace("gamma", "gama"))
    with pytest.raises(ConfigError, match=r"tagged_tiny.yml:8: unknown key "
                                          r"'LearningRate.schedulers\[0\].gama'.*did you mean 'gamma'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'TrainDataset.dataset_dri'.*'dataset_dir'"):
        load_config(_tagged_tiny(tmp_path, PIECEWISE), ["TrainDataset.dataset_dri=x"])


def test_transform_written_as_tag_is_an_error(tmp_path, repo_cwd):
    path = _tagged_tiny(tmp_path, PIECEWISE, "  sample_transforms:\n  - !Decode {}\n")
    with pytest.raises(ConfigError, match=r"'TrainReader.sample_transforms\[0\]': transforms are "
                                          r"written '- Decode: \{...\}'"):
        load_config(path)


def test_training_step_from_a_tagged_config(tmp_path, repo_cwd):
    from ppdet_ext.engine import api
    path = _tagged_tiny(tmp_path, """  - !CosineDecay {max_epochs: 1}
  - !ExpWarmup {steps: 1}""")
    cfg, user = load_config(path)
    trainer = api.train(cfg, user, seed=0)
    run = os.path.join(str(tmp_path), "runs", "tagged_tiny")
    assert os.path.isfile(os.path.join(run, "model_final.pdparams"))
    assert trainer.status["epoch_id"] == 0
    assert "!CosineDecay" in open(os.path.join(run, "config.yml")).read()


def test_cli_refuses_python_tag_in_one_line_exit_2(tmp_path):
    marker = tmp_path / "ran"
    cfg = tmp_path / "evil.yml"
    cfg.write_text(f"_BASE_: ['{TINY}']\nepoch: !!python/object/apply:os.system ['touch {marker}']\n")
    r = subprocess.run([PYTHON, "tools/train.py", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2
    err = [l for l in r.stderr.splitlines() if "config error" in l]
    assert err == [f"config error: {cfg}:2: tag '!!python/object/apply:os.system' is not "
                   "allowed: configs are read as safe YAML plus ppdet's registered !Tags "
                   "(e.g. !PiecewiseDecay)"], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_check_configs_tool_reports_each_failing_file(tmp_path, capsys):
    good = _tagged_tiny(tmp_path, PIECEWISE)
    bad = tmp_path / "sub" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text(f"_BASE_: ['{good}']\nLearningRate:\n  schedulers:\n  - !CosineDecay {{max_epoch: 3}}\n")
    slim = tmp_path / "sub" / "q.yml"
    slim.write_text("slim: QAT\nQAT: {quant_config: {moving_rate: 0.9}, print_model: false}\n")
    out = tmp_path / "report.md"
    main = runpy.run_path(os.path.join(REPO, "tools", "check_configs.py"), run_name="tool")["main"]
    assert main([str(tmp_path), "--out", str(out)]) == 1
    stdout = capsys.readouterr().out
    fails = [l for l in stdout.splitlines() if l.startswith("FAIL")]
    assert fails == [f"FAIL {bad}:4: unknown key 'LearningRate.schedulers[0].max_epoch': "
                     "!CosineDecay takes ['last_plateau_epochs', 'max_epochs', 'min_lr_ratio', "
                     "'use_warmup'] "
                     "(did you mean 'max_epochs'?)"]
    assert "3 files: 2 ok, 1 failed, 0 skipped" in stdout
    assert "| 1 | unknown key 'LearningRate.schedulers[0].max_epoch' |" in out.read_text()


def test_anchored_top_level_keys_are_variables_others_stay_typos(tmp_path, repo_cwd):
    """ppdet configs define variables as anchored top-level keys (eval_size: &eval_size ...);
    those pass the key check, an un-anchored unknown key still does not."""
    path = tmp_path / "vars.yml"
    path.write_text(f"""_BASE_: ['{TINY}']
eval_size: &eval_size [160, 256]
EvalReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: *eval_size, keep_ratio: true}}
""")
    cfg, _ = load_config(str(path))
    assert cfg["EvalReader"]["sample_transforms"][1]["Resize"]["target_size"] == [160, 256]
    path.write_text(path.read_text().replace("eval_size: &eval_size [160, 256]", "eval_sise: 3")
                    .replace("*eval_size", "[160, 256]"))
    with pytest.raises(ConfigError, match="unknown key 'eval_sise'"):
        load_config(str(path))
