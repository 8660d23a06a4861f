import json

import numpy as np
import pytest
import torch

from model.evaluation.metrics import (
    AbstentionMetric,
    AnswerNames,
    MetricsBySplit,
    QualityCalibration,
    SegmentationMetric,
    intersection_and_union,
    paired_dice_difference,
)

# 2x2: P has 2 pixels, G has 3, they share 2 -> I=2, U=3, Dice=4/5, IoU=2/3.
P = np.array([[[1, 1], [0, 0]]], bool)
G = np.array([[[1, 1], [1, 0]]], bool)
EMPTY = np.zeros((1, 2, 2), bool)


def result(pred, gt):
    m = SegmentationMetric()
    m(pred, gt)
    return m.aggregate()["overall"]


def test_two_by_two_hand_computed():
    r = result(P, G)
    assert r["dice"] == pytest.approx(0.8) and r["giou"] == pytest.approx(2 / 3)
    assert r["ciou"] == pytest.approx(2 / 3) and r["n"] == 1


def test_empty_prediction_scores_zero():
    r = result(EMPTY, G)
    assert (r["dice"], r["giou"], r["ciou"]) == (0.0, 0.0, 0.0)


def test_empty_ground_truth_with_a_prediction_scores_zero():
    r = result(P, EMPTY)
    assert (r["dice"], r["giou"], r["ciou"]) == (0.0, 0.0, 0.0)


def test_both_empty_counts_one_for_dice_and_giou():
    r = result(EMPTY, EMPTY)
    assert (r["dice"], r["giou"]) == (1.0, 1.0)
    assert r["ciou"] == 1.0  # no union anywhere in the split


def test_ciou_is_a_ratio_of_sums_while_giou_is_a_mean():
    m = SegmentationMetric()
    m(P, G)  # I=2, U=3
    m(EMPTY, EMPTY)  # I=0, U=0 -> counts 1.0 in gIoU/Dice, nothing in cIoU
    big_p = np.zeros((1, 4, 4), bool)
    big_p[:, :2] = True  # 8 px
    big_g = np.zeros((1, 4, 4), bool)
    big_g[:, :1] = True  # 4 px inside it: I=4, U=8
    m(big_p, big_g)
    r = m.aggregate()["overall"]
    assert r["n"] == 3
    assert r["giou"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert r["dice"] == pytest.approx((0.8 + 1.0 + 8 / 12) / 3)
    assert r["ciou"] == pytest.approx((2 + 0 + 4) / (3 + 0 + 8))


def test_batches_accumulate_like_one_batch_and_rounds_report_one_based():
    preds = np.concatenate([P, EMPTY, P])
    gts = np.concatenate([G, G, P])
    one = SegmentationMetric()
    one(preds, gts, rounds=[0, 1, 1])
    split = SegmentationMetric()
    split(preds[:1], gts[:1], rounds=[0])
    split(torch.from_numpy(preds[1:]), torch.from_numpy(gts[1:]), rounds=torch.tensor([1, 1]))
    assert one.aggregate() == split.aggregate()
    per_round = one.aggregate()["per_round"]
    assert set(per_round) == {"1", "2"}
    assert per_round["2"]["dice"] == pytest.approx((0.0 + 1.0) / 2)


def _run(dice_by_dialogue: list[list[float]]) -> SegmentationMetric:
    """A metric whose dialogue d, round k scored Dice dice_by_dialogue[d][k] (masks of 10 pixels)."""
    m = SegmentationMetric()
    for d, scores in enumerate(dice_by_dialogue):
        for k, score in enumerate(scores):
            hit = round(10 * score)  # P and G of 10 pixels sharing hit: Dice = 2 * hit / 20
            pred, truth = np.zeros((1, 40), bool), np.zeros((1, 40), bool)
            pred[0, :10], truth[0, 10 - hit:20 - hit] = True, True
            m(pred, truth, rounds=[k], dialogue=d)
    return m


def test_paired_difference_is_mask_weighted_and_restricted_to_later_rounds():
    a = _run([[1.0, 1.0, 1.0, 0.6], [0.8, 0.8], [1.0, 0.4, 0.4, 1.0, 1.0]])
    b = _run([[1.0, 1.0, 1.0, 0.2], [0.8, 1.0], [1.0, 0.4, 0.4, 0.6, 0.6]])
    overall = paired_dice_difference(a, b)
    assert (overall["dialogues"], overall["n"]) == (3, 11)
    assert overall["difference"] == pytest.approx((0.4 - 0.2 + 0.8) / 11)
    assert overall["low"] < overall["difference"] < overall["high"]
    later = paired_dice_difference(a, b, from_round=4)
    assert (later["dialogues"], later["n"]) == (2, 3)  # the two-round dialogue has no round 4
    assert later["difference"] == pytest.approx((0.4 + 0.4 + 0.4) / 3)
    assert later["low"] == pytest.approx(0.4) and later["high"] == pytest.approx(0.4)  # every resample agrees


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    a = _run([[1.0, 0.6], [0.2, 0.8, 0.4]])
    assert paired_dice_difference(a, a) == {"dialogues": 2, "n": 5, "difference": 0.0, "low": 0.0, "high": 0.0}
    assert paired_dice_difference(a, a, from_round=9)["difference"] is None


def test_paired_difference_refuses_runs_over_different_rounds():
    with pytest.raises(ValueError, match="same dialogues and rounds"):
        paired_dice_difference(_run([[1.0, 0.6]]), _run([[1.0, 0.6, 0.2]]))
    with pytest.raises(ValueError, match="recorded with dialogue ids"):
        paired_dice_difference(SegmentationMetric(), SegmentationMetric())


def test_probabilities_threshold_at_one_half():
    inter, union = intersection_and_union(np.array([[0.6, 0.4]]), np.array([[1, 1]]))
    assert (inter[0], union[0]) == (1, 2)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        intersection_and_union(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))


