"""The tiny checkpoint shipped in the repository: complete, documented, and still as good as reported."""

import json

import pytest

from model.checkpoint import load_checkpoint, read_manifest
from model.config import SHIPPED_TINY
from model.evaluation.evaluate import REGRESSION_SLICE, regression_score


def test_the_shipped_checkpoint_is_small_complete_and_documented():
    files = {p.name: p.stat().st_size for p in SHIPPED_TINY.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer", "manifest.json"} <= set(files)
    assert files["model.safetensors"] < 50 * 2**20
    manifest = read_manifest(SHIPPED_TINY)
    assert manifest["command"] == "mediround train recipe tiny" and manifest["data_seed"] == 0
    assert len(manifest["commit"].removesuffix("+dirty")) == 40 and manifest["total_seconds"] > 0
    assert {"main", "reference_ablation", "box_prompted_sam"} <= set(manifest["evaluation"]["tables"])
    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)
    assert cfg.name == "tiny" and len(tokenizer) == cfg.mllm.text["vocab_size"]


def test_the_shipped_checkpoint_still_scores_what_its_manifest_says(tmp_path):
    """Fully autoregressive with JCM on a held-out phantom slice (its own seed, never trained on)."""
    reported = read_manifest(SHIPPED_TINY)["regression"]
    assert {k: reported[k] for k in REGRESSION_SLICE} == REGRESSION_SLICE
    now = regression_score(SHIPPED_TINY, tmp_path)
    assert now["n"] == reported["n"]
    assert now["dice"] == pytest.approx(reported["dice"], abs=0.02), json.dumps(now)
    assert now["ciou"] == pytest.approx(reported["ciou"], abs=0.02), json.dumps(now)
