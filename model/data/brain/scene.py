"""One brain slice as a phantom-style scene: the grey image and an entity per structure and group on it.

Structures come from the AAL labels of the resized slice (nearest neighbour, so structures never
overlap); a group is the union of its structures' pixels on that side. Masks under ``min_area``
pixels are dropped, and so is a group that one of its members almost fills (it would ask for the
same mask twice). On sagittal slices only the slice's own hemisphere (and the vermis) is kept: the
few voxels the atlas puts across the midline are not what a reader sees there. ``contact`` counts,
for every pair of structures, the pixel pairs closer than ``CONTACT_MM``: the basis of "neighbour"
questions, since white matter (unlabelled in AAL) separates most structures by a few pixels.
``uncut`` names the structures and groups the slice does not cut at all (no atlas voxel on its plane,
before any resizing): what a "not in this slice" round may ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from model.data.brain.anatomy import BY_NAME, GROUPS, descendants, leaves, parse_aal
from model.data.brain.volume import BrainVolume, to_square
from model.data.phantoms.scene import Entity, Scene

MODALITY = "mr_brain_t1"
SOURCE = "colin27-aal"  # records carrying this "source" are real-brain slices (augment.py acts on them)
GROUP = "group"  # Entity.kind of a group; structures carry their anatomical kind (gyrus, nucleus, ...)
MIN_AREA_MM2 = 60.0  # about 47 px at 192 px: smaller masks are slivers where a structure just starts or ends
CONTACT_MM = 3.5
DOMINANT = 0.9  # a group whose largest member holds this share of it is not shown as a group


@dataclass
class BrainSlice(Scene):
    """A scene cut from the brain volume; ``contact[(a, b)]`` is the contact count between two structures."""

    orientation: str = "axial"
    index: int = 0
    position_mm: float = 0.0
    mm_per_pixel: float = 1.0
    contact: dict[tuple[str, str], int] = field(default_factory=dict)
    uncut: frozenset[tuple[str, str | None]] = frozenset()
    """(name, side) of every atlas structure and group with no voxel on this slice's plane."""

    @property
    def image_id(self) -> str:
        return f"brain_{self.orientation}_{self.index:03d}"

    def structures(self) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind != GROUP]

    def name(self, entity: Entity) -> str | None:
        """A name that picks ``entity`` out: with its side whenever a structure of that name has one."""
        if entity.side is None:
            return entity.category if len(self.of_category(entity.category)) == 1 else None
        return f"{entity.side} {entity.category}"


def entity_key(name: str, side: str | None) -> str:
    """File-safe key of a structure: ``left_putamen``, ``vermis``."""
    return re.sub(r"[^a-z0-9]+", "_", f"{side or ''} {name}".lower()).strip("_")


def _contact(leaf_map: np.ndarray, radius: int) -> np.ndarray:
    """(n, n) counts of pixel pairs of two different structures closer than ``radius`` pixels (0 = none)."""
    n = int(leaf_map.max()) + 1
    counts = np.zeros(n * n, dtype=np.int64)
    h, w = leaf_map.shape
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy == 0 and dx <= 0) or dy * dy + dx * dx > radius * radius:
                continue  # each offset once: (dy, dx) and (-dy, -dx) pair the same pixels
            a = leaf_map[: h - dy, max(0, -dx): w - max(0, dx)]  # pixel p
            b = leaf_map[dy:, max(0, dx): w - max(0, -dx)]  # pixel p + (dy, dx)
            sel = (a > 0) & (b > 0) & (a != b)
            counts += np.bincount(a[sel].astype(np.int64) * n + b[sel], minlength=n * n)
    counts = counts.reshape(n, n)
    return counts + counts.T


def _uncut(volume: BrainVolume, plane_labels: np.ndarray) -> frozenset[tuple[str, str | None]]:
    """(name, side) of the structures and groups with no voxel in ``plane_labels`` (a slice's atlas labels)."""
    on_plane = set(np.unique(plane_labels).tolist())
    cut, every = set(), set()
    for label, aal in volume.names.items():
        structure, side = parse_aal(aal)
        every.add((structure.name, side))
        if label in on_plane:
            cut.add((structure.name, side))
    for group in GROUPS:
        for side in ("left", "right") if group.sided else (None,):
            every.add((group.name, side))
            if any(leaf == name and (side is None or s == side) for leaf in leaves(group.name) for name, s in cut):
                cut.add((group.name, side))
    return frozenset(every - cut)


def brain_slice(volume: BrainVolume, orientation: str, index: int, size: int) -> BrainSlice:
    """The scene of slice ``index`` of ``orientation``, resized to ``size`` pixels square."""
    t1, labels = volume.plane(orientation, index)
    uncut = _uncut(volume, labels)
    fov = volume.field_of_view
    image = np.round(to_square(t1, fov, size, labels=False) * 255).clip(0, 255).astype(np.uint8)
    labels = to_square(labels, fov, size, labels=True)
    mm = volume.mm_per_pixel(size)
    min_area = MIN_AREA_MM2 / mm**2
    position = volume.position_mm(orientation, index)
    # a sagittal slice cuts one hemisphere (x < 0 is the patient's left); the vermis has no side
    own_side = None if orientation != "sagittal" else ("left" if position < 0 else "right")

    # AAL label -> structure number (1-based, 0 = none or not visible); the vermis labels share one
    structures: dict[tuple[str, str | None], int] = {}
    lut = np.zeros(256, dtype=np.int64)
    for label, aal in sorted(volume.names.items()):
        structure, side = parse_aal(aal)
        number = structures.setdefault((structure.name, side), len(structures) + 1)
        lut[label] = number if own_side is None or side in (None, own_side) else 0
    leaf_map = lut[labels]  # (size, size)
    number_key = {i: entity_key(name, side) for (name, side), i in structures.items()}

    scene = BrainSlice(MODALITY, image, orientation=orientation, index=index, position_mm=position, mm_per_pixel=mm,
                       uncut=uncut)
    for (name, side), i in structures.items():
        mask = leaf_map == i
        if mask.sum() >= min_area:
            scene.entities[number_key[i]] = Entity(number_key[i], name, BY_NAME[name].kind, mask, side)
    for group in GROUPS:
        for side in ("left", "right") if group.sided else (None,):
            members = [i for (name, s), i in structures.items()
                       if name in leaves(group.name) and (side is None or s == side)]
            mask = np.isin(leaf_map, members)
            area = int(mask.sum())
            if area < min_area:
                continue
            inner = [e.area for e in scene.entities.values()
                     if e.category in descendants(group.name) and (side is None or e.side == side)]
            if inner and max(inner) >= DOMINANT * area:
                continue
            key = entity_key(group.name, side)
            scene.entities[key] = Entity(key, group.name, GROUP, mask, side)
    counts = _contact(leaf_map, max(1, round(CONTACT_MM / mm)))
    for i, j in zip(*np.nonzero(counts), strict=True):
        a, b = number_key[int(i)], number_key[int(j)]
        if a in scene.entities and b in scene.entities:
            scene.contact[a, b] = int(counts[i, j])
    return scene
