"""Phantom thyroid ultrasound, transverse, linear probe: speckle, anechoic vessels, depth attenuation."""

from __future__ import annotations

import numpy as np

from model.data.phantoms.scene import LESION, ORGAN, SUBSTRUCTURE, VESSEL, Scene, SceneBuilder
from model.data.phantoms.shapes import blob, blur, ellipse, erode, grid, smooth_noise


def us_thyroid(size: int, rng: np.random.Generator) -> Scene:
    b = SceneBuilder("US thyroid", size)
    x, y = grid(size)
    echo = 0.35 + 0.1 * smooth_noise(size, rng, 4)  # background tissue echogenicity
    echo[y < 0.02] = 0.9  # skin line
    strap = (y > 0.1) & (y < 0.2 + 0.03 * np.cos((x - 0.5) * 6))
    echo[strap] = 0.18  # strap muscles
    cx = 0.5 + rng.uniform(-0.03, 0.03)
    trachea_m = ellipse(size, cx, 0.42, 0.1, 0.11)
    b.add("trachea", ORGAN, trachea_m)
    echo[trachea_m] = 0.05
    ring = ellipse(size, cx, 0.42, 0.1, 0.11) & ~ellipse(size, cx, 0.43, 0.09, 0.1) & (y < 0.4)
    echo[ring] = 1.2
    echo[(np.abs(x - cx) < 0.08) & (y > 0.45)] *= 0.2  # acoustic shadow
    isthmus = b.add("thyroid isthmus", SUBSTRUCTURE, ellipse(size, cx, 0.27, 0.11, 0.035))
    lobes = []
    level = 0.8 + rng.uniform(-0.08, 0.08)
    for s, sign in (("right", -1), ("left", 1)):
        lx = cx + sign * rng.uniform(0.2, 0.24)
        lm = blob(size, rng, lx, 0.36, rng.uniform(0.1, 0.13), rng.uniform(0.13, 0.16), sign * 0.3, wobble=0.08)
        lm &= ~trachea_m
        lobe = b.add("thyroid lobe", ORGAN, lm, side=s)
        echo[lm] = level + 0.04 * smooth_noise(size, rng, 1.5)[lm]
        lobes.append(lobe)
        ca = ellipse(size, lx + sign * 0.13, 0.46, 0.055, 0.055)
        carotid = b.add("carotid artery", VESSEL, ca, side=s)
        b.carve(lobe, carotid)
        echo[ca] = 0.02
        echo[(np.abs(x - lx - sign * 0.13) < 0.05) & (y > 0.51)] *= 1.3  # posterior enhancement
        jv = blob(size, rng, lx + sign * 0.26, 0.4, 0.06, 0.035, wobble=0.15)
        b.add("jugular vein", VESSEL, jv & ~ca, side=s)
        echo[jv & ~ca] = 0.04
    if isthmus is not None:
        echo[isthmus.mask] = level
        for lobe in lobes:
            b.carve(isthmus, lobe)
    for lobe in lobes:
        if lobe is None:
            continue
        for _ in range(rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25])):
            inner = erode(lobe.mask, 4)
            ys, xs = np.nonzero(inner)
            if len(xs) == 0:
                break
            i = rng.integers(len(xs))
            r = rng.uniform(0.025, 0.05)
            m = blob(size, rng, (xs[i] + 0.5) / size, (ys[i] + 0.5) / size, r * 1.2, r, wobble=0.12)
            nodule = b.add("thyroid nodule", LESION, m, side=lobe.side, parent=lobe)
            if nodule is not None:
                kind = rng.choice(["hypoechoic", "cyst", "halo"])
                echo[nodule.mask] = {"hypoechoic": 0.3, "cyst": 0.03, "halo": level + 0.15}[kind]
                if kind == "halo":
                    echo[nodule.mask & ~erode(nodule.mask, 1)] = 0.08
    gain = np.clip(1.1 - 0.6 * y, 0.3, None)  # depth attenuation after time-gain compensation
    speckle = blur(rng.rayleigh(1.0, echo.shape), 0.9, 0.5) / 1.2
    image = 255 * np.clip(echo * gain * speckle, 0, 1.3) / 1.3
    return b.finish(image)
