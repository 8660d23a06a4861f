"""The stage registry: every stage under its own name, unknown names refused early, no recipe import cycle."""

import ast
from pathlib import Path

import pytest

import model.training.distributed as distributed
from model.training.loop import StageSettings
from model.training.recipe import TINY, Recipe
from model.training.registry import STAGES, make_stage


def test_every_registered_stage_is_built_under_its_own_name(phantom_root, phantom_tokenizer):
    assert [name for name, _ in TINY.stages] == list(STAGES) == ["sam", "align", "text", "mediround", "jcm"]
    for name in STAGES:
        assert make_stage(name, phantom_root, phantom_tokenizer, 4).name == name
    assert make_stage("mediround", phantom_root, phantom_tokenizer, 4, lora=True).lora


def test_an_unknown_stage_is_refused_when_the_recipe_is_made():
    with pytest.raises(ValueError, match="unknown stage 'segment': expected one of sam, align, text, mediround, jcm"):
        Recipe("typo", stages=[("segment", StageSettings(steps=1))])
    with pytest.raises(ValueError, match="unknown stage 'segment'"):
        make_stage("segment", Path("."), None, 4)


def test_ray_workers_look_stages_up_in_the_registry_not_in_the_recipe():
    tree = ast.parse(Path(distributed.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "model.training.registry" in imported and "model.training.recipe" not in imported
