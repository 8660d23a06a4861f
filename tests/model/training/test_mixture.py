"""Training on phantoms and the real brain: the mixture's share and coverage, augmented brain items, a mixed stage."""

import json
from dataclasses import replace

import pytest
import torch

from model.data.brain.augment import BrainAugment
from model.data.rewording import TextAugment
from model.training.loop import StageSettings, fit
from model.training.mixture import Mixture, TrainingData
from model.training.stages import MediRoundTraining


def test_a_mixture_holds_the_share_and_every_item_of_both_sets():
    for first, second, share in ((1500, 301, 0.25), (3000, 1806, 0.25), (10, 10, 0.5), (3, 100, 0.1)):
        mix = Mixture(list(range(first)), [f"b{i}" for i in range(second)], share)
        items = [mix[i] for i in range(len(mix))]
        brain = [x for x in items if isinstance(x, str)]
        assert len(brain) / len(mix) == pytest.approx(share, abs=1 / len(mix))
        assert set(items) == set(range(first)) | {f"b{i}" for i in range(second)}
    mix = Mixture([0, 1], ["a"], 0.5)
    assert mix[-1] == "a"
    with pytest.raises(IndexError):
        mix[len(mix)]
    with pytest.raises(ValueError, match="share must be within"):
        Mixture([0], [1], 1.0)


@pytest.fixture
def mixed(phantom_root, small_brain_root):
    return TrainingData(phantom_root, small_brain_root, 0.4, BrainAugment(seed=2), dialogue_views=2,
                        text=TextAugment(seed=1))


def test_brain_items_come_through_training_views_in_the_asked_share(mixed, phantom_tokenizer):
    images = mixed.images()
    brain = [images[i] for i in range(len(images)) if images[i]["modality"] == "mr_brain_t1"]
    assert len(brain) / len(images) == pytest.approx(0.4, abs=0.02)
    dialogues = mixed.dialogues(phantom_tokenizer, 4)
    items = [dialogues[i] for i in range(len(dialogues))]
    views = {x["image_file"].partition("#aug")[2] for x in items if x["image_file"].startswith("images/brain_")}
    assert views == {"", "1"}  # two views per slice in the dialogue stages: the slice and one drawn view
    assert sum(x["image_file"].startswith("images/brain_") for x in items) / len(items) == pytest.approx(0.4, abs=0.02)
    assert TrainingData.from_dict(json.loads(json.dumps(mixed.to_dict()))) == mixed
    assert TrainingData.of(mixed.phantoms) == TrainingData(mixed.phantoms)
    with pytest.raises(ValueError, match="brain_share must be within"):
        TrainingData(mixed.phantoms, mixed.brain)


def test_stage_one_trains_on_the_mixture_with_reworded_questions(mixed, tiny_model, phantom_tokenizer, tmp_path):
    model, cfg = tiny_model
    stage = MediRoundTraining(replace(mixed, brain_share=0.9), phantom_tokenizer, cfg.mllm.image_tokens)
    last = fit(model, stage, StageSettings(steps=1, batch_size=3, warmup=1, seed=1), tmp_path, progress=False)
    assert torch.isfinite(torch.tensor(last["loss"]))
    assert any(key.startswith("images/brain_") for key in stage.frozen.features)
