"""Phantom MR brain slices, axial, T2/FLAIR-like contrast with Rician noise and a bias field."""

from __future__ import annotations

import numpy as np

from model.data.phantoms.scene import BONE, LESION, ORGAN, SUBSTRUCTURE, Scene, SceneBuilder
from model.data.phantoms.shapes import blob, blur, dilate, ellipse, erode, grid, smooth_noise


def mr_brain(size: int, rng: np.random.Generator) -> Scene:
    b = SceneBuilder("MR brain", size)
    img = np.zeros((size, size))
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)
    rx, ry = rng.uniform(0.33, 0.37), rng.uniform(0.41, 0.45)
    head = blob(size, rng, cx, cy, rx + 0.05, ry + 0.05, wobble=0.02)
    skull_outer = blob(size, rng, cx, cy, rx + 0.03, ry + 0.03, wobble=0.02)
    brain_m = blob(size, rng, cx, cy, rx, ry, wobble=0.03)
    img[head] = 190  # scalp fat
    b.add("skull", BONE, skull_outer & ~brain_m)
    img[skull_outer & ~brain_m] = 25
    csf_rim = brain_m & ~erode(brain_m, 2)
    brain = b.add("brain", ORGAN, brain_m)
    x, _ = grid(size)
    gyri = smooth_noise(size, rng, 1.3)  # folds of the cortical ribbon
    depth = np.zeros((size, size))
    inner = brain_m.copy()
    for _ in range(int(size * 0.05)):
        inner = erode(inner, 1)
        depth += inner
    grey = brain_m & (depth < size * 0.02 + 3 * np.maximum(gyri, 0))
    img[brain_m] = 100 + 4 * smooth_noise(size, rng, 3)[brain_m]
    img[grey] = 145
    img[csf_rim] = 220
    falx = brain_m & (np.abs(x - cx) < 0.006)
    img[falx] = 200
    hemispheres = {}
    for s, half in (("right", x < cx), ("left", x >= cx)):
        hemispheres[s] = b.add("cerebral hemisphere", ORGAN, brain_m & half & ~falx, side=s, parent=brain)
    tumours = []
    n_tumours = rng.choice([1, 2], p=[0.65, 0.35])
    sides = list(rng.permutation(["right", "left"]))[:n_tumours]
    for s in sides:
        sign = -1 if s == "right" else 1
        tx, ty = cx + sign * rng.uniform(0.12, 0.2), cy + rng.uniform(-0.22, 0.22)
        r = rng.uniform(0.06, 0.1) / (1.3 if n_tumours == 2 else 1.0)
        whole = blob(size, rng, tx, ty, r * 1.3, r * 1.15, rng.uniform(0, np.pi), wobble=0.15)
        tumour = b.add("brain tumor", LESION, whole, side=s, parent=hemispheres[s])
        if tumour is None:
            continue
        core_m = blob(size, rng, tx, ty, r * 0.65, r * 0.6, rng.uniform(0, np.pi), wobble=0.15)
        core = b.add("tumor core", SUBSTRUCTURE, core_m, side=s, parent=tumour)
        img[tumour.mask] = 200 + smooth_noise(size, rng, 2)[tumour.mask] * 10  # oedema
        if core is not None:
            img[core.mask] = 150 + smooth_noise(size, rng, 1.5)[core.mask] * 18
            nec = b.add("necrotic core", SUBSTRUCTURE, ellipse(size, tx, ty, r * 0.3, r * 0.28),
                        side=s, parent=core)
            if nec is not None:
                img[nec.mask] = 235
        tumours.append(tumour)
    for s, sign in (("right", -1), ("left", 1)):
        squeeze = 0.5 if any(t.side == s for t in tumours) else 1.0
        vx, vy = cx + sign * 0.05, cy + rng.uniform(-0.03, 0.02)
        v = ellipse(size, vx, vy, 0.035 * squeeze + 0.01, 0.14) & ~ellipse(size, vx + sign * 0.035, vy, 0.03, 0.12)
        v &= ~dilate(falx, 1)
        for t in tumours:
            v &= ~dilate(t.mask, 2)
        ventricle = b.add("lateral ventricle", SUBSTRUCTURE, v, side=s, parent=hemispheres[s])
        if ventricle is not None:
            img[ventricle.mask] = 225
    bias = np.exp(0.12 * smooth_noise(size, rng, size / 4))
    sigma = rng.uniform(4, 9)
    signal = blur(img, 0.7) * bias
    image = np.hypot(signal + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    return b.finish(image)
