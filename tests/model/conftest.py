"""Fixtures of the model tests: a small real-brain dataset generated once per session (needs mricron-data)."""

import pytest

from model.data.brain.generate import default_splits, generate_dataset
from tests.conftest import require_brain_templates


@pytest.fixture(scope="session")
def small_brain_root(tmp_path_factory):
    """Every 15th slice of every slab at 160 px, one or two dialogues per slice and split: a few seconds."""
    require_brain_templates()
    root = tmp_path_factory.mktemp("small_brain")
    generate_dataset(root, seed=0, splits=default_splits(0.34), image_size=160, stride=15, workers=1, progress=False)
    return root
