"""The tiny checkpoint shipped in the repository: complete, documented, and still as good as reported, on
held-out phantoms and on held-out real brain slices (the scores ``mediround eval --manifest`` recorded)."""

import json

import pytest

from model.checkpoint import load_checkpoint, read_manifest
from model.config import SHIPPED_TINY
from model.evaluation.evaluate import BRAIN_REGRESSION_SLICE, REGRESSION_SLICE, brain_regression_score, regression_score
from tests.conftest import require_brain_templates


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


def test_the_shipped_checkpoint_on_held_out_real_brain_slices(tmp_path):
    """Fully autoregressive with JCM on test-slab slices (its own seed), as ``mediround eval --manifest`` recorded."""
    require_brain_templates()
    manifest = read_manifest(SHIPPED_TINY)
    assert manifest.get("brain") is not None, "the shipped checkpoint is trained on the real brain"
    reported = manifest.get("brain_regression")
    assert reported is not None, "run mediround eval --manifest on the checkpoint to record its brain_regression"
    assert {k: reported[k] for k in BRAIN_REGRESSION_SLICE} == BRAIN_REGRESSION_SLICE
    now = brain_regression_score(SHIPPED_TINY, tmp_path)
    assert now["n"] == reported["n"] > 30
    assert now["dice"] == pytest.approx(reported["dice"], abs=0.02), json.dumps(now)
    assert now["ciou"] == pytest.approx(reported["ciou"], abs=0.02), json.dumps(now)
