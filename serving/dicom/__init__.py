"""DICOM at the edge: DICOM instances in (pixels, identity), rounds out as a DICOM Segmentation, both to and
from a configured PACS: ``pixels`` and ``voi`` read an instance, ``seg`` and ``codes`` write the SEG, ``pacs``
speaks DICOMweb, ``edge`` joins them to the dialogue."""

import logging
import warnings

import pydicom

# pydicom's and highdicom's warnings quote the values they find odd ("CQ500-CT-310 is unlikely to be a person
# name"), and a header's values name the patient: none of them may reach a log or stderr. Reading stays
# lenient (real archives hold slightly invalid headers).
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
logging.getLogger("highdicom").setLevel(logging.CRITICAL)
for _library in ("pydicom", "highdicom"):
    warnings.filterwarnings("ignore", module=rf"{_library}(\.|$)")
