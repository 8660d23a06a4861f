"""Phantom CT slices: abdomen and chest, axial, drawn in Hounsfield units then windowed."""

from __future__ import annotations

import numpy as np

from model.data.phantoms.scene import BONE, LESION, ORGAN, SUBSTRUCTURE, TISSUE, VESSEL, Scene, SceneBuilder
from model.data.phantoms.shapes import blob, blur, dilate, ellipse, erode, smooth_noise


def _window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    return (hu - (level - width / 2)) / width * 255.0


def _paint(hu: np.ndarray, mask: np.ndarray | None, value: float, rng: np.random.Generator,
           texture: float = 6.0, grain: float = 3.0) -> None:
    """Fill ``mask`` with ``value`` HU plus a smooth organ texture."""
    if mask is None or not mask.any():
        return
    tex = smooth_noise(hu.shape[0], rng, grain) * texture
    hu[mask] = value + tex[mask]


def _point_inside(mask: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[float, float] | None:
    ys, xs = np.nonzero(erode(mask, margin))
    if len(xs) == 0:
        return None
    i = rng.integers(len(xs))
    return (xs[i] + 0.5) / mask.shape[1], (ys[i] + 0.5) / mask.shape[0]


def _lesions(b: SceneBuilder, hu, rng, organ, count: int, category: str, radius: tuple[float, float],
             value: float, texture: float = 8.0, exclude=()) -> list:
    """Drop ``count`` roundish lesions inside ``organ``, apart from each other."""
    found = []
    if organ is None:
        return found
    free = organ.mask.copy()
    for e in exclude:
        free &= ~e.mask
    for _ in range(count):
        r = rng.uniform(*radius)
        at = _point_inside(free, rng, max(2, int(r * b.size) + 1))
        if at is None:
            break
        m = blob(b.size, rng, at[0], at[1], r, r * rng.uniform(0.75, 1.0), rng.uniform(0, np.pi), wobble=0.12)
        lesion = b.add(category, LESION, m, side=organ.side, parent=organ)
        if lesion is not None:
            _paint(hu, lesion.mask, value, rng, texture, grain=1.5)
            free &= ~dilate(lesion.mask, 2)
            found.append(lesion)
    return found


def _body(b: SceneBuilder, hu, rng, cx, cy, rx, ry):
    """Skin-to-cavity layers; returns (body mask, inner cavity mask)."""
    body = blob(b.size, rng, cx, cy, rx, ry, wobble=0.03)
    fat = rng.uniform(0.025, 0.06)
    inner = blob(b.size, rng, cx, cy + 0.005, rx - fat, ry - fat * 0.8, wobble=0.03) & body
    cavity = ellipse(b.size, cx, cy + 0.005, rx - fat - 0.025, ry - fat * 0.8 - 0.022) & inner
    _paint(hu, body, -100, rng, 10)
    _paint(hu, inner, 50, rng, 8)
    b.add("subcutaneous fat", TISSUE, body & ~inner)
    return body, cavity


def _spine(b: SceneBuilder, hu, rng, cx, vy):
    """Vertebral body and arch with the spinal canal; returns (vertebra, canal)."""
    r = rng.uniform(0.055, 0.07)
    vbody = blob(b.size, rng, cx, vy, r, r * 0.9, wobble=0.04)
    canal_y = vy + r + 0.025
    canal = ellipse(b.size, cx, canal_y, 0.024, 0.02)
    arch = (ellipse(b.size, cx, canal_y, 0.045, 0.04) | ellipse(b.size, cx, canal_y + 0.04, 0.012, 0.03)) & ~canal
    vertebra = b.add("vertebra", BONE, vbody | arch)
    hu[vbody] = 350 + smooth_noise(b.size, rng, 1.5)[vbody] * 60
    hu[erode(vbody, 1) ^ vbody] = 800
    hu[arch] = 700
    _paint(hu, canal, 15, rng, 4)
    return vertebra, b.add("spinal canal", SUBSTRUCTURE, canal, parent=vertebra, inside_parent=False)


def ct_abdomen(size: int, rng: np.random.Generator) -> Scene:
    b = SceneBuilder("CT abdomen", size)
    hu = np.full((size, size), -1000.0)
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.03)
    rx, ry = rng.uniform(0.40, 0.46), rng.uniform(0.30, 0.35)
    body, cavity = _body(b, hu, rng, cx, cy, rx, ry)
    _paint(hu, cavity, -70, rng, 25, grain=2.0)  # mesenteric fat and bowel
    loops = (smooth_noise(size, rng, 2.5) > 0.6) & cavity
    hu[loops] = 30 + rng.normal(0, 5)
    hu[(smooth_noise(size, rng, 1.5) > 2.2) & cavity] = -900  # bowel gas
    vy = cy + ry * 0.38
    vertebra, _ = _spine(b, hu, rng, cx, vy)
    psoas = []
    for s, sign in (("right", -1), ("left", 1)):
        m = blob(size, rng, cx + sign * 0.085, vy + 0.01, 0.035, 0.045, wobble=0.08) & cavity
        m &= ~vertebra.mask
        p = b.add("psoas muscle", TISSUE, m, side=s)
        _paint(hu, m, 50, rng, 6)
        psoas.append(p)
    level = rng.choice(["upper", "renal"], p=[0.35, 0.65])
    liver_scale = 1.0 if level == "upper" else rng.uniform(0.6, 0.85)
    liver_m = (blob(size, rng, cx - 0.16, cy - 0.04, 0.19 * liver_scale + 0.03, 0.2 * liver_scale, 0.3)
               | blob(size, rng, cx - 0.02, cy - 0.14, 0.12 * liver_scale, 0.07 * liver_scale)) & cavity
    liver = b.add("liver", ORGAN, liver_m)
    _paint(hu, liver_m, rng.uniform(95, 115), rng, 5)
    spleen_m = blob(size, rng, cx + 0.27, cy + 0.0, 0.06, 0.11 * (1.2 if level == "upper" else 0.8), -0.5) & cavity
    spleen = b.add("spleen", ORGAN, spleen_m)
    _paint(hu, spleen_m, rng.uniform(110, 125), rng, 5)
    stomach = None
    if level == "upper" or rng.random() < 0.4:
        st = blob(size, rng, cx + 0.13, cy - 0.13, 0.11, 0.07, 0.2, wobble=0.1) & cavity
        stomach = b.add("stomach", ORGAN, st)
        _paint(hu, st, 40, rng, 5)
        _paint(hu, erode(st, 2), 12, rng, 4)
        ys = np.nonzero(st)[0]
        if len(ys):
            hu[erode(st, 2) & (np.arange(size)[:, None] < ys.min() + (ys.max() - ys.min()) * 0.35)] = -950
    gallbladder = None
    if liver is not None and rng.random() < 0.7:
        gb = blob(size, rng, cx - 0.08, cy - 0.0, 0.03, 0.045, 0.4) & cavity
        gallbladder = b.add("gallbladder", ORGAN, gb)
        _paint(hu, gb, 8, rng, 3)
    kidneys, pelves = [], []
    if level == "renal":
        for s, sign in (("right", -1), ("left", 1)):
            kx, ky = cx + sign * rng.uniform(0.17, 0.2), vy - rng.uniform(0.0, 0.04)
            k = blob(size, rng, kx, ky, 0.055, 0.08, sign * -0.4, wobble=0.05)
            k &= ~ellipse(size, kx - sign * 0.06, ky, 0.018, 0.022) & cavity
            kid = b.add("kidney", ORGAN, k, side=s)
            _paint(hu, k, rng.uniform(150, 175), rng, 8)
            kidneys.append(kid)
            if kid is not None:
                hu[k & ~erode(k, 2)] = 185
                pel = blob(size, rng, kx - sign * 0.022, ky, 0.022, 0.03, wobble=0.1)
                pelves.append(b.add("renal pelvis", SUBSTRUCTURE, pel, side=s, parent=kid))
                _paint(hu, pel & k, -20, rng, 10)
    for organ in (liver, spleen, stomach, *kidneys):
        b.carve(organ, gallbladder, *psoas, vertebra)
    b.carve(liver, stomach, *kidneys)
    b.carve(spleen, stomach, *kidneys)
    for lesioned in kidneys:
        if lesioned is not None and rng.random() < 0.55:
            cyst = rng.random() < 0.5
            _lesions(b, hu, rng, lesioned, 1, "kidney lesion", (0.018, 0.03),
                     5 if cyst else 75, texture=2 if cyst else 12,
                     exclude=[p for p in pelves if p is not None])
    _lesions(b, hu, rng, liver, rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]), "liver lesion",
             (0.018, 0.045), rng.uniform(25, 55), texture=10)
    ax, ay = cx + 0.035, vy - 0.1
    aorta = b.add("aorta", VESSEL, ellipse(size, ax, ay, 0.03, 0.03))
    hu[aorta.mask] = rng.uniform(160, 220)
    ivc_m = blob(size, rng, cx - 0.055, ay - 0.01, 0.035, 0.025, wobble=0.1) & ~aorta.mask
    b.add("inferior vena cava", VESSEL, ivc_m)
    _paint(hu, ivc_m, rng.uniform(110, 140), rng, 4)
    for organ in list(b.entities.values()):
        if organ.kind in (ORGAN, TISSUE) and organ.category != "subcutaneous fat":
            b.carve(organ, aorta, b.entities.get("inferior_vena_cava_1"))
    image = _window(blur(hu, 0.6) + rng.normal(0, rng.uniform(6, 16), hu.shape), rng.uniform(30, 60), 400)
    return b.finish(image)


