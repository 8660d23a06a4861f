"""Shared fixtures: a small phantom dataset generated once per test session."""

import pytest

from model.data.phantoms.generate import SplitSpec, generate_dataset


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    splits = {"train": SplitSpec(12, 2, 0.3), "val": SplitSpec(4), "test": SplitSpec(4, 1, 0.0),
              "test_hard": SplitSpec(4, 1, 1.0), "test_unseen": SplitSpec(4, 1, 0.0, held_out=True)}
    generate_dataset(root, seed=3, splits=splits, image_size=160, workers=1, progress=False)
    return root
