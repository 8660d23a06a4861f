"""Which slices of the volume each split may use: held-out slabs per orientation, with a margin.

Validation and test slices come from contiguous slabs (world coordinates in mm on the template's
grid, both ends included) that training never sees in that orientation; the ``MARGIN`` slices on
each side of a slab belong to no split, so no training slice is a near-copy of a held-out one.
Sagittal slabs are mirrored: a slab at 20..27 mm from the midline holds out both hemispheres'
slices there, since a left-right flip (augment.py) would turn one into the other. Slices within
``SAGITTAL_MIDLINE_MM`` of the midline are skipped: they cut both hemispheres' medial surfaces.

What the slabs hold (Colin27, AAL):
- axial    val z -41..-32 (cerebellum, temporal poles, gyrus rectus); test z 13..22 (caudate body,
  thalamus, top of the putamen, insula, cingulate);
- coronal  val y -65..-54 (cerebellum, occipital and parietal lobes, precuneus); test y -15..-4
  (thalamus, putamen, pallidum, hippocampus, insula, central region);
- sagittal val |x| 44..49 (lateral temporal and frontal gyri, insula edge, cerebellum); test
  |x| 20..27 (putamen, pallidum, hippocampus, amygdala, cerebellum).
Each split still meets every orientation, and training keeps slices of every structure held out.
Caveat: one brain cut three ways. An axial test slab's voxels appear in training's coronal and
sagittal slices (seen from another plane); the held-out figures are honest per orientation only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data.brain.volume import AXIS, ORIENTATIONS, BrainVolume

MARGIN = 5  # slices (1 mm each) between a training slice and a held-out slab
SAGITTAL_MIDLINE_MM = 3.0
MIN_STRUCTURES = 4  # a slice with fewer labelled structures is mostly skull


@dataclass(frozen=True)
class Slab:
    """Positions ``lo..hi`` mm (inclusive) along the orientation's axis; ``mirrored`` means |position|."""

    lo: float
    hi: float
    mirrored: bool = False

    def distance(self, position: float) -> float:
        """How far (mm) ``position`` lies outside the slab; 0 inside."""
        p = abs(position) if self.mirrored else position
        return max(self.lo - p, p - self.hi, 0.0)


SLABS: dict[str, dict[str, Slab]] = {
    "axial": {"val": Slab(-41, -32), "test": Slab(13, 22)},
    "coronal": {"val": Slab(-65, -54), "test": Slab(-15, -4)},
    "sagittal": {"val": Slab(44, 49, mirrored=True), "test": Slab(20, 27, mirrored=True)},
}


def slab_of(orientation: str, position: float, slice_mm: float = 1.0) -> str | None:
    """``"val"``, ``"test"`` or ``"train"`` for a slice at ``position`` mm; None inside a margin or the midline."""
    if orientation == "sagittal" and abs(position) < SAGITTAL_MIDLINE_MM:
        return None
    for name, slab in SLABS[orientation].items():
        d = slab.distance(position)
        if d == 0:
            return name
        if d <= MARGIN * slice_mm:
            return None
    return "train"


def slices_by_slab(volume: BrainVolume) -> dict[str, list[tuple[str, int]]]:
    """(orientation, index) of every usable slice per slab, in volume order."""
    out: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for orientation in ORIENTATIONS:
        axis = AXIS[orientation]
        # labelled structures per slice, counted on the volume (the generator drops small ones again later)
        labels = np.moveaxis(volume.labels, axis, 0).reshape(volume.labels.shape[axis], -1)
        for index in range(volume.slice_count(orientation)):
            if len(np.unique(labels[index])) - 1 < MIN_STRUCTURES:
                continue
            slab = slab_of(orientation, volume.position_mm(orientation, index), abs(volume.affine[axis, axis]))
            if slab is not None:
                out[slab].append((orientation, index))
    return out


def describe() -> dict[str, dict[str, dict]]:
    """The slabs and the margin, for dataset.json."""
    return {o: {name: {"lo_mm": s.lo, "hi_mm": s.hi, "mirrored": s.mirrored, "margin_slices": MARGIN}
                for name, s in slabs.items()} for o, slabs in SLABS.items()}
