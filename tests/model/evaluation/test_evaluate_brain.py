"""The real-brain splits in the evaluation: Tables 1, 2, A and D, Dice per structure and per size, and the CLI."""

import csv
import json

import pytest

from model.cli import DEFAULT_BRAIN, _eval_brain
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.evaluation.evaluate import evaluate
from model.evaluation.structures import SIZE_BINS, size_bin
from serving.cli import build_parser, main
from tests.conftest import box_prompted_sams


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_brain_splits_join_the_tables_with_dice_per_structure_and_size(tmp_path, phantom_root, small_brain_root):
    results = evaluate(SHIPPED_TINY, phantom_root, tmp_path, limit=1, splits=("test",),
                       protocols=("auto",), real=False, brain=small_brain_root, pictures=1, progress=False)
    t = results["tables"]
    splits = ["test", "brain/test"]
    assert [(r["model"], r["split"]) for r in t["main"]] == \
        [(m, s) for m in ("MediRound", "MediRound + JCM") for s in splits]
    assert [r["split"] for r in t["jcm_effect"]] == splits
    assert {(r["split"], r["reference"]) for r in t["reference_ablation"]} == \
        {(s, m) for s in ("test", "brain/test") for m in ("none", "crop", "crop+box")}
    assert {r["split"] for r in t["error_propagation"]} == {"test"}
    assert [(r["sam"], r["split"]) for r in t["box_prompted_sam"]] == \
        [(sam, split) for split in ("test", "brain/test") for sam in box_prompted_sams(SHIPPED_TINY)]
    ceiling = next(r for r in t["box_prompted_sam"] if (r["sam"], r["split"]) == ("this checkpoint", "brain/test"))
    assert ceiling["n"] == sum(r["n"] for r in ceiling["per_size"])  # the box-prompted SAM, partitioned by size
    assert sum(r["n"] * r["dice"] for r in ceiling["per_size"]) / ceiling["n"] == pytest.approx(ceiling["dice"])

    for split in ("brain/test",):
        conv = load(small_brain_root / f"{split.removeprefix('brain/')}.json")[0]
        rows = [r for r in t["brain_per_structure"] if r["split"] == split]
        assert sorted(r["structure"] for r in rows) == sorted({m["category"] for m in conv.extra["rounds_meta"]})
        with_jcm = next(r for r in t["main"] if (r["model"], r["split"]) == ("MediRound + JCM", split))["overall"]
        for table in ("brain_per_structure", "brain_per_size"):  # both partition the rounds scored in Table 1
            part = [r for r in t[table] if r["split"] == split]
            assert sum(r["n"] for r in part) == with_jcm["n"] == len(conv.rounds)
            assert sum(r["n"] * r["dice"] for r in part) / with_jcm["n"] == pytest.approx(with_jcm["dice"])
    assert [r["structure"] for r in _csv(tmp_path / "per_structure.csv")] == \
        [r["structure"] for r in t["brain_per_structure"]]
    assert {r["size"] for r in _csv(tmp_path / "per_size.csv")} <= {label for _, label in SIZE_BINS}
    md = (tmp_path / "tables.md").read_text()
    for heading in ("Table 1 (auto protocol): ", "Table 1 (auto protocol, real brain)",
                    "Table 2 (auto protocol, brain/test)", "Real brain: Dice (%) per structure size",
                    "Real brain, brain/test (auto protocol", "Box-prompted SAM alone (this checkpoint) on brain/test"):
        assert f"### {heading}" in md, heading
    assert "| auto | none | brain/test |" in md  # Table A
    assert any(line.startswith("| this checkpoint | `") and "| brain/test |" in line
               for line in md.splitlines())  # Table 3 analogue
    assert (tmp_path / "samples" / "auto_brain_test_0.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["tables"]["brain_per_size"] == t["brain_per_size"]


def test_size_bins_cover_every_area_once():
    assert [size_bin(a) for a in (0.0, 0.49, 0.5, 1.49, 1.5, 4.99, 5.0, 100.0)] == \
        [label for _, label in SIZE_BINS for _ in range(2)]


def test_eval_names_a_missing_brain_and_uses_data_brain_only_when_it_is_there(tmp_path, phantom_root, capsys,
                                                                              monkeypatch, small_brain_root):
    args = ["eval", "--data", str(phantom_root), "--out", str(tmp_path / "eval"), "--no-real"]
    assert main([*args, "--brain", str(tmp_path / "nope")]) == 2
    assert "holds none of the splits" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    parsed = build_parser().parse_args(args)
    assert _eval_brain(parsed) is None and "no real-brain dataset at data/brain" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "brain").symlink_to(small_brain_root)
    assert _eval_brain(parsed) == DEFAULT_BRAIN
    assert _eval_brain(build_parser().parse_args([*args, "--no-brain"])) is None
