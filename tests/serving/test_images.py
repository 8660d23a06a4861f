"""What the service accepts as an image: PNG (8/16-bit), JPEG, TIFF; everything else is refused clearly."""

import io

import numpy as np
import pytest
from PIL import Image

from serving.errors import ImageTooLarge, InvalidImage
from serving.front.dialogue import Limits, decode_image


def _encode(array, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, array", [
    ("PNG", np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)),
    ("PNG", np.full((30, 40), 7, np.uint8)),
    ("JPEG", np.zeros((30, 40, 3), np.uint8)),
    ("TIFF", np.linspace(0, 4095, 30 * 40).reshape(30, 40).astype(np.uint16)),
])
def test_accepted_images_decode_to_rgb_at_their_size(fmt, array):
    picture = decode_image(_encode(array, fmt), Limits())
    assert picture.shape == (30, 40, 3) and picture.dtype == np.uint8
    if array.dtype == np.uint16:
        assert picture.min() == 0 and picture.max() == 255  # 16-bit is scaled, not truncated


def test_other_formats_and_oversized_images_are_refused_saying_what_is_accepted():
    with pytest.raises(InvalidImage, match="PNG \\(8- or 16-bit\\), JPEG or TIFF; got GIF"):
        decode_image(_encode(np.zeros((4, 4), np.uint8), "GIF"), Limits())
    with pytest.raises(InvalidImage, match="not an image of a known format") as refused:
        decode_image(b"\x89PNG\r\n\x1a\n broken", Limits())
    assert "0x" not in str(refused.value)  # PIL's own text names a Python object's address
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", Limits())
    with pytest.raises(ImageTooLarge, match="sides up to 32 pixels"):
        decode_image(_encode(np.zeros((40, 40), np.uint8), "PNG"), Limits(max_image_side=32))
    with pytest.raises(ImageTooLarge, match="at most 100 are accepted"):
        decode_image(_encode(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8), "PNG"),
                     Limits(max_image_bytes=100))
