"""What a training stage reads: the phantom split and, optionally, the real brain in a fixed share.

:class:`TrainingData` names the dataset roots and how to show them: the real-brain records through
:class:`~model.data.brain.augment.BrainAugment` training views, the questions (of dialogue stages)
reworded by :class:`~model.data.rewording.TextAugment`. :class:`Mixture` puts the brain items
beside the phantom ones so that ``brain_share`` of the items, and so of every shuffled batch on
average, come from the brain, whatever the two sets' sizes: a fixed share, not "as many as there
are". It is a plain map-style dataset, so Ray Train's per-worker shards work on it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from torch.utils.data import Dataset

from model.data.brain.augment import BrainAugment
from model.data.dataset import ImageMaskDataset, MRMedSegDataset
from model.data.rewording import TextAugment


class Items(Protocol):
    """A map-style dataset with a length (torch's ``Dataset`` does not promise one)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...


class Mixture(Dataset):
    """``first`` and ``second`` cycled so that ``second`` makes ``share`` of the items and each item of both
    appears at least once: an epoch (one shuffled pass) sees everything, in the asked proportion."""

    def __init__(self, first: Items, second: Items, share: float):
        if not 0 < share < 1:
            raise ValueError(f"share must be within (0, 1), got {share}")
        if len(first) == 0 or len(second) == 0:
            raise ValueError("both datasets of a mixture must hold items")
        self.first, self.second = first, second
        total = math.ceil(max(len(first) / (1 - share), len(second) / share))
        self.from_first = max(len(first), min(total - len(second), round(total * (1 - share))))
        self.total = max(total, self.from_first + len(second))

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i < self.from_first:
            return self.first[i % len(self.first)]
        return self.second[(i - self.from_first) % len(self.second)]


@dataclass(frozen=True)
class TrainingData:
    """The roots a stage reads (``split`` of each) and how their items are shown."""

    phantoms: Path
    brain: Path | None = None
    brain_share: float = 0.0
    """Share of the items (and so of every batch, on average) drawn from ``brain``."""
    augment: BrainAugment = field(default_factory=BrainAugment)
    """Training views of the real-brain items (phantom items are never changed)."""
    dialogue_views: int | None = None
    """Views per brain image in the dialogue stages, if fewer than ``augment.variants``: those stages cache
    each view's frozen encodings and crops, so every view costs an encoder pass once."""
    text: TextAugment | None = None
    """Rewording of the questions, for the stages that read dialogues; None keeps the generators' wording."""
    split: str = "train"
    embeddings: Path | None = None
    """Where a pretrained (frozen) SAM encoder's embeddings of the training views are kept on disk, computed
    once across stages and reruns (``model.training.embeddings``); None keeps them in memory for one stage."""

    def __post_init__(self):
        if self.dialogue_views is not None and self.dialogue_views < 1:
            raise ValueError(f"dialogue_views must be >= 1, got {self.dialogue_views}")
        object.__setattr__(self, "phantoms", Path(self.phantoms))
        if self.embeddings is not None:
            object.__setattr__(self, "embeddings", Path(self.embeddings))
        if self.brain is not None:
            object.__setattr__(self, "brain", Path(self.brain))
            if not 0 < self.brain_share < 1:
                raise ValueError(f"brain_share must be within (0, 1) with a brain root, got {self.brain_share}")

    @classmethod
    def of(cls, data: TrainingData | str | Path) -> TrainingData:
        """``data`` itself, or the phantom root alone (how tests and older callers name a stage's data)."""
        return data if isinstance(data, TrainingData) else cls(Path(data))

    def images(self) -> Dataset:
        """Every image with its masks (SAM pretraining, alignment)."""
        phantoms = ImageMaskDataset(self.phantoms, self.split)
        if self.brain is None:
            return phantoms
        return Mixture(phantoms, ImageMaskDataset(self.brain, self.split, augment=self.augment), self.brain_share)

    def dialogues(self, tokenizer, image_tokens: int) -> Dataset:
        """Every conversation, tokenized (stage 1, JCM)."""
        def split(root: Path, augment: BrainAugment | None) -> MRMedSegDataset:
            return MRMedSegDataset(root, self.split, tokenizer=tokenizer, image_tokens=image_tokens, augment=augment,
                                   text_augment=self.text)

        phantoms = split(self.phantoms, None)
        if self.brain is None:
            return phantoms
        views = min(self.augment.variants, self.dialogue_views or self.augment.variants)
        return Mixture(phantoms, split(self.brain, replace(self.augment, variants=views)), self.brain_share)

    def to_dict(self) -> dict:
        """Plain values (for a Ray worker's config and the manifest); :meth:`from_dict` reads them back."""
        d = asdict(self)
        d["phantoms"], d["brain"] = str(self.phantoms), str(self.brain) if self.brain else None
        d["embeddings"] = str(self.embeddings) if self.embeddings else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainingData:
        augment = {**d["augment"], "scale": tuple(d["augment"]["scale"])}  # tuples come back from JSON as lists
        for key in ("gamma", "contrast", "noise"):
            augment[key] = tuple(augment[key])
        return cls(Path(d["phantoms"]), Path(d["brain"]) if d["brain"] else None, d["brain_share"],
                   BrainAugment(**augment), d["dialogue_views"], TextAugment(**d["text"]) if d["text"] else None,
                   d["split"], Path(d["embeddings"]) if d.get("embeddings") else None)
