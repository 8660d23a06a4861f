"""The training loop and every stage on the small phantom set: losses, logs, resume, what learns."""

import csv
import json

import numpy as np
import pytest
import torch

from model.build import apply_lora
from model.reference import reference_box
from model.stages import (Alignment, JCMTraining, LatestMasks, MediRoundTraining, SamPretraining,
                          grounded_caption)
from model.train import StageSettings, fit, mark_trainable, plot_losses


def _stage(name, root, tokenizer, image_tokens, **kw):
    return {"sam": lambda: SamPretraining(root, masks_per_image=2),
            "align": lambda: Alignment(root, tokenizer, image_tokens),
            "mediround": lambda: MediRoundTraining(root, tokenizer, image_tokens, **kw),
            "jcm": lambda: JCMTraining(root, tokenizer, image_tokens)}[name]()


@pytest.mark.parametrize("name", ["sam", "align", "mediround", "jcm"])
def test_each_stage_trains_only_its_parameters_and_logs(name, tmp_path, tiny_model, phantom_root, phantom_tokenizer):
    model, cfg = tiny_model
    stage = _stage(name, phantom_root, phantom_tokenizer, cfg.mllm.image_tokens)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    last = fit(model, stage, StageSettings(steps=2, batch_size=2, warmup=1), tmp_path, progress=False)
    assert torch.isfinite(torch.tensor(last["loss"]))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(stage.trainable(n) for n in changed)
    frozen = {"sam": "mllm.", "align": "sam.", "mediround": "sam.image_encoder.", "jcm": "sam."}[name]
    assert not any(n.startswith(frozen) for n in changed)
    with open(tmp_path / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"] and "loss" in rows[0]
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "done").read_text() == "2\n"


def test_training_resumes_from_its_saved_state(tmp_path, tiny_model, phantom_root, phantom_tokenizer):
    model, cfg = tiny_model
    stage = MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens)
    fit(model, stage, StageSettings(steps=2, batch_size=2, warmup=1, save_every=1), tmp_path, progress=False)
    first = torch.load(tmp_path / "state.pt", weights_only=False)["seconds"]
    fit(model, stage, StageSettings(steps=3, batch_size=2, warmup=1, save_every=1), tmp_path, progress=False)
    with open(tmp_path / "losses.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    assert torch.load(tmp_path / "state.pt", weights_only=False)["step"] == 3
    assert json.loads((tmp_path / "seconds.json").read_text())["seconds"] >= round(first, 1) > 0  # summed


def test_stage_one_with_lora_trains_adapters_not_the_base_language_model(tiny_model, phantom_root, phantom_tokenizer,
                                                                          tmp_path):
    model, cfg = tiny_model
    apply_lora(model)
    stage = MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens, lora=True)
    names = {n for n, p in model.named_parameters() if p in set(mark_trainable(model, stage))}
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert "mllm.lm_head.weight" in names and "mllm.model.language_model.embed_tokens.weight" in names
    assert not any(".base_layer." in n or ".mlp." in n for n in names if ".language_model." in n)
    assert not any(n.startswith(("sam.image_encoder.", "mllm.model.vision_tower.")) for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    fit(model, stage, StageSettings(steps=2, batch_size=2, warmup=1), tmp_path, progress=False)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_captions_name_entities_where_they_are():
    masks = torch.zeros(2, 30, 30, dtype=torch.bool)
    masks[0, :5, :5] = True  # upper left
    masks[1, 25:, 12:18] = True  # lower center
    assert grounded_caption(["spleen", "kidney"], masks, "ct_abdomen") == \
        "ct abdomen: spleen upper left, kidney lower center."


def test_settings_refuse_nonsense_and_schedule_warmup_then_decay():
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        StageSettings(steps=0)
    s = StageSettings(steps=100, warmup=10)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(99) == pytest.approx(0.1, abs=1e-3) and s.lr_at(10) > s.lr_at(50) > s.lr_at(90)


def test_the_loss_plot_skips_terms_missing_on_some_steps(tmp_path):
    (tmp_path / "losses.csv").write_text("step,loss,bce,seconds\n1,1.0,0.5,0.1\n2,0.9,,0.1\n3,0.8,0.4,0.1\n")
    assert plot_losses(tmp_path / "losses.csv", tmp_path / "curves.png").stat().st_size > 0


def _referring_item(stage):
    dataset = stage.dataset()
    return next(item for item in (dataset[i] for i in range(len(dataset))) if (item["references"] >= 0).any())


def test_own_references_feed_the_latest_mask_of_the_target_instead_of_the_ground_truth(tiny_model, phantom_root,
                                                                                       phantom_tokenizer):
    model, cfg = tiny_model
    stage = MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens, own_references=1.0)
    item = _referring_item(stage)
    refs = [k for k, r in enumerate(item["references"].tolist()) if r >= 0]
    crops, boxes = stage.reference_inputs(model, [item], [refs])
    assert torch.equal(boxes, item["reference_boxes"][refs])  # nothing remembered yet: the ground truth
    truth_crops = crops

    own = np.zeros(item["image"].shape[-2:], dtype=bool)
    own[10:20, 30:45] = True
    stage.latest.put(item["reference_files"][refs[0]], own)
    crops, boxes = stage.reference_inputs(model, [item], [refs])
    assert torch.equal(boxes[0], torch.from_numpy(reference_box(own, own.shape)))
    with torch.no_grad():
        assert torch.allclose(crops[0], model.crop_tokens(item["image"], [own])[0], atol=1e-5)
    assert not torch.allclose(crops[0], truth_crops[0])

    with torch.no_grad():
        stage.loss(model, stage.collate([item]))  # remembers this step's masks of every round
    assert set(stage.latest.masks) == set(item["mask_files"])
    assert stage.latest.get(item["mask_files"][0]).shape == tuple(item["image"].shape[-2:])


def test_without_own_references_training_keeps_no_masks_and_feeds_the_ground_truth(tiny_model, phantom_root,
                                                                                    phantom_tokenizer):
    model, cfg = tiny_model
    stage = MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens)
    item = _referring_item(stage)
    with torch.no_grad():
        stage.loss(model, stage.collate([item]))
    assert not stage.latest.masks
    refs = [k for k, r in enumerate(item["references"].tolist()) if r >= 0]
    assert torch.equal(stage.reference_inputs(model, [item], [refs])[1], item["reference_boxes"][refs])
    with pytest.raises(ValueError, match=r"own_references is a probability in \[0, 1\], got 1.5"):
        MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens, own_references=1.5)


def test_latest_masks_round_trip_bit_exactly():
    latest = LatestMasks()
    mask = np.random.default_rng(0).random((37, 53)) > 0.5
    latest.put("a.png", mask)
    assert np.array_equal(latest.get("a.png"), mask) and latest.get("b.png") is None
