"""Reference information from an earlier round's mask: the masked crop and the normalised box.

Reference notes §4: zero the image outside the mask, crop to the tight box, zero-pad to a square
with the crop at the top-left; the box is [x_min/W, y_min/H, x_max/W, y_max/H]. A mask with
``MIN_REFERENCE_PIXELS`` or fewer foreground pixels falls back to the whole image and its box.
"""

from __future__ import annotations

import re

import numpy as np

MIN_REFERENCE_PIXELS = 9  # at or below this, the reference is the whole image


def _usable(mask: np.ndarray | None) -> bool:
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


class ReferenceRoundError(ValueError):
    """A question or request that refers to a round the dialogue does not have."""


_EXPLICIT = re.compile(r"\b(?:round|instance)\s*#?\s*(\d+)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:it|its)\b", re.IGNORECASE)


def resolve_reference(question: str, rounds_so_far: int) -> int | None:
    """The 0-based round a question refers to, or None when it names its target outright.

    "round N" / "instance N" (1-based, as users say it) win; otherwise "it" / "its" mean the
    previous round (appendix D.1), except in a follow-up after a question mark ("Where is the liver?
    Please segment it.", where "it" is the liver). A reference to a round that does not exist raises.
    """
    match = _EXPLICIT.search(question)
    if match:
        n = int(match.group(1))
        if not 1 <= n <= rounds_so_far:
            have = f"rounds 1..{rounds_so_far}" if rounds_so_far else "no earlier rounds"
            raise ReferenceRoundError(f"the question refers to round {n}, but the dialogue has {have}")
        return n - 1
    if _PRONOUN.search(question.split("?")[0]):
        if rounds_so_far == 0:
            raise ReferenceRoundError("the question refers to an earlier result ('it'/'its'), but this is the "
                                      "first round; name the structure to segment")
        return rounds_so_far - 1
    return None
