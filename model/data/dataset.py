"""PyTorch dataset and collate for MR-MedSeg splits: what stage-1 / JCM training consumes.

One item is one conversation: the image, each round's ground-truth mask, the referenced round's
ground-truth mask and box (teacher forcing), and, given a tokenizer, the templated token ids with
answer-only labels. Images keep their own sizes; ``collate`` pads tokens and lists the rest. A round
about a structure the image does not show (``Round.has_mask`` False) has an all-False mask and
``has_mask`` False: its answer is words without ``[SEG]``, so it carries text loss and no mask loss.

``augment=BrainAugment()`` shows real-brain records (``model.data.brain``) through a drawn training
view (intensity, rotation, scale, left-right flip with its words); other records are untouched. An
item's ``image_file`` / ``reference_files`` name the pixels it holds (``<file>#aug<n>`` for a view):
training caches frozen encodings under those names. ``text_augment=TextAugment()`` rewords the
questions (``model.data.rewording``), keeping what each asks for and which round it refers to.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.data.brain.augment import BrainAugment, cache_key, is_brain, training_view, view_names, view_rounds
from model.data.images import load_image, load_mask
from model.data.mrmedseg import Conversation, Round, load
from model.data.rewording import TextAugment, reword
from model.data.template import IGNORE_INDEX, dialogue_text, tokenize_dialogue
from model.reference import reference_box


class MRMedSegDataset(Dataset):
    """Conversations of one split file under ``root`` (e.g. ``root/train.json``).

    ``tokenizer`` (optional) adds ``input_ids`` / ``labels``; ``image_tokens`` is how many
    ``<image>`` positions the vision tower fills. ``max_rounds`` truncates long dialogues.
    ``augment`` draws a training view of each real-brain item (see the module docstring);
    ``text_augment`` rewords the questions.
    """

    def __init__(self, root: str | Path, split: str, *, tokenizer=None, image_tokens: int = 1,
                 max_rounds: int | None = None, augment: BrainAugment | None = None,
                 text_augment: TextAugment | None = None):
        self.root = Path(root)
        candidates = [self.root / f"{split}.json", self.root / f"{split}.jsonl"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"split '{split}' not found: expected {candidates[0]} or {candidates[1]}")
        self.conversations: list[Conversation] = load(path)
        self.tokenizer, self.image_tokens, self.max_rounds = tokenizer, image_tokens, max_rounds
        self.augment = augment
        self._variants = np.random.default_rng(augment.seed) if augment else None  # which view each read shows
        self.text_augment = text_augment
        self._words = np.random.default_rng(text_augment.seed) if text_augment else None  # each read's wording

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, i: int) -> dict:
        conv = self.conversations[i]
        rounds = conv.rounds[: self.max_rounds] if self.max_rounds else conv.rounds
        image = load_image(self.root / conv.image)  # (H, W, 3) uint8
        h, w = image.shape[:2]
        found = [k for k, r in enumerate(rounds) if r.has_mask]  # rounds about a structure the image shows
        shown = np.stack([load_mask(self.root / rounds[k].mask) for k in found]) if found \
            else np.zeros((0, h, w), dtype=bool)  # (P, H, W)
        variant = 0
        if self.augment is not None and is_brain(conv):
            variant, view, image, shown = training_view(self.augment, conv.image, self._variants, image, shown,
                                                        conv.extra["orientation"])
            rounds = view_rounds(view, rounds)
        masks = np.zeros((len(rounds), h, w), dtype=bool)  # (R, H, W): all False where nothing is there
        masks[found] = shown
        if self.text_augment is not None:
            rounds = self._reworded(conv, rounds)
        ref_masks = np.zeros_like(masks)
        for k, r in enumerate(rounds):
            if r.reference is not None:
                ref_masks[k] = masks[r.reference]
        boxes = np.stack([reference_box(ref_masks[k] if r.reference is not None else None, (h, w))
                          for k, r in enumerate(rounds)])
        item = {
            "id": conv.extra.get("id", str(i)),
            "image_file": cache_key(conv.image, variant),
            "reference_files": [cache_key(rounds[r.reference].mask, variant) if r.reference is not None else ""
                                for r in rounds],
            "image": torch.from_numpy(image).permute(2, 0, 1),  # (3, H, W) uint8
            "masks": torch.from_numpy(masks),  # (R, H, W) bool, all False for a round without a mask
            "has_mask": torch.tensor([r.has_mask for r in rounds]),  # (R,) False: "not in this image", no [SEG]
            "reference_masks": torch.from_numpy(ref_masks),  # (R, H, W) bool, all False without reference
            "reference_boxes": torch.from_numpy(boxes),  # (R, 4) normalised xyxy
            "references": torch.tensor([-1 if r.reference is None else r.reference for r in rounds]),
            "text": dialogue_text(rounds),
        }
        if self.tokenizer is not None:
            ids, labels = tokenize_dialogue(self.tokenizer, rounds, image_tokens=self.image_tokens)
            item["input_ids"], item["labels"] = torch.tensor(ids), torch.tensor(labels)
        return item

    def _reworded(self, conv: Conversation, rounds: list[Round]) -> list[Round]:
        """The rounds with reworded questions; the dialogue's structure names stay as they are."""
        names = sorted({m["category"] for m in conv.extra.get("rounds_meta", []) if m.get("category")})
        return [replace(r, question=reword(r.question, self._words, self.text_augment, names=names, first=k == 0))
                for k, r in enumerate(rounds)]


