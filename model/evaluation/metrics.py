"""Segmentation metrics exactly as the official MediRound evaluation computes them.

Per predicted mask P and ground truth G: I = |P and G|, U = |P| + |G| - I.

- gIoU: mean over masks of I / U (1.0 when U == 0);
- cIoU: sum of I over the split / sum of U over the split;
- Dice: mean over masks of 2I / (|P| + |G|) (1.0 when U == 0).

``SegmentationMetric`` accumulates batch after batch and ``aggregate()`` reports overall and per
round index (1-based, as the paper's tables: round #1..#8); ``MetricsBySplit`` keeps one per split.
``paired_dice_difference`` compares two runs over the same dialogues, with a bootstrap interval.

Beyond the paper: ``QualityCalibration`` (does the JCM's quality predict the mask's IoU: expected calibration
error and Spearman's rank correlation) and ``AbstentionMetric`` (rounds about what the image does not show:
precision and recall of "not found", and false refusals of structures that are there), ``AnswerNames`` (does a
generated answer name the structure the round asked for).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _flat_bool(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return (x > 0.5 if x.dtype.kind == "f" else x.astype(bool)).reshape(x.shape[0], -1)


def intersection_and_union(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-mask I and U for batches of binary masks shaped (N, ...); returns two int64 arrays (N,)."""
    p, g = _flat_bool(pred), _flat_bool(target)
    if p.shape != g.shape:
        raise ValueError(f"prediction and ground truth shapes differ: {p.shape} vs {g.shape}")
    inter = (p & g).sum(1, dtype=np.int64)
    union = p.sum(1, dtype=np.int64) + g.sum(1, dtype=np.int64) - inter
    return inter, union


