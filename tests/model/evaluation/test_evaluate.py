"""Evaluation writes the paper-shaped tables, plot and pictures (shipped model, two dialogues a split)."""

import json

import pytest
import torch

from model.config import SHIPPED_TINY, ModelConfig
from model.data.images import load_mask
from model.data.mrmedseg import load
from model.evaluation.evaluate import Setting, evaluate, run_dialogues
from model.predictor import MultiRoundPredictor
from tests.conftest import box_prompted_sams


def test_evaluation_writes_every_table_for_both_protocols(tmp_path, phantom_root):
    results = evaluate(SHIPPED_TINY, phantom_root, tmp_path, limit=2, pictures=1, progress=False)
    refines = ModelConfig.load(SHIPPED_TINY / "config.json").seg.guided_filter_eps is not None
    tables = results["tables"]
    combos = {(r["protocol"], r["model"], r["split"]) for r in tables["main"]}
    for protocol in ("paper", "auto"):
        for model in ("MediRound", "MediRound + JCM"):
            for split in ("val", "test", "test_hard", "test_unseen"):
                assert (protocol, model, split) in combos
    assert {(r["protocol"], r["reference"]) for r in tables["reference_ablation"]} == \
        {(p, m) for p in ("paper", "auto") for m in ("none", "crop", "crop+box")}
    assert {(r["protocol"], r["references_from"]) for r in tables["error_propagation"]} == \
        {(p, s) for p in ("paper", "auto") for s in ("own", "truth")}
    assert {(r["protocol"], r["guided_filter"]) for r in tables.get("mask_refinement", [])} == \
        ({(p, g) for p in ("paper", "auto") for g in (False, True)} if refines else set())  # Table C: its filter
    assert {(r["protocol"], r["split"]) for r in tables["jcm_effect"]} == \
        {(p, s) for p in ("paper", "auto") for s in ("val", "test", "test_hard", "test_unseen")}
    for r in tables["jcm_effect"]:  # the paired difference is exactly the gap between Table 1's two rows
        dice = {row["model"]: row["overall"]["dice"] for row in tables["main"]
                if (row["protocol"], row["split"]) == (r["protocol"], r["split"])}
        assert r["overall"]["difference"] == pytest.approx(dice["MediRound + JCM"] - dice["MediRound"])
        assert r["overall"]["low"] <= r["overall"]["difference"] <= r["overall"]["high"]
    box = tables["box_prompted_sam"]
    assert [(r["sam"], r["split"]) for r in box] == \
        [(sam, split) for split in ("test", "real CT") for sam in box_prompted_sams(SHIPPED_TINY)]
    assert all(0.0 <= r["dice"] <= 1.0 for r in box) and all(r["n"] == 24 for r in box if r["split"] == "real CT")
    assert [r["overall"]["n"] for r in tables["real_ct"]] == [24, 24]  # every round of the real dialogues
    hard = next(r for r in tables["main"] if r["split"] == "test_hard" and r["protocol"] == "auto")
    assert set(hard["per_round"]) >= {"1", "6"}  # hard dialogues reach round 6 and beyond
    assert json.loads((tmp_path / "results.json").read_text())["tables"] == json.loads(json.dumps(tables))
    md = (tmp_path / "tables.md").read_text()
    assert "### Table 1 (paper protocol)" in md and "### Table 2 (auto protocol, test_hard)" in md
    assert all(f"### {name}" in md for name in ("Table A", "Table B", "Table D", "Table 3 analogue",
                                              "Real CT slices", "Answers (with JCM)"))
    assert ("### Table C" in md) == refines
    answers = {(r["protocol"], r["split"]): r for r in tables["answers"]}
    assert set(answers) == {(p, s) for p in ("paper", "auto") for s in ("val", "test", "test_hard", "test_unseen")}
    for (protocol, _), r in answers.items():  # generated answers are checked for the name; forced ones are not
        named = r["names"]
        assert named is None if protocol == "paper" else named["n"] == r["abstention"]["masked_present"] + \
            r["abstention"]["refused_present"] and named["right"] + named["wrong"] + named["unnamed"] == named["n"]
    for r in answers.values():  # the fixture's splits ask only about what the image shows
        counts = r["abstention"]
        assert counts["refused_absent"] + counts["masked_absent"] == 0 and r["abstention"]["recall"] is None
        judged = r["quality_calibration"]  # from the run without JCM: each of its masks scored once
        assert 0 < judged["n"] <= counts["masked_present"] + counts["refused_present"] and 0 <= judged["ece"] <= 1
    assert (tmp_path / "per_round.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(
        f"{p}_{s}_0.png" for p in ("paper", "auto") for s in ("test", "test_hard", "real"))


def test_ground_truth_references_replace_the_masks_later_rounds_crop_from(phantom_root):
    predictor = MultiRoundPredictor.from_checkpoint(SHIPPED_TINY)
    conv = load(phantom_root / "test_hard.json")[0]
    truths = [load_mask(phantom_root / r.mask) for r in conv.rounds]
    kept = run_dialogues(predictor, [conv], phantom_root, Setting("paper", references_from="truth"), keep=1).kept
    assert all((r.mask == t).all() for r, t in zip(predictor.rounds, truths, strict=True))
    assert not all((m == t).all() for m, t in zip(kept[0][1], truths, strict=True))  # scored on its own masks
    run_dialogues(predictor, [conv], phantom_root, Setting("paper"))
    assert not all((r.mask == t).all() for r, t in zip(predictor.rounds, truths, strict=True))
    with pytest.raises(ValueError, match="references_from 'own' or 'truth'"):
        Setting("paper", references_from="ground truth")


def test_table_3s_zero_shot_sam_is_litemedsam_as_published_beside_the_tuned_one(phantom_tokenizer, phantom_root):
    from model.build import build_model, build_sam
    from model.config import ModelConfig
    from model.evaluation.evaluate import box_prompted, zero_shot_sam

    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer).eval()
    with torch.no_grad():
        model.sam.mask_decoder.iou_token.weight.add_(1.0)  # as if fine-tuned
    zero = zero_shot_sam(model, cfg)
    published = build_sam(cfg.seg).state_dict()
    assert all(torch.equal(v, published[k]) for k, v in zero.sam.state_dict().items())
    assert not torch.equal(model.sam.mask_decoder.iou_token.weight, zero.sam.mask_decoder.iou_token.weight)
    convs = load(phantom_root / "test.json")[:1]
    tuned, zero_shot = box_prompted([model, zero], convs, phantom_root)
    assert tuned.aggregate()["overall"]["n"] == zero_shot.aggregate()["overall"]["n"] == len(convs[0].rounds)
    assert zero_shot.aggregate()["overall"]["dice"] > 0.5  # LiteMedSAM given the true box draws the structure
    scratch = ModelConfig.tiny_scratch()
    scratch.mllm.text["vocab_size"] = len(phantom_tokenizer)
    assert zero_shot_sam(build_model(scratch, phantom_tokenizer), scratch) is None
