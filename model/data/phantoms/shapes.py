"""Raster primitives for phantom anatomy: organic blobs, rings, smooth noise and blur.

Coordinates are normalised to the image side (0..1, x to the right, y down).
"""

from __future__ import annotations

import numpy as np


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each (size, size) in 0..1."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c)


def blob(size: int, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
         angle: float = 0.0, wobble: float = 0.06, harmonics: int = 5) -> np.ndarray:
    """An ellipse whose radius is perturbed by a few random harmonics: an organ-like region."""
    x, y = grid(size)
    x, y = x - cx, y - cy
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (x * ca + y * sa) / rx, (-x * sa + y * ca) / ry
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    edge = np.ones_like(r)
    for k in range(2, harmonics + 2):
        edge += wobble / k * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r <= edge


def ellipse(size: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """A plain filled ellipse."""
    x, y = grid(size)
    x, y = x - cx, y - cy
    ca, sa = np.cos(angle), np.sin(angle)
    return ((x * ca + y * sa) / rx) ** 2 + ((-x * sa + y * ca) / ry) ** 2 <= 1.0


def elliptic_distance(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Normalised elliptic radius: 1.0 on the ellipse, 0 at its centre (for smooth ramps)."""
    x, y = grid(size)
    return np.hypot((x - cx) / rx, (y - cy) / ry)


def _gaussian_transfer(shape: tuple[int, int], sigma_x: float, sigma_y: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * np.pi**2 * ((sigma_x * fx) ** 2 + (sigma_y * fy) ** 2))


def blur(image: np.ndarray, sigma: float, sigma_y: float | None = None) -> np.ndarray:
    """Gaussian blur (FFT, wrap-around) with pixel sigma; anisotropic if ``sigma_y`` is given."""
    if sigma <= 0:
        return image
    pad = int(3 * max(sigma, sigma_y or 0)) + 1
    padded = np.pad(image, pad, mode="edge")
    t = _gaussian_transfer(padded.shape, sigma, sigma if sigma_y is None else sigma_y)
    out = np.fft.irfft2(np.fft.rfft2(padded) * t, s=padded.shape)
    return out[pad:-pad, pad:-pad]


def smooth_noise(size: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-correlated noise with correlation length ``sigma`` pixels."""
    n = rng.normal(size=(size, size))
    t = _gaussian_transfer(n.shape, sigma, sigma)
    s = np.fft.irfft2(np.fft.rfft2(n) * t, s=n.shape)
    return (s - s.mean()) / (s.std() + 1e-9)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a square of the given radius (pixels)."""
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a square of the given radius (pixels)."""
    return ~dilate(~mask, radius)
