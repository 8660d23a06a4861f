"""Phantom chest radiographs (PA): attenuation summed along the beam, bones bright, lungs dark."""

from __future__ import annotations

import numpy as np

from model.data.phantoms.scene import BONE, LESION, ORGAN, Scene, SceneBuilder
from model.data.phantoms.shapes import blob, blur, dilate, ellipse, elliptic_distance, grid, smooth_noise


def xray_chest(size: int, rng: np.random.Generator) -> Scene:
    b = SceneBuilder("X-ray chest", size)
    x, y = grid(size)
    cx = 0.5 + rng.uniform(-0.02, 0.02)
    body_d = elliptic_distance(size, cx, 0.6, 0.48, 0.62)
    density = np.clip(1 - body_d**2, 0, 1) ** 0.5 * 1.2  # soft-tissue thickness
    lungs = []
    for s, sign in (("right", -1), ("left", 1)):
        lx = cx + sign * rng.uniform(0.19, 0.22)
        lm = blob(size, rng, lx, 0.47, 0.15, 0.3, sign * 0.08, wobble=0.04) & (y > 0.16)
        lm &= ~ellipse(size, cx, 0.4, 0.07, 0.5)  # mediastinum
        lungs.append((s, lm))
    heart_m = blob(size, rng, cx + 0.05, 0.62, rng.uniform(0.13, 0.18), 0.12, -0.3, wobble=0.04)
    lung_entities = []
    for s, lm in lungs:
        lm = lm & ~heart_m & (y < 0.78 - 0.03 * np.cos((x - cx) * 8))
        lung = b.add("lung", ORGAN, lm, side=s)
        density[lm] -= 0.75 - 0.1 * smooth_noise(size, rng, 2.5)[lm]
        lung_entities.append(lung)
    b.add("heart", ORGAN, heart_m)
    density[heart_m] += 0.35
    density[ellipse(size, cx, 0.45, 0.05, 0.4)] += 0.25  # mediastinum and spine
    trachea = b.add("trachea", ORGAN, ellipse(size, cx, 0.22, 0.018, 0.12) & (y > 0.12))
    density[trachea.mask] -= 0.35
    for s, sign in (("right", -1), ("left", 1)):
        clav = blob(size, rng, cx + sign * 0.19, 0.19 + rng.uniform(-0.01, 0.01), 0.17, 0.018, sign * -0.2,
                    wobble=0.05)
        b.add("clavicle", BONE, clav, side=s)
        density[clav] += 0.5
        for k in range(7):  # posterior ribs: arcs across the lung field
            ry = 0.22 + k * 0.075
            rib = ellipse(size, cx + sign * 0.12, ry + 0.1, 0.27, 0.13) & ~ellipse(
                size, cx + sign * 0.12, ry + 0.11, 0.265, 0.12)
            rib &= (y < ry + 0.06) & (sign * (x - cx) > 0.03)
            density[rib] += 0.18
    for lung in lung_entities:
        if lung is not None and rng.random() < 0.2:
            ys = np.nonzero(lung.mask)[0]
            eff = lung.mask & (y * size + smooth_noise(size, rng, 5) * 1.5 > np.quantile(ys, 0.8))
            pe = b.add("pleural effusion", LESION, eff, side=lung.side)
            if pe is not None:
                density[eff] += 0.7
                b.carve(lung, pe)
    for lung in lung_entities:
        if lung is None:
            continue
        for _ in range(rng.choice([0, 1, 2], p=[0.35, 0.45, 0.2])):
            ys, xs = np.nonzero(lung.mask)
            i = rng.integers(len(xs))
            r = rng.uniform(0.018, 0.035)
            m = blob(size, rng, (xs[i] + 0.5) / size, (ys[i] + 0.5) / size, r, r, wobble=0.1)
            nodule = b.add("lung nodule", LESION, m & ~dilate(heart_m, 1),
                           side=lung.side, parent=lung)
            if nodule is not None:
                density[nodule.mask] += 0.3
    image = 1 - np.exp(-1.6 * np.clip(blur(density, 0.8), 0, None))
    image = image * 255 * rng.uniform(0.85, 1.0) + rng.normal(0, rng.uniform(2, 5), image.shape)
    return b.finish(image)
