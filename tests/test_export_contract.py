"""The export contract (deploy/meta.py): schema == docs/export_format.md, one-line errors, and
one reader of ``infer_cfg.yml`` on the whole walk from tools/export_model.py to a backend."""
import builtins
import io
import os
import re
import runpy
import sys
import tokenize

import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy import meta as contract
from ppdet_ext_deploy.imageio import list_images
from conftest import COCO_MINI, REPO

DOC = os.path.join(REPO, "docs", "export_format.md")
ROW = re.compile(r"^\| `([A-Za-z_.]+)` \| ([^|]+) \| ([^|]+) \|")


def _doc_rows():
    with open(DOC, encoding="utf-8") as f:
        return {m.group(1): (m.group(2).strip(), m.group(3).strip())
                for m in map(ROW.match, f) if m}


def test_doc_lists_every_schema_key_and_no_other():
    documented, schema = _doc_rows(), contract.schema_paths()
    assert sorted(set(schema) - set(documented)) == [], "schema keys missing from the doc"
    assert sorted(set(documented) - set(schema)) == [], "doc keys the schema does not know"
    for path, key in schema.items():
        typ, default = documented[path]
        assert typ == contract.type_label(key), path
        assert (default == "required") == (key.default is contract.REQUIRED), path


def test_errors_are_one_line_and_name_the_key(tmp_path):
    cases = [({"lable_list": []}, r"unknown top-level keys \['lable_list'\].*'label_list'"),
             ({"pad_stride": "32"}, "pad_stride must be int"),
             ({"outputs": {"kind": "sparse"}}, "outputs.kind must be one of"),
             ({"Preprocess": [{"type": "Resize", "target_size": [8, 8], "keepratio": 1}]},
              r"Preprocess\[0\] \(Resize\) keys \['keepratio'\].*'keep_ratio'"),
             ({"Preprocess": [{"type": "Resize"}]}, r"Preprocess\[0\].target_size is required"),
             ({"rknn_split": {"encoder": "e.onnx"}}, "rknn_split.decoder is required"),
             ({"label_list": ["a", 3]}, r"label_list\[1\] must be str")]
    for cfg, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            contract.write_meta(str(tmp_path), cfg)
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert not os.path.exists(tmp_path / contract.META_FILE)  # nothing half-written


def test_copy_meta_adds_a_block(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    contract.write_meta(str(src), {"arch": "X", "input_shape": [1, 3, 64, 64]})
    contract.copy_meta(str(src), str(dst), quantization={"method": "ptq", "calib_images": 4})
    meta = contract.load_meta(str(dst))
    assert meta.quantization == {"method": "ptq", "calib_images": 4}
    assert meta.fixed_hw == (64, 64) and meta.arch == "X" and meta.rknn_split is None


def _string_literals(path):
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.STRING:
                yield tok.string


def test_no_source_file_but_the_contract_names_the_metadata_file():
    """The file name as a string literal (a path built to open it) appears in the contract
    module only; everything else goes through load_meta / read_meta_dict / write_meta."""
    offenders = []
    for top in ("deploy", "ppdet_ext", "tools", "scripts"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(root, name)
                if not name.endswith(".py") or path == contract.__file__:
                    continue
                if any(s.strip("\"'") == contract.META_FILE for s in _string_literals(path)):
                    offenders.append(os.path.relpath(path, REPO))
    assert offenders == []


def test_export_to_backend_reads_the_metadata_through_one_reader(tmp_path, monkeypatch):
    """tools/export_model.py -> tools/export_onnx.py -> Runner on Paddle Inference and ONNX
    Runtime: every open() of infer_cfg.yml is made by deploy/meta.py."""
    from ppdet_ext_deploy.runner import Runner

    opened, real_open = [], builtins.open

    def spy(file, *args, **kwargs):
        if os.path.basename(str(file)) == contract.META_FILE:
            opened.append(sys._getframe(1).f_code.co_filename)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    monkeypatch.chdir(REPO)
    out = str(tmp_path / "export")
    for tool, argv in (("export_model.py", ["-c", "configs/gfl/gfl_tiny_coco_mini.yml",
                                            "-o", "weights=null", "--output_dir", out]),
                       ("export_onnx.py", [out])):
        monkeypatch.setattr(sys, "argv", [tool] + argv)
        try:
            runpy.run_path(os.path.join(REPO, "tools", tool), run_name="__main__")
        except SystemExit as e:
            assert e.code in (0, None), tool
    image = list_images(os.path.join(COCO_MINI, "images"), 1)[0]
    for backend in ("paddle-cpu", "onnxruntime"):
        runner = Runner(out, backend=backend, backend_options={"threads": 1})
        assert runner.run([image]).images_ok == 1
        runner.close()
    assert opened, "the walk never opened the metadata file"
    assert {os.path.realpath(f) for f in opened} == {os.path.realpath(contract.__file__)}

