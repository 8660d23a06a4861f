"""The picture a canvas can show: a session's stored image as an 8-bit PNG, windowed by the server.

A canvas holds 8 bits per channel, so a 16-bit image's window (level = centre, and width) is applied here, to the
stored values: values from ``centre - width / 2`` to ``centre + width / 2`` span black to white (DICOM's
LINEAR_EXACT, no modality LUT: a PNG has none). Without a window an image is shown over its full range of values,
min to max, which is also what the model was given (``model.data.images.to_uint8_rgb``).

DICOM sessions store only the picture rendered when they were opened (8-bit, windowed by ``DicomOptions``): their
window is chosen when opening, and windowing them here only re-levels those 256 grey levels.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import grpc
import numpy as np
from PIL import Image

from serving.http.errors import GatewayError


@dataclass(frozen=True)
class Levels:
    """What window controls an image wants: its bit depth and range of stored values."""

    bits: int
    """8, or 16 for 16-bit greyscale (32 for a float or 32-bit TIFF)."""
    channels: int
    minimum: float
    maximum: float

    @property
    def windowable(self) -> bool:
        """More levels than a canvas shows: the page offers window/level, not only brightness/contrast."""
        return self.bits > 8

    def to_json(self) -> dict:
        return asdict(self) | {"windowable": self.windowable}


def _pixels(data: bytes) -> np.ndarray:
    """(H, W) or (H, W, 3) stored values: palette and alpha images become RGB (alpha is not part of the picture)."""
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
        image = image.convert("RGB")
    return np.asarray(image)


def _bits(a: np.ndarray) -> int:
    if a.dtype == np.uint8:
        return 8
    if a.dtype.kind in "ui" and (a.dtype.itemsize == 2 or (a.size and a.min() >= 0 and a.max() <= 65535)):
        return 16  # Pillow may read a 16-bit PNG as 32-bit integers
    return 32


def levels(data: bytes) -> Levels:
    a = _pixels(data)
    values = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return Levels(bits=_bits(a), channels=1 if a.ndim == 2 else a.shape[2], minimum=lo, maximum=hi)


def render(data: bytes, center: float | None = None, width: float | None = None) -> bytes:
    """``data`` (PNG, JPEG, TIFF) as an 8-bit PNG: windowed by ``center`` and ``width`` (both or neither), else
    8-bit images as they are and deeper ones over their full range."""
    if (center is None) != (width is None):
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "a window needs both center and width")
    if width is not None and not width > 0:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"the window width must be greater than 0; got {width}")
    a = _pixels(data)
    if center is None and a.dtype == np.uint8:
        return _png(a)
    if center is None or width is None:  # neither (both or neither are given)
        found = levels(data)
        lo, hi = found.minimum, max(found.maximum, found.minimum + 1.0)
    else:
        lo, hi = center - width / 2, center + width / 2
    values = np.nan_to_num(a.astype(np.float64), nan=lo)
    return _png((np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).round().astype(np.uint8))


def _png(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format="PNG")
    return buffer.getvalue()