def dice_scores(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """2I / (|P| + |G|) per mask, 1.0 where both are empty. |P| + |G| = U + I."""
    denom = union + inter
    return np.where(union == 0, 1.0, 2 * inter / np.maximum(denom, 1))


def iou_scores(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """I / U per mask, 1.0 where both are empty."""
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


@dataclass
class _Sums:
    n: int = 0
    dice: float = 0.0
    giou: float = 0.0
    inter: int = 0
    union: int = 0

    def add(self, inter: np.ndarray, union: np.ndarray) -> None:
        self.n += len(inter)
        self.dice += float(dice_scores(inter, union).sum())
        self.giou += float(iou_scores(inter, union).sum())
        self.inter += int(inter.sum())
        self.union += int(union.sum())

    def result(self) -> dict:
        if self.n == 0:
            return {"n": 0, "dice": None, "giou": None, "ciou": None}
        ciou = self.inter / self.union if self.union else 1.0
        return {"n": self.n, "dice": self.dice / self.n, "giou": self.giou / self.n, "ciou": ciou}


class SegmentationMetric:
    """Dice, gIoU and cIoU accumulated over batches, overall and per round index."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._overall = _Sums()
        self._per_round: dict[int, _Sums] = defaultdict(_Sums)
        self.dice_by_dialogue: dict[int, dict[int, float]] = defaultdict(dict)  # dialogue -> round -> Dice

    def __call__(self, pred: ArrayLike, target: ArrayLike, rounds: ArrayLike | list[int] | None = None,
                 dialogue: int | None = None) -> None:
        """Add a batch. ``rounds`` are the 0-based round indices of the masks (reported 1-based); with
        them, ``dialogue`` (an id) also keeps each mask's Dice for :func:`paired_dice_difference`."""
        inter, union = intersection_and_union(pred, target)
        self._overall.add(inter, union)
        if rounds is not None:
            rounds = np.asarray(rounds.cpu() if isinstance(rounds, torch.Tensor) else rounds).reshape(-1)
            if len(rounds) != len(inter):
                raise ValueError(f"got {len(rounds)} round indices for {len(inter)} masks")
            if dialogue is not None:
                scores = dice_scores(inter, union).tolist()
                self.dice_by_dialogue[dialogue].update(zip(rounds.tolist(), scores, strict=True))
            for r in np.unique(rounds):
                sel = rounds == r
                self._per_round[int(r) + 1].add(inter[sel], union[sel])

    def aggregate(self) -> dict:
        """{"overall": {n, dice, giou, ciou}, "per_round": {"1": {...}, ...}}."""
        return {"overall": self._overall.result(),
                "per_round": {str(k): v.result() for k, v in sorted(self._per_round.items())}}


def paired_dice_difference(a: SegmentationMetric, b: SegmentationMetric, *, from_round: int = 1,
                           resamples: int = 10_000, seed: int = 0) -> dict:
    """Dice of run ``a`` minus run ``b`` over the same dialogues' masks of rounds >= ``from_round``
    (1-based), with a 95% percentile bootstrap interval.

    Whole dialogues are resampled, not masks: the rounds of one dialogue share an image and their
    references, so their errors are correlated. Both runs must hold the same rounds of the same
    dialogues (recorded with ``dialogue=``). Returns {dialogues, n, difference, low, high}.
    """
    if not a.dice_by_dialogue or a.dice_by_dialogue.keys() != b.dice_by_dialogue.keys() or any(
            a.dice_by_dialogue[d].keys() != b.dice_by_dialogue[d].keys() for d in a.dice_by_dialogue):
        raise ValueError("paired_dice_difference needs two runs recorded with dialogue ids over the same "
                         "dialogues and rounds")
    gains, counts = [], []
    for d, rounds in a.dice_by_dialogue.items():
        later = [r for r in rounds if r + 1 >= from_round]
        if later:
            gains.append(sum(rounds[r] - b.dice_by_dialogue[d][r] for r in later))
            counts.append(len(later))
    if not counts:
        return {"dialogues": 0, "n": 0, "difference": None, "low": None, "high": None}
    gains, counts = np.array(gains), np.array(counts)
    picks = np.random.default_rng(seed).integers(0, len(counts), (resamples, len(counts)))
    low, high = np.percentile(gains[picks].sum(1) / counts[picks].sum(1), [2.5, 97.5])
    return {"dialogues": len(counts), "n": int(counts.sum()), "difference": float(gains.sum() / counts.sum()),
            "low": float(low), "high": float(high)}


class MetricsBySplit:
    """One :class:`SegmentationMetric` per split name, written out together as JSON."""

    def __init__(self) -> None:
        self.splits: dict[str, SegmentationMetric] = defaultdict(SegmentationMetric)

    def __getitem__(self, split: str) -> SegmentationMetric:
        return self.splits[split]

    def aggregate(self) -> dict:
        return {split: m.aggregate() for split, m in sorted(self.splits.items())}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.aggregate(), indent=2)
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text


class QualityCalibration:
    """How well a predicted quality q in [0, 1] predicts the IoU the mask really has.

    ``ece``: the expected calibration error, sum over ``bins`` equal-width bins of q of
    (share of masks in the bin) x |mean q - mean IoU|; ``spearman``: the rank correlation of q and IoU.
    """

    def __init__(self, bins: int = 10) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = bins
        self.quality: list[float] = []
        self.iou: list[float] = []

    def __call__(self, quality: ArrayLike | list[float], iou: ArrayLike | list[float]) -> None:
        q, v = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (quality, iou))
        if len(q) != len(v):
            raise ValueError(f"got {len(q)} qualities for {len(v)} IoUs")
        if ((q < 0) | (q > 1)).any():
            raise ValueError("qualities must lie in [0, 1]")
        self.quality += q.tolist()
        self.iou += v.tolist()

    def aggregate(self) -> dict:
        """{"n", "ece", "spearman", "bins": [{"lo", "hi", "n", "quality", "iou"}, ...]}."""
        q, v = np.asarray(self.quality), np.asarray(self.iou)
        if len(q) == 0:
            return {"n": 0, "ece": None, "spearman": None, "bins": []}
        which = np.minimum((q * self.bins).astype(int), self.bins - 1)
        bins, ece = [], 0.0
        for b in range(self.bins):
            sel = which == b
            if sel.any():
                ece += sel.mean() * abs(q[sel].mean() - v[sel].mean())
                bins.append({"lo": b / self.bins, "hi": (b + 1) / self.bins, "n": int(sel.sum()),
                             "quality": float(q[sel].mean()), "iou": float(v[sel].mean())})
        return {"n": len(q), "ece": float(ece), "spearman": _spearman(q, v), "bins": bins}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1; tied values share their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the rank of the last of each group of equal values
    return (ends - (counts - 1) / 2)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (None when either side is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


class AbstentionMetric:
    """Rounds that ask about a structure: did the model answer "not in this image" exactly when it is absent?

    Each round adds (``present``: the structure is in the image; ``answered_mask``: the model gave a mask).
    ``precision``: of the refusals, the share about absent structures; ``recall``: of the absent structures, the
    share refused; ``false_refusals``: of the present structures, the share refused.
    """

    def __init__(self) -> None:
        self.counts = {"refused_absent": 0, "refused_present": 0, "masked_absent": 0, "masked_present": 0}

    def __call__(self, present: bool, answered_mask: bool) -> None:
        self.counts[f"{'masked' if answered_mask else 'refused'}_{'present' if present else 'absent'}"] += 1

    def aggregate(self) -> dict:
        c = self.counts
        refused, absent = c["refused_absent"] + c["refused_present"], c["refused_absent"] + c["masked_absent"]
        present = c["refused_present"] + c["masked_present"]
        return {**c, "precision": c["refused_absent"] / refused if refused else None,
                "recall": c["refused_absent"] / absent if absent else None,
                "false_refusals": c["refused_present"] / present if present else None}


class AnswerNames:
    """Does a generated answer name the structure its round segments?

    ``known``: every structure name the dialogues use ("left putamen", "putamen", "liver lesion", ...). The name
    an answer gives is the longest known name in it as whole words, so "the left putamen" names "left putamen",
    not "putamen" (an answer naming two, as "the lesion inside the left kidney", counts the longer). An answer
    naming none is ``unnamed``, one naming another structure ``wrong``; ``accuracy``: the share of answers that
    name theirs.
    """

    def __init__(self, known: set[str] | list[str]) -> None:
        names = sorted({n.lower() for n in known if n.strip()}, key=len, reverse=True)  # longest first
        if not names:
            raise ValueError("no structure names to look for")
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
        self.right = self.wrong = self.unnamed = 0

    def named(self, answer: str) -> str | None:
        """The longest known name ``answer`` holds, or None."""
        found = self.pattern.findall(answer.lower())
        return max(found, key=len) if found else None

    def __call__(self, answer: str, name: str) -> None:
        said = self.named(answer)
        if said is None:
            self.unnamed += 1
        elif said == name.lower():
            self.right += 1
        else:
            self.wrong += 1

    def aggregate(self) -> dict:
        n = self.right + self.wrong + self.unnamed
        return {"n": n, "right": self.right, "wrong": self.wrong, "unnamed": self.unnamed,
                "accuracy": self.right / n if n else None}
