"""The training loop and every stage on the small phantom set: losses, logs, resume, what learns."""

import csv
import json
import random

import pytest
import torch

from model.build import apply_lora
from model.training.loop import StageSettings, fit, mark_trainable, plot_losses
from model.training.stages import (
    Alignment,
    AnswerText,
    JCMTraining,
    MediRoundTraining,
    SamPretraining,
    grounded_caption,
)


def _stage(name, root, tokenizer, image_tokens, **kw):
    return {"sam": lambda: SamPretraining(root, masks_per_image=2),
            "align": lambda: Alignment(root, tokenizer, image_tokens),
            "text": lambda: AnswerText(root, tokenizer, image_tokens, **kw),
            "mediround": lambda: MediRoundTraining(root, tokenizer, image_tokens, **kw),
            "jcm": lambda: JCMTraining(root, tokenizer, image_tokens)}[name]()


@pytest.mark.parametrize("name", ["sam", "align", "text", "mediround", "jcm"])
def test_each_stage_trains_only_its_parameters_and_logs(name, tmp_path, tiny_model, phantom_root, phantom_tokenizer):
    model, cfg = tiny_model
    stage = _stage(name, phantom_root, phantom_tokenizer, cfg.mllm.image_tokens)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    last = fit(model, stage, StageSettings(steps=2, batch_size=2, warmup=1), tmp_path, progress=False)
    assert torch.isfinite(torch.tensor(last["loss"]))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(stage.trainable(n) for n in changed)
    frozen = {"sam": ("mllm.",), "align": ("sam.",), "text": ("sam.", "text_hidden_fcs.", "jcm."),
              "mediround": ("sam.image_encoder.",), "jcm": ("sam.",)}[name]
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


def test_a_bf16_stage_runs_its_forward_passes_in_bf16_where_the_cpu_has_it_and_keeps_fp32_weights(
        tmp_path, tiny_model, phantom_root, phantom_tokenizer):
    from model.mediround import native_bf16

    model, cfg = tiny_model
    stage = MediRoundTraining(phantom_root, phantom_tokenizer, cfg.mllm.image_tokens)
    autocast_on, loss = [], stage.loss

    def watched_loss(m, batch):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return loss(m, batch)

    stage.loss = watched_loss
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    last = fit(model, stage, StageSettings(steps=2, batch_size=2, warmup=1, bf16=True), tmp_path, progress=False)
    assert autocast_on == [native_bf16(torch.device("cpu"))] * 2
    assert torch.isfinite(torch.tensor(last["loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("text_hidden_fcs."))
    fit(model, stage, StageSettings(steps=3, batch_size=2, warmup=1), tmp_path, progress=False)  # fp32 unless asked
    assert autocast_on[-1] is False


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
    rng = random.Random(0)  # more entities than a caption names: a different draw each time, each one named
    drawn = [grounded_caption(["spleen", "kidney"], masks, "ct_abdomen", most=1, rng=rng) for _ in range(20)]
    assert set(drawn) == {"ct abdomen: spleen upper left.", "ct abdomen: kidney lower center."}
    with pytest.raises(ValueError, match="most must be >= 1"):
        grounded_caption(["spleen", "kidney"], masks, "ct_abdomen", most=0)


def test_settings_refuse_nonsense_and_schedule_warmup_then_decay():
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        StageSettings(steps=0)
    s = StageSettings(steps=100, warmup=10)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(99) == pytest.approx(0.1, abs=1e-3) and s.lr_at(10) > s.lr_at(50) > s.lr_at(90)


def test_the_loss_plot_skips_terms_missing_on_some_steps(tmp_path):
    (tmp_path / "losses.csv").write_text("step,loss,bce,seconds\n1,1.0,0.5,0.1\n2,0.9,,0.1\n3,0.8,0.4,0.1\n")
    assert plot_losses(tmp_path / "losses.csv", tmp_path / "curves.png").stat().st_size > 0
