"""The recipe from nothing on phantoms and a real brain it generates: data, tokenizer, stages, manifest."""

import hashlib
import json
from dataclasses import asdict

import pytest

from model.checkpoint import read_manifest
from model.data.rewording import TextAugment
from model.tokenizer import load_tokenizer
from model.training.loop import StageSettings
from model.training.recipe import RECIPES, TINY, BrainData, Recipe, run_recipe
from model.training.registry import STAGES
from serving.cli import build_parser
from tests.conftest import require_brain_templates


def test_a_recipe_generates_the_brain_and_trains_every_stage_on_both(tmp_path, phantom_root):
    require_brain_templates()
    recipe = Recipe("micro", brain=BrainData(stride=40, scale=0.2, share=0.3), text=TextAugment(), vocab_size=500,
                    stages=[(name, StageSettings(steps=1, batch_size=2, warmup=1)) for name in ("align", "mediround")])
    run = tmp_path / "run"
    final = run_recipe(recipe, run, data=phantom_root, progress=False)
    stats = json.loads((run / "brain" / "dataset.json").read_text())
    assert stats["stride"] == 40 and stats["statistics"]["train"]["conversations"] > 0
    manifest = read_manifest(final)
    assert manifest["brain"] == json.loads(json.dumps(asdict(recipe.brain)))
    assert manifest["text_augment"] == asdict(recipe.text)
    assert set(manifest["stage_seconds"]) == {"data+tokenizer", "align", "mediround", "calibration"}
    calibration = manifest["jcm_calibration"]  # fit on the validation splits, kept in the checkpoint's config
    saved = json.loads((final / "config.json").read_text())["jcm"]["calibration"]
    assert saved == pytest.approx([calibration["scale"], calibration["shift"]])
    assert calibration["weights_sha256"] == hashlib.sha256(
        (run / "mediround" / "checkpoint" / "model.safetensors").read_bytes()).hexdigest()  # what it was fit on
    tokenizer = load_tokenizer(str(final / "tokenizer"))
    assert len(tokenizer.tokenize(" cerebellar hemisphere")) <= 4  # learnt from the brain's dialogues
    assert json.loads((run / "data+tokenizer.seconds.json").read_text())["seconds"] > 0


def test_the_tiny_recipe_mixes_the_brain_into_every_stage_and_rewords_questions():
    assert TINY.brain is not None and 0 < TINY.brain.share < 0.5 and TINY.brain.seed == 0
    assert TINY.text is not None and RECIPES["tiny-plain-text"].text is None
    assert RECIPES["tiny-plain-text"].stages == TINY.stages and RECIPES["tiny-plain-text"].brain == TINY.brain
    assert [name for name, _ in TINY.stages] == list(STAGES)
    recipe_choices = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._subparsers
                          ._group_actions[0].choices["recipe"]._actions if a.dest == "name").choices
    assert list(recipe_choices) == list(RECIPES)


def test_a_stage_may_read_the_brain_in_its_own_share(tmp_path):
    from model.training.recipe import stage_training_data, training_data

    train = training_data(Recipe("x", brain=BrainData(share=0.25)), tmp_path, tmp_path)
    assert stage_training_data(train, StageSettings(steps=1)) is train
    assert stage_training_data(train, StageSettings(steps=1, brain_share=0.5)).brain_share == 0.5
    phantoms_only = training_data(Recipe("x"), tmp_path, None)
    assert stage_training_data(phantoms_only, StageSettings(steps=1, brain_share=0.5)).brain is None
    with pytest.raises(ValueError, match="brain_share must be within"):
        StageSettings(steps=1, brain_share=1.0)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_brain_share_outside_zero_to_one_is_refused(share, tmp_path):
    from model.training.recipe import training_data

    recipe = Recipe("x", brain=BrainData(share=share))
    with pytest.raises(ValueError, match="brain_share must be within"):
        training_data(recipe, tmp_path, tmp_path)