class ImageMaskDataset(Dataset):
    """Each distinct image of a split with every distinct mask its dialogues use.

    Items: ``image`` (3, H, W) uint8, ``masks`` (K, H, W) bool, ``names`` (K,) entity names read from
    the phantom mask file names (``masks/<image>_<entity>_<n>.png``), ``modality`` when recorded.
    What the box-prompted SAM pretraining and the image-text alignment of the tiny model consume.
    ``augment`` draws a training view of each real-brain image, names swapped with a flip.
    """

    def __init__(self, root: str | Path, split: str, *, augment: BrainAugment | None = None):
        self.root = Path(root)
        self.augment = augment
        self._variants = np.random.default_rng(augment.seed) if augment else None
        by_image: dict[str, dict] = {}
        for conv in MRMedSegDataset(root, split).conversations:
            brain = conv.extra.get("orientation") if is_brain(conv) else None  # a real-brain slice's orientation
            entry = by_image.setdefault(conv.image, {"masks": [], "modality": conv.extra.get("modality", ""),
                                                     "orientation": brain})
            for mask in [r.mask for r in conv.rounds if r.has_mask]:
                if mask not in entry["masks"]:
                    entry["masks"].append(mask)
        self.images = sorted(by_image.items())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image_file, entry = self.images[i]
        stem = Path(image_file).stem
        names = [re.sub(r"_\d+$", "", Path(m).stem.removeprefix(stem + "_")).replace("_", " ") for m in entry["masks"]]
        image = load_image(self.root / image_file)
        masks = np.stack([load_mask(self.root / m) for m in entry["masks"]])
        variant = 0
        if self.augment is not None and entry["orientation"] is not None:
            variant, view, image, masks = training_view(self.augment, image_file, self._variants, image, masks,
                                                        entry["orientation"])
            names = view_names(view, names)
        return {
            "image_file": cache_key(image_file, variant),
            "image": torch.from_numpy(image).permute(2, 0, 1),
            "masks": torch.from_numpy(masks),
            "names": names,
            "modality": entry["modality"],
        }


def collate(batch: list[dict], pad_token_id: int = 0) -> dict:
    """Batch items: tokens padded on the right (labels with -100), per-conversation tensors listed."""
    out = {key: [item[key] for item in batch] for key in batch[0] if key not in ("input_ids", "labels")}
    if "input_ids" in batch[0]:
        longest = max(len(item["input_ids"]) for item in batch)
        ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(batch), longest), dtype=torch.long)
        for b, item in enumerate(batch):
            n = len(item["input_ids"])
            ids[b, :n], labels[b, :n], attention[b, :n] = item["input_ids"], item["labels"], 1
        out.update(input_ids=ids, labels=labels, attention_mask=attention)
    return out
