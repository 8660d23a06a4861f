"""The JCM's quality calibrated on held-out dialogues: Platt scaling of the judge's logit.

The judge learns q from the soft IoU of training masks, and on images it has not seen it is overconfident. After
training, the judge's q and the IoU of the mask it judged are collected on the validation splits (the auto
protocol, as served: the model's own words and references, so a wrongly named structure is a confident q on an
IoU near 0; the JCM off, so every mask is the first draft the judge saw) and q = sigmoid(scale * logit + shift)
is fit by least cross-entropy against that IoU. The pair goes into the checkpoint's config
(``JCMConfig.calibration``); the threshold beta then compares an honest estimate of the IoU.
Test splits are never used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.data.mrmedseg import Conversation
from model.evaluation.evaluate import Encodings, Setting, run_dialogues
from model.evaluation.metrics import QualityCalibration
from model.mediround import MediRound
from model.predictor import MultiRoundPredictor

MIN_PAIRS = 20
"""Fewest judged masks a calibration is fit on; with fewer (a model that draws no mask yet) the judge stays as
trained."""


def fit_platt(quality: list[float], iou: list[float], *, steps: int = 200) -> tuple[float, float]:
    """(scale, shift) such that sigmoid(scale * logit(q) + shift) fits ``iou`` with the least cross-entropy; the
    scale stays positive (q keeps its order, so the threshold keeps its meaning)."""
    if len(quality) != len(iou) or len(quality) < 2:
        raise ValueError(f"need at least two (quality, IoU) pairs of equal counts, got {len(quality)} and {len(iou)}")
    logits = torch.logit(torch.tensor(quality, dtype=torch.float64).clamp(1e-6, 1 - 1e-6))
    target = torch.tensor(iou, dtype=torch.float64).clamp(0, 1)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, shift], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(log_scale.exp() * logits + shift, target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_scale.detach().exp()), float(shift.detach())


def calibrate_quality(model: MediRound, tokenizer, cfg: ModelConfig, held_out: list[tuple[Path, list[Conversation]]],
                      *, progress: bool = False) -> dict:
    """Fit the calibration on ``held_out`` ((root, dialogues) of validation splits) and set it on ``model`` and
    ``cfg``; returns what it measured: pairs (rounds whose [SEG] was judged), (scale, shift), and the expected
    calibration error before and after the fit on those same pairs (in-sample: the test splits say more)."""
    model.jcm.calibration = (1.0, 0.0)  # the judge as trained
    predictor = MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)
    encodings = Encodings(model)
    raw = QualityCalibration()
    for root, conversations in held_out:
        run = run_dialogues(predictor, conversations, root, Setting("auto", jcm=False), encodings=encodings,
                            progress=progress, desc=f"calibration {root.name}")
        raw(run.calibration.quality, run.calibration.iou)
    if len(raw.quality) < MIN_PAIRS:  # nothing to learn from: the judge stays as trained, and the report says so
        ece = raw.aggregate()["ece"]
        return {"pairs": len(raw.quality), "scale": 1.0, "shift": 0.0, "ece_in_sample_before": ece,
                "ece_in_sample_after": ece}
    scale, shift = fit_platt(raw.quality, raw.iou)
    model.jcm.calibration = cfg.jcm.calibration = (scale, shift)
    logits = torch.logit(torch.tensor(raw.quality, dtype=torch.float64).clamp(1e-6, 1 - 1e-6))
    fitted = QualityCalibration()
    fitted(torch.sigmoid(scale * logits + shift).numpy(), raw.iou)
    return {"pairs": len(raw.quality), "scale": scale, "shift": shift,
            "ece_in_sample_before": raw.aggregate()["ece"], "ece_in_sample_after": fitted.aggregate()["ece"]}
