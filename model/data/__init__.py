"""MR-MedSeg data: the format, validation, phantom and real-brain generation, the training dataset with its
question rewording, pictures, the demo's held-out brain dialogue."""
