"""Losses of the MediRound objective (reference notes §5-§6): text CE, mask BCE and mask Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.data.template import IGNORE_INDEX


def text_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits (B, L, V) predict labels (B, L) shifted by one; -100 ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE averaged over pixels, then over masks; logits and target (N, H, W)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return bce.flatten(1).mean(1).mean()


def mask_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, scale: float = 1000.0) -> torch.Tensor:
    """Soft Dice loss, mean over masks; the smoothing LISA uses (values scaled by 1/``scale``)."""
    p = torch.sigmoid(logits.float()).flatten(1) / scale
    t = target.float().flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) / scale + eps)).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, *, bce_weight: float = 2.0,
              dice_weight: float = 0.5) -> dict[str, torch.Tensor]:
    """{"bce", "dice", "mask"} where mask = bce_weight * BCE + dice_weight * Dice."""
    bce, dice = mask_bce(logits, target), mask_dice(logits, target)
    return {"bce": bce, "dice": dice, "mask": bce_weight * bce + dice_weight * dice}


def soft_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (N,) of the binarised prediction (logit > 0) with the target: the judge's target Q."""
    p, t = logits > 0, target.bool()
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
