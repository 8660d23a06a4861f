"""The Colin27 T1 volume and the AAL atlas on its grid, read with nibabel, cut into display-ready slices.

Slices follow the radiological display convention (reference notes §12): axial and coronal show the
patient's right on the image's left; axial top is anterior, coronal and sagittal top is superior,
sagittal left is anterior. Every slice is padded to the volume's largest side and resized to the
model's square image size, so one pixel is the same number of millimetres in all three orientations
and the midline of axial and coronal slices is the image's vertical centre line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

TEMPLATES = Path("/usr/share/mricron/templates")
T1_FILE, ATLAS_FILE, NAMES_FILE = "ch2.nii.gz", "aal.nii.gz", "aal.nii.txt"
PACKAGE = "mricron-data"  # the Debian package that installs TEMPLATES
ORIENTATIONS = ("axial", "coronal", "sagittal")
AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS voxel axis each orientation slices along


@dataclass(frozen=True)
class BrainVolume:
    """T1 intensities and AAL labels on one grid whose voxel axes point to the patient's Right, Anterior, Superior."""

    t1: np.ndarray  # (X, Y, Z) float32, windowed to 0..1
    labels: np.ndarray  # (X, Y, Z) uint8 AAL label, 0 outside every region
    names: dict[int, str]  # AAL label -> AAL name, e.g. 73 -> "Putamen_L"
    affine: np.ndarray  # (4, 4) voxel -> mm

    @property
    def field_of_view(self) -> int:
        """Voxels along the side of every square slice before resizing."""
        return max(self.t1.shape)

    def mm_per_pixel(self, size: int) -> float:
        return self.field_of_view * float(self.affine[0, 0]) / size

    def position_mm(self, orientation: str, index: int) -> float:
        """World coordinate (mm) of slice ``index`` along the orientation's axis."""
        axis = AXIS[orientation]
        return float(self.affine[axis, axis] * index + self.affine[axis, 3])

    def slice_count(self, orientation: str) -> int:
        return self.t1.shape[AXIS[orientation]]

    def plane(self, orientation: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(T1, labels) of one slice as displayed: rows top to bottom, columns left to right."""
        take = [slice(None)] * 3
        take[AXIS[orientation]] = index
        # the two remaining axes, each pointing right/anterior/superior, become (columns, rows); both run the
        # other way on screen (patient's right / anterior / superior first), hence the reversal
        return tuple(np.ascontiguousarray(a[tuple(take)][::-1, ::-1].T) for a in (self.t1, self.labels))


def _check_grid(t1, atlas) -> None:
    if t1.shape != atlas.shape or not np.allclose(t1.affine, atlas.affine, atol=1e-3):
        raise ValueError(f"the atlas grid {atlas.shape} does not match the T1 grid {t1.shape}: "
                         "they must share shape and affine")
    zooms = np.abs(np.diag(t1.affine)[:3])
    if not np.allclose(t1.affine[:3, :3], np.diag(zooms)) or not np.allclose(zooms, zooms[0]):
        raise ValueError(f"expected an isotropic RAS grid without rotation, got affine\n{t1.affine}")


@cache
def load_brain(templates: str | Path = TEMPLATES) -> BrainVolume:
    """Read ch2 (Colin27 T1, 1 mm) and the AAL atlas from ``templates``; cached per process."""
    import nibabel as nib

    templates = Path(templates)
    for name in (T1_FILE, ATLAS_FILE, NAMES_FILE):
        if not (templates / name).exists():
            raise FileNotFoundError(f"{templates / name} is missing: apt-get install -y {PACKAGE}")
    t1 = nib.as_closest_canonical(nib.load(templates / T1_FILE))
    atlas = nib.as_closest_canonical(nib.load(templates / ATLAS_FILE))
    _check_grid(t1, atlas)
    data = np.asarray(t1.dataobj, dtype=np.float32)
    high = float(np.percentile(data[data > 0], 99.5))  # a few bright fat voxels would darken the brain
    labels = np.asarray(atlas.dataobj).astype(np.uint8)
    names = {}
    for line in (templates / NAMES_FILE).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    missing = set(np.unique(labels).tolist()) - set(names) - {0}
    if missing:
        raise ValueError(f"{NAMES_FILE} names no region for labels {sorted(missing)}")
    return BrainVolume(np.clip(data / high, 0, 1), labels, names, t1.affine.copy())


def to_square(plane: np.ndarray, field_of_view: int, size: int, *, labels: bool) -> np.ndarray:
    """Pad ``plane`` (H, W) centred to ``field_of_view`` square, resize to ``size``: bilinear, or nearest for labels."""
    h, w = plane.shape
    top, left = (field_of_view - h) // 2, (field_of_view - w) // 2
    square = np.zeros((field_of_view, field_of_view), dtype=np.uint8 if labels else np.float32)
    square[top:top + h, left:left + w] = plane
    image = Image.fromarray(square)  # uint8 -> "L", float32 -> "F"
    return np.asarray(image.resize((size, size), Image.NEAREST if labels else Image.BILINEAR))
