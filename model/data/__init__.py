"""MR-MedSeg data: the format, validation, phantom generation, the training dataset, pictures."""
