"""Robust image reading: every awkward input is handled or reported by name."""
import os

import numpy as np
import pytest

from bad_images import make_bad_images
from conftest import COCO_MINI
from ppdet_ext_deploy.imageio import list_images
from ppdet_ext.data.image_io import ImageReadError, read_image

GOOD = list_images(os.path.join(COCO_MINI, "images"), 1)[0]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    return d, *make_bad_images(d, GOOD)


def test_readable_variants_become_rgb8_of_the_same_size(bad_dir):
    d, readable, _ = bad_dir
    ref = read_image(str(d / "good.jpg"))
    for name in readable:
        img = read_image(str(d / name))
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert img.shape == ref.shape, name
    # 16-bit scaled back to the same 8-bit values, alpha dropped
    np.testing.assert_array_equal(read_image(str(d / "deep16.png")), read_image(str(d / "alpha.png")))
    gray = read_image(str(d / "gray.png"))
    assert (gray[..., 0] == gray[..., 1]).all()


@pytest.mark.parametrize("name, problem", [
    ("truncated.jpg", "truncated JPEG"), ("garbage.jpg", "cannot decode"),
    ("empty.jpg", "empty"), ("one_pixel.png", "too small"), ("missing.jpg", "cannot read file"),
])
def test_unreadable_are_reported_with_the_file_name(bad_dir, name, problem):
    d, _, _ = bad_dir
    with pytest.raises(ImageReadError) as e:
        read_image(str(d / name))
    assert name in str(e.value) and problem in str(e.value)


def test_directory_is_reported(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read file"):
        read_image(str(tmp_path))
