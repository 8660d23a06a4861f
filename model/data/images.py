"""Reading images and masks from files or bytes into the arrays the rest of the code expects.

Images become ``uint8 (H, W, 3)`` whatever they were (grey, RGB, RGBA, palette, 8/16-bit,
float); masks become ``bool (H, W)`` and must be single-channel 8-bit with values in {0, 255}.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ImageSource = str | Path | bytes | Image.Image | np.ndarray


class MaskFormatError(ValueError):
    """A mask file that is not a single-channel 0/255 PNG."""


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def to_uint8_rgb(array: np.ndarray) -> np.ndarray:
    """Normalise an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any dtype to uint8 RGB.

    Non-uint8 data (16-bit, float) is min-max scaled to 0..255 over its finite values (NaN becomes 0,
    infinities the ends of the range); alpha is dropped.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    elif a.ndim != 2:
        raise ValueError(f"an image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"an image must be at least 1x1, got {a.shape[1]}x{a.shape[0]}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            # halves first: hi - lo itself may overflow for float64 data near its limits
            a = np.zeros_like(a) if hi <= lo else (np.clip(a, lo, hi) / 2 - lo / 2) * (255.0 / (hi / 2 - lo / 2))
        a = np.nan_to_num(a).round().clip(0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def load_image(source: ImageSource) -> np.ndarray:
    """Any common image (path, bytes, PIL image or array) as uint8 (H, W, 3)."""
    if isinstance(source, np.ndarray):
        return to_uint8_rgb(source)
    img = _open(source)
    if img.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGBA" if img.mode in ("P", "PA") else "RGB")
    if img.mode == "LA":
        img = img.getchannel("L")
    return to_uint8_rgb(np.array(img))


def load_mask(source: str | Path | bytes) -> np.ndarray:
    """A single-channel 0/255 mask as bool (H, W); anything else raises MaskFormatError."""
    img = _open(source)
    if img.mode != "L":
        raise MaskFormatError(f"mask must be single-channel 8-bit (PNG mode 'L') with values 0/255, "
                              f"got mode {img.mode!r}")
    a = np.array(img)
    values = set(np.unique(a).tolist())
    if not values <= {0, 255}:
        shown = sorted(values)[:6]
        hint = " (a 0/1 mask would read as empty: foreground must be 255)" if values <= {0, 1} else ""
        raise MaskFormatError(f"mask values must be 0 or 255, found {shown}{hint}")
    return a == 255


def save_mask(mask: np.ndarray, path: str | Path) -> None:
    """Write a boolean mask as a single-channel 0/255 PNG."""
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path, optimize=True)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x_min, y_min, x_max, y_max) of the foreground in pixels, inclusive; None if empty."""
    # the rows and columns that hold any foreground: two passes over the mask, no index arrays of its pixels
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
