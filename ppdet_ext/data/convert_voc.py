"""Pascal VOC XML -> COCO JSON.

Coordinates are taken as written (``xmin..xmax`` in pixels, as ppdet's VOC loader reads
them); ``difficult`` objects are kept with ``iscrowd: 1`` so COCO eval ignores them, as
VOC eval does. Class names come from ``--labels`` (one per line) or, if absent, from
the sorted set of names found.
"""
import os
import xml.etree.ElementTree as ET

from .coco_writer import CocoBuilder, ConversionError, image_size


def parse_xml(path):
    """``(filename, width, height, [(name, x1, y1, x2, y2, difficult)])``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ConversionError(f"{path}: not valid XML ({e})") from None
    fname = (root.findtext("filename") or "").strip()
    if not fname:
        raise ConversionError(f"{path}: missing <filename>")
    size = root.find("size")
    width = int(float(size.findtext("width"))) if size is not None else 0
    height = int(float(size.findtext("height"))) if size is not None else 0
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise ConversionError(f"{path}: object {i} lacks <name> or <bndbox>")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ConversionError(f"{path}: object {i} ({name}) has a malformed <bndbox>") from None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name, *coords, difficult))
    return fname, width, height, objects


def convert(ann_dir, image_dir, out_json, labels=None):
    """Convert every ``*.xml`` in ``ann_dir``; returns stats ``{images, boxes, dropped}``."""
    parsed = [parse_xml(os.path.join(ann_dir, f))
              for f in sorted(os.listdir(ann_dir)) if f.endswith(".xml")]
    names = list(labels) if labels else sorted({o[0] for p in parsed for o in p[3]})
    index = {n: i for i, n in enumerate(names)}
    coco = CocoBuilder(names)
    dropped = 0
    for fname, width, height, objects in parsed:
        if width <= 0 or height <= 0:
            width, height = image_size(os.path.join(image_dir, fname))
        image_id = coco.add_image(fname, width, height)
        for name, x1, y1, x2, y2, difficult in objects:
            if name not in index:
                raise ConversionError(f"{fname}: class '{name}' not in the label list")
            x1, x2 = (min(max(v, 0.0), width) for v in (x1, x2))
            y1, y2 = (min(max(v, 0.0), height) for v in (y1, y2))
            if not coco.add_box(image_id, index[name], x1, y1, x2, y2, iscrowd=difficult):
                dropped += 1
    coco.write(out_json)
    return {"images": len(coco.images), "boxes": len(coco.annotations), "dropped": dropped}
