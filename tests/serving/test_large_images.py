"""A large image through the model steps: its round's mask is a PNG of its own size, the box is the mask's,
and the mask is the one its 512-px original gets, upscaled."""

import io

import numpy as np
import pytest
from PIL import Image

from model.config import SHIPPED_TINY
from model.data.real import REAL_SLICES
from serving.messages import Encoding, MaskRequest, ReasonRequest, decode_mask
from serving.replicas.steps import ImageEncoderStep, ReasonerStep, SegmenterStep


@pytest.fixture(scope="module")
def steps():
    checkpoint = str(SHIPPED_TINY)
    return ImageEncoderStep(checkpoint), ReasonerStep(checkpoint), SegmenterStep(checkpoint)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _round(steps, name: str, png: bytes, question: str):
    encoder, reasoner, segmenter = steps
    encoded = encoder.compute([(name, png)])[0]
    encoding = Encoding(encoded, False, name)
    turn = reasoner.reason(ReasonRequest(None, encoding, question, None, []))
    assert turn.seg_vector is not None
    return segmenter.decode([MaskRequest(encoding, turn.seg_vector)])[0]


@pytest.mark.slow
def test_a_4096_px_round_gets_a_full_size_mask_that_matches_the_original_upscaled(steps):
    original = Image.open(REAL_SLICES / "images" / "amos_0006_90.png").convert("RGB")
    small = _round(steps, "small", _png(original), "Segment the left lung.")
    large = _round(steps, "large", _png(original.resize((4096, 4096), Image.BICUBIC)), "Segment the left lung.")

    assert Image.open(io.BytesIO(large.mask_png)).mode == "L"
    mask, expected = decode_mask(large.mask_png), decode_mask(small.mask_png).repeat(8, 0).repeat(8, 1)
    assert mask.shape == (4096, 4096) and expected.any()
    assert 2 * (mask & expected).sum() / (mask.sum() + expected.sum()) > 0.95
    ys, xs = np.nonzero(mask)
    assert large.box == (xs.min(), ys.min(), xs.max(), ys.max())
