"""Image preprocessing for the two encoders (reference notes §8); uint8 (3, H, W) tensors in.

SAM branch: resize the longest side to ``img_size``, normalise with ImageNet mean/std in 0..255
units, zero-pad bottom/right to a square. CLIP branch: pad to a square with the mean colour (as
LLaVA does), resize to the tower's size, scale to 0..1 and normalise with CLIP mean/std. LiteMedSAM
(reference notes §13): resize the longest side to 256 as OpenCV's INTER_AREA does, min-max to 0..1,
zero-pad.

An image larger than an encoder needs is first shrunk in uint8 (``shrink``, to the larger of the encoder's
input side and ``WORKING_SIDE``): float copies of a 16M-pixel image would cost more than the model. The
mask refinement works at a bounded size too (``working_size``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAM_MEAN, SAM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
WORKING_SIDE = 512
"""The longest side an image is worked on at: the largest it was trained and evaluated at (the 512-px CT
slices), so those images are untouched; larger ones are encoded and refined at this size (the picture
itself is kept at full size for the reference crops and the final mask)."""


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


def working_size(original: tuple[int, int], side: int = WORKING_SIDE) -> tuple[int, int]:
    """(h, w) an (H, W) image is worked on at: itself up to ``side`` on its longest side, else shrunk to it."""
    return tuple(original) if max(original) <= side else longest_side_size(original, side)


def shrink(image: torch.Tensor, side: int = WORKING_SIDE) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, h, w) at ``working_size``, antialiased; the image itself when it fits."""
    size = working_size(tuple(image.shape[-2:]), side)
    if size == tuple(image.shape[-2:]):
        return image
    if image.device.type == "cpu":  # torch resizes uint8 directly only on CPU: no float copy of the full image
        return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return _resize(image.float(), size).round().clamp(0, 255).to(torch.uint8)


def sam_input(image: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 (3, H, W) -> normalised, padded float (3, side, side) and the resized (h, w) before padding."""
    size = longest_side_size(tuple(image.shape[-2:]), side)  # of the original: the masks are mapped back by it
    x = _resize(shrink(image, max(side, WORKING_SIDE)).float(), size)
    x = (x - x.new_tensor(SAM_MEAN)[:, None, None]) / x.new_tensor(SAM_STD)[:, None, None]
    return F.pad(x, (0, side - size[1], 0, side - size[0])), size


def clip_input(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, side, side) for the CLIP vision tower."""
    image = shrink(image, max(side, WORKING_SIDE))
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



def _area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of OpenCV's ``INTER_AREA`` along one axis: the share of each output pixel's span
    (in input pixels) that each input pixel covers. Averaging when shrinking, and when enlarging a copy of the
    nearest pixel blended only across the input pixel edges (OpenCV computes the same fractions)."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)  # output pixel i spans edges[i:i + 2]
    j = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], j + 1) - torch.maximum(edges[:-1, None], j)).clamp(min=0)
    return (overlap / (n_in / n_out)).float()


def litemedsam_input(image: torch.Tensor, side: int = 256) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 (3, H, W) -> float (3, side, side) in 0..1 as LiteMedSAM's inference makes it, and the resized (h, w).

    Its inference resizes the uint8 image with OpenCV's ``INTER_AREA`` (rounded back to uint8), min-max scales
    the resized image over all channels, then zero-pads bottom/right.
    """
    size = longest_side_size(tuple(image.shape[-2:]), side)  # of the original: the masks are mapped back by it
    x = shrink(image, max(side, WORKING_SIDE)).float()
    wy, wx = _area_weights(x.shape[-2], size[0]), _area_weights(x.shape[-1], size[1])
    x = (wy.to(x.device) @ x @ wx.to(x.device).T + 0.5).floor()  # (3, h, w), rounded half up as OpenCV does
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo).clamp(min=1e-8)
    return F.pad(x, (0, side - size[1], 0, side - size[0])), size
