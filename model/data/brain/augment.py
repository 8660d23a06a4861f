"""Training views of a real-brain slice, so a model trained on one brain does not memorise it.

A :class:`View` is one drawn augmentation: a left-right flip, a small rotation and scale about the
image centre (the same for the image and every mask), and intensity changes (contrast, gamma, a smooth
multiplicative bias field, Rician noise) on the image only. The flip mirrors the patient: on axial
and coronal slices the image is mirrored, on sagittal ones it stays as it is (the mirrored brain's
slice at the other hemisphere looks the same), and in every orientation the words "left" and
"right" swap in the questions and in structure names, so ``left putamen`` still names the structure
on the image's right (radiological view).

Views are a pure function of (seed, image file, variant): with ``variants`` views per image the
frozen-encoder caches of training (keyed on the item's file names) stay valid and bounded; variant 0
is the original slice.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace

import numpy as np

from model.data.brain.scene import SOURCE
from model.data.mrmedseg import Conversation, Round
from model.data.phantoms.shapes import smooth_noise


@dataclass(frozen=True)
class BrainAugment:
    """Ranges the views are drawn from."""

    variants: int = 8
    """Distinct views per image (variant 0 is the original); bounds the training caches."""
    flip: float = 0.5
    """Probability of a left-right flip."""
    rotate_deg: float = 8.0
    """Rotation drawn uniformly in +-rotate_deg degrees."""
    scale: tuple[float, float] = (0.92, 1.08)
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.8, 1.2)
    """Contrast factor about the image mean, with a brightness shift of up to 5% of the range."""
    bias: float = 0.2
    """Standard deviation of the log of the smooth multiplicative bias field."""
    noise: tuple[float, float] = (0.0, 0.04)
    """Rician noise sigma, in units of the image range (0..1)."""
    seed: int = 0

    def __post_init__(self):
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {self.flip}")


@dataclass(frozen=True)
class View:
    """One drawn augmentation of one image."""

    flip: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    bias: float = 0.0
    noise: float = 0.0
    noise_seed: int = 0

    @property
    def geometric(self) -> bool:
        return self.angle_deg != 0.0 or self.scale != 1.0

    @property
    def changes_intensity(self) -> bool:
        return (self.gamma, self.contrast, self.brightness, self.bias, self.noise) != (1.0, 1.0, 0.0, 0.0, 0.0)


def is_brain(conv: Conversation) -> bool:
    """Whether a record is a real-brain slice (the generator marks them with their ``source``)."""
    return conv.extra.get("source") == SOURCE


def draw_view(config: BrainAugment, image_file: str, variant: int) -> View:
    """The view ``variant`` of ``image_file``: the same arguments always give the same view."""
    if variant == 0:
        return View()
    rng = np.random.default_rng([config.seed, zlib.crc32(image_file.encode()), variant])
    return View(flip=bool(rng.random() < config.flip), angle_deg=float(rng.uniform(-1, 1) * config.rotate_deg),
                scale=float(rng.uniform(*config.scale)), gamma=float(np.exp(rng.uniform(*np.log(config.gamma)))),
                contrast=float(rng.uniform(*config.contrast)), brightness=float(rng.uniform(-0.05, 0.05)),
                bias=config.bias, noise=float(rng.uniform(*config.noise)), noise_seed=int(rng.integers(2**31)))


_SIDE_WORD = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_sides(text: str) -> str:
    """``text`` with the patient's sides exchanged: "left" <-> "right" as whole words, case kept."""
    return _SIDE_WORD.sub(lambda m: _SWAP[m.group(1)], text)


def _warp_coordinates(h: int, w: int, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Source (y, x) of every output pixel: rotate by ``angle_deg`` and scale by ``scale`` about the centre."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.deg2rad(view.angle_deg)
    dy, dx = (yy - cy) / view.scale, (xx - cx) / view.scale  # output -> source is the inverse map
    return cy + np.cos(a) * dy - np.sin(a) * dx, cx + np.sin(a) * dy + np.cos(a) * dx


def _bilinear(image: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """``image`` (H, W) float sampled at (sy, sx); outside is 0 (air)."""
    h, w = image.shape
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    padded = np.pad(image, 1)
    out = np.zeros_like(sy)
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = np.clip(y0 + oy + 1, 0, h + 1), np.clip(x0 + ox + 1, 0, w + 1)
            out += wy * wx * padded[yi, xi]
    return out


def _nearest(masks: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """``masks`` (R, H, W) bool sampled at the nearest source pixel; outside is background."""
    _, h, w = masks.shape
    yi, xi = np.round(sy).astype(int), np.round(sx).astype(int)
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    out = masks[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return out & inside


def apply_view(view: View, image: np.ndarray, masks: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, 3) uint8 and ``masks`` (R, H, W) bool seen through ``view``."""
    grey = image[..., 0].astype(np.float64) / 255.0  # brain slices are grey: one channel carries them
    if view.flip and orientation != "sagittal":
        grey, masks = grey[:, ::-1], masks[:, :, ::-1]
    if view.geometric:
        sy, sx = _warp_coordinates(*grey.shape, view)
        grey, masks = _bilinear(grey, sy, sx), _nearest(masks, sy, sx)
    if view.changes_intensity:
        rng = np.random.default_rng(view.noise_seed)
        h, w = grey.shape
        grey = np.clip((grey - grey.mean()) * view.contrast + grey.mean() + view.brightness, 0, 1) ** view.gamma
        side = max(h, w)  # the field varies over a quarter of the image, like a receive coil's profile
        grey = grey * np.exp(view.bias * smooth_noise(side, rng, side / 4)[:h, :w])
        grey = np.hypot(grey + rng.normal(0, view.noise, grey.shape), rng.normal(0, view.noise, grey.shape))
    out = np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2)), np.ascontiguousarray(masks)


def training_view(config: BrainAugment, image_file: str, rng: np.random.Generator, image: np.ndarray,
                  masks: np.ndarray, orientation: str) -> tuple[int, View, np.ndarray, np.ndarray]:
    """Draw a variant of ``image_file`` with ``rng`` and apply it: (variant, view, image, masks).

    A view that would empty a mask (rotated or scaled out of the image) falls back to variant 0.
    """
    variant = int(rng.integers(config.variants))
    view = draw_view(config, image_file, variant)
    seen, seen_masks = apply_view(view, image, masks, orientation)
    if variant and not seen_masks.any(axis=(1, 2)).all():
        return 0, View(), image, masks
    return variant, view, seen, seen_masks


def view_rounds(view: View, rounds: list[Round]) -> list[Round]:
    """The rounds as the view's patient would be asked about: sides swapped when it is flipped."""
    if not view.flip:
        return rounds
    return [replace(r, question=swap_sides(r.question), answer=swap_sides(r.answer)) for r in rounds]


def view_names(view: View, names: list[str]) -> list[str]:
    """Structure names (e.g. from mask file names) of the flipped patient."""
    return [swap_sides(n) for n in names] if view.flip else names


def cache_key(path: str, variant: int) -> str:
    """The name a view's file goes by in caches: the file itself for variant 0, ``<path>#aug<n>`` otherwise."""
    return path if variant == 0 else f"{path}#aug{variant}"
