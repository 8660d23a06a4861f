"""Property tests of image and mask reading (model/data/images.py), with hypothesis.

- ``to_uint8_rgb`` turns any array of a supported shape and dtype (bool, ints, floats with NaN or inf) into
  uint8 (H, W, 3) and refuses other shapes with ValueError.
- ``load_image`` reads every PNG/JPEG/TIFF this project writes or accepts (8- and 16-bit, grey, RGB, RGBA,
  grey+alpha, palette, at any small size) as uint8 (H, W, 3) at the image's size, grey kept grey.
- ``load_mask`` gives bool (H, W) for a 0/255 mask and MaskFormatError for any other decodable image.
- ``mediround data validate`` reports broken, truncated or mutated image and mask files as problems instead
  of raising.

The strategies here (``encoded_images``, ``mutated``) are shared with tests/serving/test_properties.py.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from model.data.images import MaskFormatError, load_image, load_mask, to_uint8_rgb
from model.data.mrmedseg import FormatError
from model.data.validate import validate_dataset

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# (PIL mode, numpy dtype, channels) of the pictures made here; each format takes the modes it can store.
KINDS = {"L": (np.uint8, 1), "I;16": (np.uint16, 1), "RGB": (np.uint8, 3), "RGBA": (np.uint8, 4),
         "LA": (np.uint8, 2), "P": (np.uint8, 1), "1": (bool, 1)}
FORMATS = {"PNG": ["L", "I;16", "RGB", "RGBA", "LA", "P", "1"], "JPEG": ["L", "RGB"],
           "TIFF": ["L", "I;16", "RGB", "RGBA", "LA", "P", "1"]}


def encode(mode: str, fmt: str, width: int, height: int, seed: int) -> bytes:
    """A ``width`` x ``height`` picture of random pixels in ``mode``, saved as ``fmt``."""
    dtype, channels = KINDS[mode]
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is bool:
        picture = Image.fromarray(rng.integers(0, 2, shape).astype(bool))
    elif mode == "LA":
        picture = Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode="LA")
    elif mode == "P":
        picture = Image.fromarray(rng.integers(0, 256, shape, np.uint8)).convert("P")
    elif mode == "I;16":
        picture = Image.fromarray(rng.integers(0, 65536, shape, np.uint16))
    else:
        picture = Image.fromarray(rng.integers(0, 256, shape, np.uint8))
    buf = io.BytesIO()
    picture.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def encoded_images(draw, min_side: int = 1, max_side: int = 40) -> tuple[bytes, str, str, tuple[int, int]]:
    """(bytes, format, mode, (width, height)) of a valid PNG/JPEG/TIFF picture."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    width, height = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    return encode(mode, fmt, width, height, draw(st.integers(0, 2**16))), fmt, mode, (width, height)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes overwritten, inserted or deleted."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        if action == "truncate":
            del data[at:]
        elif action == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


mutated_images = encoded_images().flatmap(lambda image: mutated(image[0]))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grey pixels and whose data is a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


# -- to_uint8_rgb --------------------------------------------------------------------------------
array_dtypes = st.sampled_from([np.bool_, np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])


@FAST
@given(hnp.arrays(array_dtypes, st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                                          st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 4])))))
def test_any_supported_array_becomes_uint8_rgb_of_its_size(array):
    out = to_uint8_rgb(array)
    assert out.dtype == np.uint8 and out.shape == (*array.shape[:2], 3) and out.flags.c_contiguous


@FAST
@given(hnp.arrays(st.sampled_from([np.uint16, np.int32, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=2, max_dims=2, max_side=8)))
@example(np.array([[0.0, 1.0], [np.inf, -np.inf]]))
@example(np.array([[np.nan, 2.0], [np.inf, 3.0]], np.float32))
@example(np.array([[-1.7e308, 1.7e308]]))
def test_wider_data_is_scaled_over_its_finite_range(array):
    out = to_uint8_rgb(array)[..., 0].astype(int)
    finite = np.isfinite(array)
    if finite.any() and array[finite].min() < array[finite].max():
        lo, hi = array[finite].min(), array[finite].max()
        assert out[finite & (array == lo)].min() == 0 and out[finite & (array == hi)].max() == 255
        assert (out[array == np.inf] == 255).all() and (out[array == -np.inf] == 0).all()
    else:
        assert (out == 0).all()


@FAST
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_arrays_of_other_shapes_are_refused_with_value_error(array):
    supported = (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))) and min(array.shape) > 0
    try:
        out = to_uint8_rgb(array)
    except ValueError as e:
        assert not supported and str(e)
    else:
        assert supported and out.shape == (*array.shape[:2], 3)


# -- load_image ----------------------------------------------------------------------------------
@FAST
@given(encoded_images())
def test_every_accepted_kind_of_image_loads_as_uint8_rgb_at_its_size(image):
    data, fmt, mode, (width, height) = image
    out = load_image(data)
    assert out.dtype == np.uint8 and out.shape == (height, width, 3)
    if mode in ("L", "I;16", "LA", "1"):
        assert (out == out[..., :1]).all()  # grey stays grey
    if fmt != "JPEG" and mode in ("L", "LA"):
        grey = np.asarray(Image.open(io.BytesIO(data)).getchannel("L"))
        assert (out[..., 0] == grey).all()  # 8-bit grey is read as it is, alpha dropped


# -- load_mask -----------------------------------------------------------------------------------
@FAST
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, max_side=24)))
def test_a_0_255_mask_loads_as_itself(mask):
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buf, format="PNG")
    assert (load_mask(buf.getvalue()) == mask).all()


@FAST
@given(encoded_images(max_side=16))
def test_any_other_image_is_refused_as_a_mask_with_mask_format_error(image):
    data, fmt, mode, _ = image
    picture = np.asarray(Image.open(io.BytesIO(data)))
    try:
        mask = load_mask(data)
    except MaskFormatError as e:
        assert str(e)
    else:
        assert Image.open(io.BytesIO(data)).mode == "L" and set(np.unique(picture)) <= {0, 255}
        assert (mask == (picture == 255)).all()


# -- validate: broken image and mask files -------------------------------------------------------
@FILES
@given(image=st.one_of(mutated_images, st.binary(max_size=64), encoded_images().map(lambda i: i[0])),
       mask=st.one_of(mutated_images, encoded_images().map(lambda i: i[0])))
@example(image=png_header_only(100_000, 100_000), mask=png_header_only(100_000, 100_000))
@example(image=png_header_only(20, 20), mask=png_header_only(20, 20))
def test_validate_reports_unreadable_images_and_masks_instead_of_raising(tmp_path, image, mask):
    (tmp_path / "image.png").write_bytes(image)
    (tmp_path / "mask.png").write_bytes(mask)
    record = {"task": "segmentation", "conversations": [
        {"from": "human", "value": "[IMAGE256:image.png] Segment the liver."},
        {"from": "gpt", "value": "[MASK-DECODE:mask.png]."}]}
    (tmp_path / "train.json").write_text(json.dumps([record]))
    report = validate_dataset(tmp_path)
    assert all(isinstance(p, FormatError) and p.message for p in report.problems)
