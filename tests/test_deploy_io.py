"""Image reading, preprocessing arithmetic and metadata parsing of deploy/."""
import os

import numpy as np
import pytest
import yaml

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.imageio import ImageError, decode_rgb, probe_size
from ppdet_ext_deploy.meta import load_meta, write_meta
from ppdet_ext_deploy.preprocess import Preprocessor
from deploy_fixtures import MEAN, STD, coco_mini_images, write_bad_images


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_bad_images(str(tmp_path_factory.mktemp("zoo")))


@pytest.mark.parametrize("kind,reason", [
    ("corrupt", "cannot read image header"), ("truncated", "cannot read image header"),
    ("missing", "no such file"), ("empty", "cannot read image header"),
    ("tiny", "too small"), ("huge", "too large")])
def test_probe_reports_bad_files_by_name(zoo, kind, reason):
    with pytest.raises(ImageError) as e:
        probe_size(zoo[kind])
    assert str(e.value).startswith(zoo[kind]) and reason in str(e.value)


def test_decode_rejects_garbage_and_empty(zoo):
    for kind in ("corrupt", "empty"):
        with pytest.raises(ImageError, match=os.path.basename(zoo[kind])):
            decode_rgb(zoo[kind])


@pytest.mark.parametrize("kind,note", [("alpha", "alpha"), ("gray", "grayscale"), ("deep", "16-bit")])
def test_decode_converts_to_rgb_uint8(zoo, kind, note):
    img, notes = decode_rgb(zoo[kind])
    assert img.dtype == np.uint8 and img.shape == (120, 200, 3)
    assert any(note in n for n in notes)
    assert probe_size(zoo[kind]) == (120, 200)


def test_decode_is_rgb_order():
    import cv2

    path = coco_mini_images(1)[0]
    img, notes = decode_rgb(path)
    bgr = cv2.imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])
    assert notes == []


def _pre(target, keep=True):
    return Preprocessor([{"type": "Resize", "target_size": target, "keep_ratio": keep, "interp": 1},
                         {"type": "NormalizeImage", "mean": MEAN, "std": STD, "is_scale": True},
                         {"type": "Permute"}])


def test_resized_hw_follows_ppdet_resize_rule():
    assert _pre([800, 1333]).resized_hw(480, 640) == (800, 1067)
    assert _pre([800, 1333]).resized_hw(640, 480) == (1067, 800)
    assert _pre([800, 1333]).resized_hw(300, 1333) == (300, 1333)  # long side bound
    assert _pre([416, 416]).resized_hw(480, 640) == (312, 416)
    assert _pre([416, 416], keep=False).resized_hw(480, 640) == (416, 416)


def test_apply_normalises_and_permutes():
    pre = _pre([8, 8], keep=False)
    img = np.zeros((4, 4, 3), np.uint8)
    img[...] = (np.array(MEAN) * 255).round().astype(np.uint8)
    out = pre.apply(img, (8, 8))
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    assert np.abs(out).max() < 0.02


def test_unsupported_op_and_missing_permute():
    with pytest.raises(ValueError, match="unsupported Preprocess op"):
        Preprocessor([{"type": "RandomFlip"}, {"type": "Permute"}])
    with pytest.raises(ValueError, match="Permute"):
        Preprocessor([{"type": "Resize", "target_size": [8, 8]}])


def test_load_meta(tmp_path):
    d = str(tmp_path)
    write_meta(d, {
        "arch": "X", "label_list": ["a", "b"], "input_shape": [1, 3, 640, 640],
        "Preprocess": [{"type": "Permute"}], "pad_stride": 0,
        "outputs": {"kind": "topk", "names": ["scores", "labels", "boxes"]},
        "Postprocess": {"type": "none"}, "category_ids": [3, 7]})
    m = load_meta(d)
    assert m.fixed_batch == 1 and m.fixed_hw == (640, 640) and m.stride == 1
    assert m.post.type == "none" and m.output_kind == "topk" and m.category_ids == (3, 7)
    bad = {"Postprocess": {"type": "nms", "sigma": 1}}
    with pytest.raises(ValueError, match="unknown Postprocess keys"):
        write_meta(d, bad)
    with open(os.path.join(d, "infer_cfg.yml"), "w") as f:  # written by hand, past the writer
        yaml.safe_dump(bad, f)
    with pytest.raises(ValueError, match="unknown Postprocess keys"):
        load_meta(d)
    with pytest.raises(FileNotFoundError):
        load_meta(os.path.join(d, "nope"))


def test_list_images_folder_glob_files_and_limit(tmp_path):
    from ppdet_ext_deploy.imageio import list_images

    for name in ("b.jpg", "a.PNG", "c.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"")
    folder = str(tmp_path)
    assert [os.path.basename(p) for p in list_images(folder)] == ["a.PNG", "b.jpg", "d.webp"]
    assert [os.path.basename(p) for p in list_images(folder, 2)] == ["a.PNG", "b.jpg"]
    assert [os.path.basename(p) for p in list_images(os.path.join(folder, "*.jpg"))] == ["b.jpg"]
    mixed = list_images(["missing.jpg", folder], require=False)  # order kept, missing kept
    assert mixed[0] == "missing.jpg" and len(mixed) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        list_images(str(tmp_path / "empty"))
    assert list_images(str(tmp_path / "empty"), require=False) == []


def test_annotated_images_default_to_the_coco_layout(tmp_path):
    import json

    from ppdet_ext_deploy.imageio import annotated_images, default_image_dir

    ann = tmp_path / "data" / "annotations" / "instances.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": [{"file_name": "z.jpg"}, {"file_name": "a.jpg"}]}))
    images = str(tmp_path / "data" / "images")
    assert default_image_dir(str(ann)) == images
    assert annotated_images(str(ann)) == [os.path.join(images, "z.jpg"), os.path.join(images, "a.jpg")]
    assert annotated_images(str(ann), "elsewhere") == ["elsewhere/z.jpg", "elsewhere/a.jpg"]