def test_splits_write_json(tmp_path):
    metrics = MetricsBySplit()
    metrics["val"](P, G, rounds=[0])
    metrics["test_hard"](EMPTY, G, rounds=[3])
    metrics.to_json(str(tmp_path / "m.json"))
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["val"]["overall"]["dice"] == pytest.approx(0.8)
    assert data["test_hard"]["per_round"]["4"]["n"] == 1


def test_quality_calibration_by_hand():
    """Two bins of two masks: q 0.9 / 0.9 against IoU 0.8 / 0.6 (gap 0.2), q 0.2 / 0.2 against 0.2 / 0.2 (gap 0):
    ECE = 0.5 * 0.2 + 0.5 * 0 = 0.1. Ranks (ties share their mean): q 3.5 3.5 1.5 1.5, IoU 4 3 1.5 1.5, so
    Spearman = 4 / (2 x 4.5 ** 0.5) = 0.943."""
    metric = QualityCalibration(bins=2)
    metric([0.9, 0.9], [0.8, 0.6])
    metric(np.array([0.2, 0.2]), torch.tensor([0.2, 0.2]))
    result = metric.aggregate()
    assert result["n"] == 4 and result["ece"] == pytest.approx(0.1)
    assert [b["n"] for b in result["bins"]] == [2, 2] and result["bins"][1]["iou"] == pytest.approx(0.7)
    assert result["spearman"] == pytest.approx(4 / (2 * 4.5**0.5))
    perfect = QualityCalibration()
    perfect([0.05, 0.55, 0.95], [0.05, 0.55, 0.95])
    assert perfect.aggregate()["ece"] == pytest.approx(0.0) and perfect.aggregate()["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"qualities must lie in \[0, 1\]"):
        metric([1.5], [0.5])
    assert QualityCalibration().aggregate() == {"n": 0, "ece": None, "spearman": None, "bins": []}


def test_abstention_precision_recall_and_false_refusals_by_hand():
    metric = AbstentionMetric()
    for present, masked in [(False, False), (False, False), (False, True), (True, False), (True, True),
                            (True, True), (True, True)]:
        metric(present=present, answered_mask=masked)
    result = metric.aggregate()
    assert result["precision"] == pytest.approx(2 / 3)  # 3 refusals, 2 of them right
    assert result["recall"] == pytest.approx(2 / 3)  # 3 absent structures, 2 refused
    assert result["false_refusals"] == pytest.approx(1 / 4)  # 4 present structures, 1 refused
    assert AbstentionMetric().aggregate()["precision"] is None


def test_answer_names_by_hand():
    names = AnswerNames(["putamen", "left putamen", "right putamen", "liver", "liver lesion", "heart"])
    assert names.named("Within round 1: the left putamen [SEG].") == "left putamen"
    assert names.named("Sure, the liver lesion is [SEG].") == "liver lesion"
    assert names.named("The heartbeat is [SEG].") is None  # whole words only
    names("Within round 1: the Left Putamen [SEG].", "left putamen")  # right, whatever the case
    names("Sure, the putamen is [SEG].", "left putamen")  # a wider name is not the asked one
    names("Sure, the right putamen is [SEG].", "left putamen")
    names("[SEG].", "liver")
    assert names.aggregate() == {"n": 4, "right": 1, "wrong": 2, "unnamed": 1, "accuracy": 0.25}
    assert AnswerNames(["heart"]).aggregate()["accuracy"] is None
    with pytest.raises(ValueError, match="no structure names"):
        AnswerNames([" "])
