"""Draw detections onto an RGB image and save it."""
import cv2
import numpy as np


def _color(class_id):
    rng = np.random.RandomState(class_id * 7 + 3)
    return tuple(int(c) for c in rng.randint(64, 256, 3))


def draw_detections(rgb, detections, out_path):
    """``detections``: dicts with ``class_id``, ``label``, ``score``, ``bbox_xyxy``."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for det in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in det["bbox_xyxy"])
        color = _color(det["class_id"])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 2)
        text = f"{det['label']} {det['score']:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(img, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, y1), color, -1)
        cv2.putText(img, text, (x1 + 1, max(th, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(out_path, img):
        raise OSError(f"could not write {out_path}")
