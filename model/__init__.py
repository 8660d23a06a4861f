"""MediRound: the model and everything to train and judge it (data, metrics, reference handling)."""
