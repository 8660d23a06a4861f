"""Dice per structure and per structure size, from a run's per-mask scores on real-brain dialogues.

A real-brain round's target is one AAL structure or group (``rounds_meta[k]["category"]``, sides
pooled: "putamen" holds the left and the right one). Size is the ground-truth mask's share of the
image (at 192 px one pixel is ~1.28 mm², so 0.5% is ~235 mm²): thin gyri and small nuclei sit in
the small bins, lobes and hemispheres in the largest.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from model.data.images import load_mask
from model.data.mrmedseg import Conversation
from model.evaluation.metrics import SegmentationMetric

SIZE_BINS: tuple[tuple[float, str], ...] = (
    (0.5, "small (< 0.5% of the image)"),
    (1.5, "medium (0.5-1.5%)"),
    (5.0, "large (1.5-5%)"),
    (math.inf, "very large (>= 5%)"),
)
"""(upper bound in % of the image, label), in order."""


@dataclass(frozen=True)
class MaskScore:
    """One scored round: what it asked for, how big the truth is, its Dice."""

    structure: str
    area_pct: float
    dice: float


def size_bin(area_pct: float) -> str:
    return next(label for upper, label in SIZE_BINS if area_pct < upper)


def mask_scores(metric: SegmentationMetric, conversations: list[Conversation], root: Path) -> list[MaskScore]:
    """Every round's Dice (recorded with dialogue ids, by ``run_dialogues`` or ``box_prompted_upper_bound``)
    with its structure and size."""
    out = []
    for i, conv in enumerate(conversations):
        meta = conv.extra.get("rounds_meta") or [{}] * len(conv.rounds)
        for k, score in sorted(metric.dice_by_dialogue[i].items()):
            truth = load_mask(root / conv.rounds[k].mask)
            out.append(MaskScore(meta[k].get("category", "?"), 100.0 * float(truth.mean()), score))
    return out


def _summary(scores: list[MaskScore]) -> dict:
    return {"n": len(scores), "dice": sum(s.dice for s in scores) / len(scores),
            "mean_area_pct": sum(s.area_pct for s in scores) / len(scores)}


def per_structure(scores: list[MaskScore]) -> list[dict]:
    """{structure, n, dice, mean_area_pct} per structure, by name."""
    groups: dict[str, list[MaskScore]] = defaultdict(list)
    for s in scores:
        groups[s.structure].append(s)
    return [{"structure": name, **_summary(groups[name])} for name in sorted(groups)]


def per_size(scores: list[MaskScore]) -> list[dict]:
    """{size, n, dice, mean_area_pct} per size bin that holds rounds, smallest first."""
    groups: dict[str, list[MaskScore]] = defaultdict(list)
    for s in scores:
        groups[size_bin(s.area_pct)].append(s)
    return [{"size": label, **_summary(groups[label])} for _, label in SIZE_BINS if groups[label]]


def write_csv(rows: list[dict], path: Path) -> Path:
    """``rows`` (dicts with the same keys) as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path
