"""Shared pieces of the dataset converters: a COCO JSON builder and size probing."""
import json
import os

from PIL import Image


class ConversionError(ValueError):
    """Bad source annotation; the message names the file (and line)."""


def image_size(path):
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise ConversionError(f"{path}: cannot read image header ({e})") from None


class CocoBuilder:
    """Accumulates images/annotations with sequential ids and writes COCO JSON."""

    def __init__(self, class_names):
        self.categories = [{"id": i + 1, "name": n, "supercategory": "none"}
                           for i, n in enumerate(class_names)]
        self.images, self.annotations = [], []

    def add_image(self, file_name, width, height):
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name,
                            "width": int(width), "height": int(height)})
        return image_id

    def add_box(self, image_id, class_index, x1, y1, x2, y2, iscrowd=0):
        """Add an xyxy box (pixels); returns False (and adds nothing) if degenerate."""
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            return False
        self.annotations.append({
            "id": len(self.annotations) + 1, "image_id": image_id,
            "category_id": int(class_index) + 1, "bbox": [x1, y1, w, h],
            "area": w * h, "iscrowd": int(iscrowd)})
        return True

    def to_dict(self):
        return {"images": self.images, "annotations": self.annotations,
                "categories": self.categories}

    def write(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)
