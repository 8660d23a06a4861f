"""Platt scaling of the JCM's quality: the fit recovers a known miscalibration, keeps q's order, and the model
reports the calibrated quality."""

import numpy as np
import pytest
import torch

from model.config import JCMConfig, ModelConfig
from model.evaluation.metrics import QualityCalibration
from model.training.calibration import fit_platt


def test_the_fit_recovers_a_known_scale_and_shift_and_removes_the_calibration_error():
    rng = np.random.default_rng(0)
    logit = rng.normal(0.0, 2.0, 4000)
    iou = 1 / (1 + np.exp(-(0.5 * logit - 1.0)))  # an overconfident judge: the truth is flatter and lower
    quality = 1 / (1 + np.exp(-logit))
    scale, shift = fit_platt(quality.tolist(), iou.tolist())
    assert scale == pytest.approx(0.5, abs=1e-3) and shift == pytest.approx(-1.0, abs=1e-3)
    before, after = QualityCalibration(), QualityCalibration()
    before(quality, iou)
    after(1 / (1 + np.exp(-(scale * logit + shift))), iou)
    assert before.aggregate()["ece"] > 0.1 and after.aggregate()["ece"] < 0.01


def test_a_judge_with_no_signal_is_flattened_and_too_few_pairs_are_refused():
    rng = np.random.default_rng(1)
    scale, shift = fit_platt(rng.uniform(0.05, 0.95, 500).tolist(), rng.uniform(0, 1, 500).tolist())
    assert 0 < scale < 0.1 and abs(shift) < 0.2  # q says nothing of the IoU: every q maps near the mean, 0.5
    with pytest.raises(ValueError, match="at least two"):
        fit_platt([0.5], [0.4])


def test_the_model_reports_the_calibrated_quality_and_the_config_keeps_it(tiny_model):
    model, cfg = tiny_model
    h = torch.randn(5, model.jcm.judge.mlp[0].in_features)
    with torch.no_grad():
        raw = torch.sigmoid(model.jcm.judge(h))
        model.jcm.calibration = (0.5, -1.0)
        _, q, corrected = model.jcm(h)
    assert torch.allclose(q, torch.sigmoid(0.5 * torch.logit(raw) - 1.0), atol=1e-5)
    assert torch.equal(corrected, q <= model.jcm.beta)
    cfg.jcm.calibration = (0.5, -1.0)
    assert ModelConfig.from_dict(cfg.to_dict()).jcm.calibration == (0.5, -1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        JCMConfig(calibration=(0.0, 1.0))


def test_calibrating_the_shipped_model_on_held_out_dialogues_sets_the_fit_on_model_and_config(phantom_root):
    from model.checkpoint import load_checkpoint
    from model.config import SHIPPED_TINY
    from model.data.mrmedseg import load
    from model.training.calibration import MIN_PAIRS, calibrate_quality

    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)
    report = calibrate_quality(model, tokenizer, cfg, [(phantom_root, load(phantom_root / "val.json")[:8])])
    assert report["pairs"] >= MIN_PAIRS and report["ece_in_sample_after"] <= report["ece_in_sample_before"] + 0.02
    assert model.jcm.calibration == cfg.jcm.calibration == (report["scale"], report["shift"]) != (1.0, 0.0)
