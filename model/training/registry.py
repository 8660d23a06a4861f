"""The training stages by name: the one place a stage name ("sam", "align", ...) becomes a ``Stage``.

A recipe lists its stages by name and a Ray Train worker is handed a name, so both look it up here
and neither needs the other. A new stage is one line in ``STAGES``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model.training.loop import StageSettings
from model.training.mixture import TrainingData
from model.training.stages import Alignment, AnswerText, JCMTraining, MediRoundTraining, SamPretraining, Stage

StageBuilder = Callable[[TrainingData, object, int, bool, StageSettings], Stage]
"""(training data, tokenizer, image tokens per image, LoRA on the language model, the stage's settings) -> the
stage."""

STAGES: dict[str, StageBuilder] = {
    SamPretraining.name: lambda data, tokenizer, image_tokens, lora, s: SamPretraining(
        data, **({"masks_per_image": s.masks_per_item} if s.masks_per_item else {})),
    Alignment.name: lambda data, tokenizer, image_tokens, lora, s: Alignment(data, tokenizer, image_tokens),
    AnswerText.name: lambda data, tokenizer, image_tokens, lora, s: AnswerText(
        data, tokenizer, image_tokens, lora=lora),
    MediRoundTraining.name: lambda data, tokenizer, image_tokens, lora, s: MediRoundTraining(
        data, tokenizer, image_tokens, lora=lora, masks_per_dialogue=s.masks_per_item, box_share=s.box_share),
    JCMTraining.name: lambda data, tokenizer, image_tokens, lora, s: JCMTraining(
        data, tokenizer, image_tokens, masks_per_dialogue=s.masks_per_item),
}


def check_stage_name(name: str) -> None:
    """Raise ``ValueError`` naming the known stages unless ``name`` is one of them."""
    if name not in STAGES:
        raise ValueError(f"unknown stage '{name}': expected one of {', '.join(STAGES)}")


def make_stage(name: str, data: TrainingData | str | Path, tokenizer, image_tokens: int, *,
               lora: bool = False, settings: StageSettings | None = None) -> Stage:
    """The stage registered as ``name``, reading ``data`` (training data, or a phantom dataset root), shaped by
    ``settings`` (its ``masks_per_item`` and ``box_share``; None: the stage's defaults)."""
    check_stage_name(name)
    return STAGES[name](TrainingData.of(data), tokenizer, image_tokens, lora, settings or StageSettings(steps=1))
