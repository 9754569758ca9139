"""Build a folder of awkward inputs: each kind a user will eventually feed us."""
import cv2
import numpy as np


def make_bad_images(folder, good_jpeg):
    """Returns ``(readable, unreadable)``: file names expected to work / to be reported."""
    folder.mkdir(parents=True, exist_ok=True)
    data = open(good_jpeg, "rb").read()
    (folder / "good.jpg").write_bytes(data)
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    (folder / "empty.jpg").write_bytes(b"")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    alpha = np.dstack([bgr, np.full(bgr.shape[:2], 200, np.uint8)])
    cv2.imwrite(str(folder / "alpha.png"), alpha)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "deep16.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "one_pixel.png"), bgr[:1, :1])
    readable = ["good.jpg", "alpha.png", "gray.png", "deep16.png"]
    unreadable = ["truncated.jpg", "garbage.jpg", "empty.jpg", "one_pixel.png", "missing.jpg"]
    return readable, unreadable