def ct_chest(size: int, rng: np.random.Generator) -> Scene:
    b = SceneBuilder("CT chest", size)
    hu = np.full((size, size), -1000.0)
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)
    rx, ry = rng.uniform(0.41, 0.46), rng.uniform(0.30, 0.34)
    body, cavity = _body(b, hu, rng, cx, cy, rx, ry)
    _paint(hu, cavity, -60, rng, 20)  # mediastinal fat
    vy = cy + ry * 0.45
    vertebra, _ = _spine(b, hu, rng, cx, vy)
    heart = None
    if rng.random() < 0.75:
        hm = blob(size, rng, cx + 0.07, cy - 0.02, 0.15, 0.12, -0.5, wobble=0.05) & cavity
        heart = b.add("heart", ORGAN, hm)
        _paint(hu, hm, 45, rng, 6)
        hu[erode(hm, 3)] = 40 + rng.uniform(100, 200)  # contrast in the chambers
    lungs = []
    for s, sign in (("right", -1), ("left", 1)):
        lm = blob(size, rng, cx + sign * 0.2, cy - 0.01, 0.16 if s == "right" else 0.14, 0.25, wobble=0.05)
        lm &= erode(cavity, 1) & ~ellipse(size, cx, cy, 0.07, 0.4) & ~vertebra.mask
        if heart is not None:
            lm &= ~ellipse(size, cx + 0.07, cy - 0.02, 0.19, 0.15, -0.5)
        lung = b.add("lung", ORGAN, lm, side=s)
        hu[lm] = -860 + smooth_noise(size, rng, 4)[lm] * 25
        vessels = (smooth_noise(size, rng, 1.0) > 2.0) & lm
        hu[vessels] = -150
        lungs.append(lung)
    aorta = b.add("aorta", VESSEL, ellipse(size, cx + 0.06, vy - 0.09, 0.033, 0.033) & ~vertebra.mask)
    hu[aorta.mask] = rng.uniform(150, 250)
    if heart is None:
        tr = b.add("trachea", ORGAN, ellipse(size, cx, cy - 0.03, 0.03, 0.026))
        hu[tr.mask] = -990
        hu[ellipse(size, cx, cy - 0.03, 0.036, 0.032) & ~tr.mask] = 60
    for lung in lungs:
        b.carve(lung, aorta, heart)
    for lung in lungs:
        if lung is not None and rng.random() < 0.25:
            ys, xs = np.nonzero(lung.mask)
            cut = np.quantile(ys, rng.uniform(0.72, 0.85))
            meniscus = smooth_noise(size, rng, 6) * 2
            eff = lung.mask & (np.arange(size)[:, None] + meniscus > cut)
            pe = b.add("pleural effusion", LESION, eff, side=lung.side)
            if pe is not None:
                _paint(hu, eff, 12, rng, 4)
                b.carve(lung, pe)
    effusions = [e for e in b.entities.values() if e.category == "pleural effusion"]
    for lung in lungs:
        if lung is not None:
            _lesions(b, hu, rng, lung, rng.choice([0, 1, 2], p=[0.3, 0.5, 0.2]), "lung nodule",
                     (0.012, 0.028), 35, texture=10, exclude=effusions)
    image = _window(blur(hu, 0.6) + rng.normal(0, rng.uniform(8, 20), hu.shape), -500, 1500)
    return b.finish(image)
