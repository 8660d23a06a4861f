"""What the service accepts as an image besides DICOM (``serving.dicom``): PNG (8/16-bit), JPEG, TIFF; everything
else is refused clearly, naming what is accepted."""

import io
from pathlib import Path

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
    with pytest.raises(InvalidImage, match="PNG \\(8- or 16-bit\\), JPEG, TIFF or DICOM \\(a Part-10 file\\); got GIF"):
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


def test_a_dicom_data_set_without_its_part_10_header_is_told_that_dicom_is_accepted_as_a_file():
    from pydicom.data import get_testdata_file

    part10 = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert part10[128:132] == b"DICM"
    for stripped in (part10[128:], part10[132:]):  # the preamble gone; the preamble and 'DICM' gone
        with pytest.raises(InvalidImage, match="DICOM data set without its Part-10 header") as refused:
            decode_image(stripped, Limits())
        assert "DICOM is accepted as a Part-10 file" in str(refused.value)
    with pytest.raises(InvalidImage, match="not an image of a known format; send PNG .*DICOM"):
        decode_image(b"plain text, no image at all", Limits())
