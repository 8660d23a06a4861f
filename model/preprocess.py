"""Image preprocessing for the two encoders (reference notes §8); uint8 (3, H, W) tensors in.

SAM branch: resize the longest side to ``img_size``, normalise with ImageNet mean/std in 0..255
units, zero-pad bottom/right to a square. CLIP branch: pad to a square with the mean colour (as
LLaVA does), resize to the tower's size, scale to 0..1 and normalise with CLIP mean/std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAM_MEAN, SAM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (3, H, W) -> (3, h, w), bilinear with antialiasing."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def longest_side_size(original: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) of an (H, W) image resized so its longest side is ``side``."""
    h, w = original
    scale = side / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def sam_input(image: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 (3, H, W) -> normalised, padded float (3, side, side) and the resized (h, w) before padding."""
    size = longest_side_size(tuple(image.shape[-2:]), side)
    x = _resize(image.float(), size)
    x = (x - x.new_tensor(SAM_MEAN)[:, None, None]) / x.new_tensor(SAM_STD)[:, None, None]
    return F.pad(x, (0, side - size[1], 0, side - size[0])), size


def clip_input(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, side, side) for the CLIP vision tower."""
    _, h, w = image.shape
    x = image.float() / 255.0
    if h != w:
        n = max(h, w)
        square = x.new_tensor(CLIP_MEAN)[:, None, None].expand(3, n, n).clone()
        top, left = (n - h) // 2, (n - w) // 2
        square[:, top:top + h, left:left + w] = x
        x = square
    x = _resize(x, (side, side))
    return (x - x.new_tensor(CLIP_MEAN)[:, None, None]) / x.new_tensor(CLIP_STD)[:, None, None]
