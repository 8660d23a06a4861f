"""The training stages by name: the one place a stage name ("sam", "align", ...) becomes a ``Stage``.

A recipe lists its stages by name and a Ray Train worker is handed a name, so both look it up here
and neither needs the other. A new stage is one line in ``STAGES``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model.training.mixture import TrainingData
from model.training.stages import Alignment, JCMTraining, MediRoundTraining, SamPretraining, Stage

StageBuilder = Callable[[TrainingData, object, int, bool], Stage]
"""(training data, tokenizer, image tokens per image, LoRA on the language model) -> the stage."""

STAGES: dict[str, StageBuilder] = {
    SamPretraining.name: lambda data, tokenizer, image_tokens, lora: SamPretraining(data),
    Alignment.name: lambda data, tokenizer, image_tokens, lora: Alignment(data, tokenizer, image_tokens),
    MediRoundTraining.name: lambda data, tokenizer, image_tokens, lora: MediRoundTraining(
        data, tokenizer, image_tokens, lora=lora),
    JCMTraining.name: lambda data, tokenizer, image_tokens, lora: JCMTraining(data, tokenizer, image_tokens),
}


def check_stage_name(name: str) -> None:
    """Raise ``ValueError`` naming the known stages unless ``name`` is one of them."""
    if name not in STAGES:
        raise ValueError(f"unknown stage '{name}': expected one of {', '.join(STAGES)}")


def make_stage(name: str, data: TrainingData | str | Path, tokenizer, image_tokens: int, *,
               lora: bool = False) -> Stage:
    """The stage registered as ``name``, reading ``data`` (training data, or a phantom dataset root)."""
    check_stage_name(name)
    return STAGES[name](TrainingData.of(data), tokenizer, image_tokens, lora)
