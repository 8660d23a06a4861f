"""Display windows (DICOM VOI): what a caller may ask for, the named CT presets, and the standard's formulas that
turn modality values (e.g. Hounsfield units) into the 256 grey levels of the model's picture.

Which window an image gets (the header's, a preset, an explicit one, or the full range) is decided in
``serving.dicom.pixels``; here are only the choice itself and the arithmetic, so both are checkable by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from serving.errors import InvalidDicomOptions

PRESETS: dict[str, tuple[float, float]] = {
    # name: (centre, width) in Hounsfield units, as Radiopaedia's "Windowing (CT)" lists them
    "ct-abdomen": (50.0, 400.0),
    "ct-bone": (400.0, 1800.0),
    "ct-brain": (40.0, 80.0),
    "ct-liver": (30.0, 150.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-mediastinum": (50.0, 350.0),
    "ct-stroke": (40.0, 40.0),
    "ct-subdural": (75.0, 215.0),
}

FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
"""VOI LUT Function (0028,1056) values; LINEAR when a header has none."""


@dataclass(frozen=True)
class VoiChoice:
    """Which modality values of a greyscale image become its grey levels, as the caller asks.

    The default (no preset, no centre and width) takes the header's window (its first, when it lists several),
    else the header's VOI LUT, else the full range of the frame's values. A preset or an explicit centre and
    width overrides the header and is applied as LINEAR_EXACT: values from ``center - width / 2`` to
    ``center + width / 2`` span black to white, the way presets are published.
    """

    preset: str = ""
    """A name from ``PRESETS`` ("ct-lung", ...); CT images only, since the values are Hounsfield units."""
    center: float | None = None
    width: float | None = None
    """With ``center``: an explicit window in the image's modality values; greater than 0."""

    def __post_init__(self):
        if self.preset and self.preset not in PRESETS:
            raise InvalidDicomOptions(f"unknown window preset {self.preset!r}; the presets are "
                                      f"{', '.join(PRESETS)}, or give an explicit centre and width")
        if (self.center is None) != (self.width is None):
            raise InvalidDicomOptions("an explicit window needs both a centre and a width")
        if self.width is not None:
            if self.preset:
                raise InvalidDicomOptions("give a window preset or an explicit centre and width, not both")
            if not (math.isfinite(self.center) and math.isfinite(self.width)):
                raise InvalidDicomOptions(f"the window centre and width must be finite numbers; got "
                                          f"{self.center} and {self.width}")
            if self.width <= 0:
                raise InvalidDicomOptions(f"the window width is {self.width:g}; a width greater than 0 is accepted")

    @classmethod
    def from_request(cls, preset: str = "", center: float = 0.0, width: float = 0.0) -> VoiChoice:
        """From the API's DicomOptions fields, where an unset number reads 0: a width and centre both 0 ask for
        no explicit window; a centre without a width is refused (width 0)."""
        if width == 0 and center == 0:
            return cls(preset=preset)
        return cls(preset=preset, center=center, width=width)

    @property
    def window(self) -> tuple[float, float] | None:
        """The (centre, width) asked for, or None to take the image's own."""
        if self.preset:
            return PRESETS[self.preset]
        if self.center is not None and self.width is not None:  # both or neither
            return float(self.center), float(self.width)
        return None

    @property
    def source(self) -> str:
        """How a rendering names this choice: "preset:<name>" or "explicit" ("" for the image's own)."""
        return f"preset:{self.preset}" if self.preset else "explicit" if self.width is not None else ""


def window_is_valid(width: float, function: str) -> bool:
    """Whether a window of ``width`` can be applied with ``function`` (LINEAR needs at least 1, PS3.3
    C.11.2.1.2.1; the others more than 0)."""
    return math.isfinite(width) and (width >= 1 if function == "LINEAR" else width > 0)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Modality values -> uint8 grey levels 0..255 through one window, by PS3.3 C.11.2.1.2 (LINEAR),
    C.11.2.1.3.1 (SIGMOID) and C.11.2.1.3.2 (LINEAR_EXACT), with y_min 0 and y_max 255; each level is rounded
    half up. ``window_is_valid(width, function)`` must hold."""
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    elif width == 1:  # LINEAR of width 1 is a threshold: the formula below would divide by 0
        y = (x > center - 0.5).astype(np.float64)
    else:  # LINEAR: the standard's clamps at c - 0.5 -/+ (w - 1) / 2 are exactly y = 0 and y = 1 here
        y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.floor(np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
