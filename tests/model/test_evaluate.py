"""Evaluation writes the paper-shaped tables, plot and pictures (shipped model, two dialogues a split)."""

import json

from model.config import SHIPPED_TINY
from model.evaluate import evaluate


def test_evaluation_writes_every_table_for_both_protocols(tmp_path, phantom_root):
    results = evaluate(SHIPPED_TINY, phantom_root, tmp_path, limit=2, pictures=1, progress=False)
    tables = results["tables"]
    combos = {(r["protocol"], r["model"], r["split"]) for r in tables["main"]}
    for protocol in ("paper", "auto"):
        for model in ("MediRound", "MediRound + JCM"):
            for split in ("val", "test", "test_hard", "test_unseen"):
                assert (protocol, model, split) in combos
    assert {(r["protocol"], r["reference"]) for r in tables["reference_ablation"]} == \
        {(p, m) for p in ("paper", "auto") for m in ("none", "crop", "crop+box")}
    assert 0.0 <= tables["box_prompted_sam"]["dice"] <= 1.0
    assert [r["overall"]["n"] for r in tables["real_ct"]] == [24, 24]  # every round of the real dialogues
    hard = next(r for r in tables["main"] if r["split"] == "test_hard" and r["protocol"] == "auto")
    assert set(hard["per_round"]) >= {"1", "6"}  # hard dialogues reach round 6 and beyond
    assert json.loads((tmp_path / "results.json").read_text())["tables"] == json.loads(json.dumps(tables))
    md = (tmp_path / "tables.md").read_text()
    assert "### Table 1 (paper protocol)" in md and "### Table 2 (auto protocol, test_hard)" in md
    assert "### Table A" in md and "### Table 3 analogue" in md and "### Real CT slices" in md
    assert (tmp_path / "per_round.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(
        f"{p}_{s}_0.png" for p in ("paper", "auto") for s in ("test", "test_hard", "real"))
