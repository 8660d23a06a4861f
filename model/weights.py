"""Strict loading of state dicts: ``WeightsMismatch`` lists every missing, unexpected or mis-shaped key.

Kept apart from ``model.build`` (which imports transformers) so a plain torch model such as LiteMedSAM loads
without it; ``model.build`` re-exports ``WeightsMismatch``.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightsMismatch(ValueError):
    """A checkpoint whose keys do not match the architecture."""

    def __init__(self, what: str, missing: list[str], unexpected: list[str]):
        def show(keys):
            return ", ".join(keys[:20]) + (f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")
        parts = [f"{len(missing)} missing: {show(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else ""]
        super().__init__(f"{what} does not match the architecture; " + "; ".join(p for p in parts if p))
        self.missing, self.unexpected = missing, unexpected


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` only if every key and shape matches; else ``WeightsMismatch`` naming ``what``
    (mis-shaped keys are listed with the unexpected ones, as ``key (checkpoint shape) != (module shape)``)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise WeightsMismatch(what, missing, unexpected + wrong)
    module.load_state_dict(state, strict=True)
