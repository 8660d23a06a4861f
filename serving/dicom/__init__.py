"""DICOM at the edge: DICOM instances in (pixels, identity), rounds out as a DICOM Segmentation."""
