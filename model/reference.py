"""Reference information from an earlier round's mask: the masked crop and the normalised box.

Reference notes §4: zero the image outside the mask, crop to the tight box, zero-pad to a square
with the crop at the top-left; the box is [x_min/W, y_min/H, x_max/W, y_max/H]. A mask with
``MIN_REFERENCE_PIXELS`` or fewer foreground pixels falls back to the whole image and its box.
"""

from __future__ import annotations

import numpy as np
from typing_extensions import TypeIs

MIN_REFERENCE_PIXELS = 9  # at or below this, the reference is the whole image


def _usable(mask: np.ndarray | None) -> TypeIs[np.ndarray]:
    return mask is not None and int(np.count_nonzero(mask)) > MIN_REFERENCE_PIXELS


def reference_box(mask: np.ndarray | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Normalised box (4,) float32 of ``mask`` (H, W); the whole image (0, 0, 1, 1) if unusable.

    ``size`` = (H, W) is needed only when ``mask`` is None.
    """
    if not _usable(mask):
        return np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    return np.array([xs.min() / w, ys.min() / h, xs.max() / w, ys.max() / h], dtype=np.float32)


def reference_crop(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The masked object cut out of ``image`` (H, W, C), zero-padded to a square, crop at top-left."""
    if not _usable(mask):
        crop = image
    else:
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.where(mask[..., None], image, 0)[y0:y1, x0:x1]
    side = max(crop.shape[:2])
    square = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    square[: crop.shape[0], : crop.shape[1]] = crop
    return square
