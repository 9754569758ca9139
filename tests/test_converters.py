"""YOLO / VOC -> COCO converters on hand-made cases with known answers."""
import json

import cv2
import numpy as np
import pytest

from ppdet_ext.data import convert_voc, convert_yolo
from ppdet_ext.data.coco_writer import ConversionError


def _img(path, w, h):
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def test_yolo_to_coco(tmp_path):
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    _img(imgs / "a.jpg", 200, 100)
    _img(imgs / "b.png", 50, 50)                              # no label file: no boxes
    (labels / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.95 0.5 0.2 0.2\n0 0.5 0.5 0 0.1\n")
    out = tmp_path / "coco.json"
    stats = convert_yolo.convert(str(imgs), str(labels), ["cat", "dog"], str(out))
    assert stats == {"images": 2, "boxes": 2, "dropped": 1}
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    a = coco["images"][0]
    assert (a["file_name"], a["width"], a["height"]) == ("a.jpg", 200, 100)
    b0, b1 = coco["annotations"]
    assert b0["category_id"] == 2 and b0["bbox"] == pytest.approx([50, 25, 100, 50])
    # clipped at the right edge: cx 0.95 +- 0.1 -> x in [170, 200]
    assert b1["category_id"] == 1 and b1["bbox"] == pytest.approx([170, 40, 30, 20])


@pytest.mark.parametrize("line, msg", [("0 0.5 0.5 0.1", "expected 'class cx cy w h'"),
                                       ("x 0.5 0.5 0.1 0.1", "not numbers"),
                                       ("5 0.5 0.5 0.1 0.1", "class 5 outside")])
def test_yolo_bad_lines_name_file_and_line(tmp_path, line, msg):
    p = tmp_path / "l.txt"
    p.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(ConversionError, match=f"l.txt:2: {msg}"):
        convert_yolo.parse_label_file(str(p), 2)


VOC = """<annotation><filename>{f}</filename><size><width>{w}</width><height>{h}</height>
<depth>3</depth></size>{objs}</annotation>"""
OBJ = ("<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin>"
       "<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def test_voc_to_coco(tmp_path):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    objs = OBJ.format(n="dog", d=0, x1=10, y1=20, x2=110, y2=70) + \
        OBJ.format(n="cat", d=1, x1=0, y1=0, x2=500, y2=40)
    (ann / "1.xml").write_text(VOC.format(f="1.jpg", w=300, h=200, objs=objs))
    (ann / "2.xml").write_text(VOC.format(f="2.jpg", w=64, h=64, objs=""))
    out = tmp_path / "coco.json"
    stats = convert_voc.convert(str(ann), str(tmp_path), str(out))
    assert stats == {"images": 2, "boxes": 2, "dropped": 0}
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]  # sorted when no list
    dog, cat = coco["annotations"]
    assert dog["bbox"] == [10, 20, 100, 50] and dog["category_id"] == 2 and dog["iscrowd"] == 0
    assert cat["bbox"] == [0, 0, 300, 40] and cat["iscrowd"] == 1      # clipped; difficult


def test_voc_errors_name_the_file(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><filename>x.jpg</filename>")
    with pytest.raises(ConversionError, match="bad.xml: not valid XML"):
        convert_voc.convert(str(tmp_path), str(tmp_path), str(tmp_path / "o.json"))
    (tmp_path / "bad.xml").write_text(VOC.format(f="x.jpg", w=10, h=10,
                                                 objs=OBJ.format(n="z", d=0, x1=0, y1=0, x2=5, y2=5)))
    with pytest.raises(ConversionError, match="class 'z' not in the label list"):
        convert_voc.convert(str(tmp_path), str(tmp_path), str(tmp_path / "o.json"), labels=["a"])
