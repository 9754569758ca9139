"""YOLO txt labels -> COCO JSON.

Layout: ``images/x.jpg`` with ``labels/x.txt`` holding ``class cx cy w h`` per line,
normalised to [0, 1]. An image without a label file has no boxes. Boxes are clipped to
the image; boxes that end up empty are dropped and counted.
"""
import os

from ppdet_ext_deploy.imageio import list_images

from .coco_writer import CocoBuilder, ConversionError, image_size


def read_names(path):
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ConversionError(f"{path}: no class names")
    return names


def parse_label_file(path, num_classes):
    """``[(class, cx, cy, w, h)]`` from a YOLO txt file; errors name ``file:line``."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ConversionError(f"{path}:{lineno}: expected 'class cx cy w h', got {line.strip()!r}")
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:])
            except ValueError:
                raise ConversionError(f"{path}:{lineno}: not numbers: {line.strip()!r}") from None
            if not 0 <= cls < num_classes:
                raise ConversionError(f"{path}:{lineno}: class {cls} outside 0..{num_classes - 1}")
            rows.append((cls, cx, cy, w, h))
    return rows


def convert(image_dir, label_dir, names, out_json):
    """Convert and write ``out_json``. Returns stats ``{images, boxes, dropped}``."""
    coco = CocoBuilder(names)
    dropped = 0
    for path in list_images(image_dir, require=False):
        fname = os.path.basename(path)
        width, height = image_size(path)
        image_id = coco.add_image(fname, width, height)
        label = os.path.join(label_dir, os.path.splitext(fname)[0] + ".txt")
        if not os.path.exists(label):
            continue
        for cls, cx, cy, w, h in parse_label_file(label, len(names)):
            x1 = min(max((cx - w / 2) * width, 0.0), width)
            y1 = min(max((cy - h / 2) * height, 0.0), height)
            x2 = min(max((cx + w / 2) * width, 0.0), width)
            y2 = min(max((cy + h / 2) * height, 0.0), height)
            if not coco.add_box(image_id, cls, x1, y1, x2, y2):
                dropped += 1
    coco.write(out_json)
    return {"images": len(coco.images), "boxes": len(coco.annotations), "dropped": dropped}
