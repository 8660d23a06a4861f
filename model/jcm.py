"""Judgment & Correction Mechanism (reference notes §5): judge the [SEG] vector, correct it when weak.

The judge predicts q in [0, 1], the IoU the uncorrected vector's mask would reach; when q <= beta
the corrector's vector is decoded instead (the paper's Algorithm 1). The judge's logit goes through a calibration
(scale, shift) fit on held-out dialogues, so that q is an honest estimate of that IoU.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class QualityJudge(nn.Module):
    """MLP_J: dim -> hidden -> hidden -> 1, GELU, sigmoid."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.mlp = _mlp([dim, hidden, hidden, 1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> quality logits (N,); ``torch.sigmoid`` gives q."""
        return self.mlp(h).squeeze(-1)


class Corrector(nn.Module):
    """MLP_C: dim -> hidden -> hidden -> dim, GELU."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.mlp = _mlp([dim, hidden, hidden, dim])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)  # (N, dim)


class JCM(nn.Module):
    """Judge and corrector together, with the keep/correct threshold ``beta``."""

    def __init__(self, *, dim: int, hidden: int, beta: float, calibration: tuple[float, float] = (1.0, 0.0)):
        super().__init__()
        self.judge = QualityJudge(dim=dim, hidden=hidden)
        self.corrector = Corrector(dim=dim, hidden=hidden)
        self.beta, self.calibration = beta, calibration

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, dim) -> (prompt to decode (N, dim), quality q (N,), corrected (N,) bool)."""
        scale, shift = self.calibration
        q = torch.sigmoid(scale * self.judge(h) + shift)
        corrected = q <= self.beta
        return torch.where(corrected[:, None], self.corrector(h), h), q, corrected
