"""The model's ``mediround`` subcommands (``data``, ``train``, ``eval``) doing their real work on tiny inputs.

Left out, for time: ``train recipe`` training stages from nothing (~56 min; the stages and the loop
are tested in ``training/``), its ``--workers``/``--gpu`` paths (``training/test_distributed.py``
covers Ray Train) and ``eval --manifest`` (its regression re-score takes ~1.5 min;
``test_shipped.py`` checks that score).
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_SLICES
from model.data.show import HEADER, TARGET
from model.training.recipe import TINY
from serving.cli import main


def test_validate_reports_and_sets_the_exit_code(tmp_path, capsys):
    assert main(["data", "validate", str(REAL_SLICES), "--split", "dialogues"]) == 0
    assert "problems: 0" in capsys.readouterr().out
    (tmp_path / "train.json").write_text('[{"task": "vqa", "conversations": []}]')
    assert main(["data", "validate", str(tmp_path)]) == 1
    assert "task must be 'segmentation'" in capsys.readouterr().out


def test_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_phantoms(tmp_path_factory):
    """``data phantoms`` at scale 0.005: 8 train images with 2 dialogues each, 1 image in every other split."""
    out = tmp_path_factory.mktemp("cli") / "ds"
    assert main(["data", "phantoms", "--out", str(out), "--scale", "0.005", "--workers", "1",
                 "--image-size", "128"]) == 0
    return out


def test_phantoms_writes_every_split_with_the_asked_sizes(tiny_phantoms):
    stats = json.loads((tiny_phantoms / "dataset.json").read_text())
    assert {s: v["images"] for s, v in stats["splits"].items()} == \
        {"train": 8, "val": 1, "test": 1, "test_hard": 1, "test_unseen": 1}
    images = sorted((tiny_phantoms / "images").iterdir())
    assert len(images) == 12 and {Image.open(p).size for p in images} == {(128, 128)}
    conversations = {s: len(load(tiny_phantoms / f"{s}.json")) for s in stats["splits"]}
    assert {s: n for s, n in conversations.items() if s != "train"} == \
        {"val": 1, "test": 1, "test_hard": 1, "test_unseen": 1}
    assert 8 <= conversations["train"] <= 16  # a dialogue whose relational round would not depend on it is dropped
    assert conversations == {s: v["conversations"] for s, v in stats["statistics"].items()}
    assert len(load(tiny_phantoms / "test_hard.json")[0].rounds) >= 6


def test_validate_passes_the_phantoms_and_names_a_broken_mask(tiny_phantoms, tmp_path, capsys):
    assert main(["data", "validate", str(tiny_phantoms)]) == 0
    out = capsys.readouterr().out
    assert "problems: 0" in out and "distinct images: 12" in out
    broken = tmp_path / "ds"
    shutil.copytree(tiny_phantoms, broken)
    mask = broken / load(broken / "val.json")[0].rounds[0].mask
    Image.fromarray((np.array(Image.open(mask)) > 0).astype(np.uint8)).save(mask)  # 0/1 instead of 0/255
    assert main(["data", "validate", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "problems: 0" not in out and "a 0/1 mask would read as empty" in out
    assert str(mask) in out and "val.json" in out  # located: the file and the split that names it


def test_show_draws_one_panel_per_round(tiny_phantoms, tmp_path, capsys):
    rounds = len(load(tiny_phantoms / "train.json")[1].rounds)
    png = tmp_path / "c.png"
    assert main(["data", "show", str(tiny_phantoms / "train.json"), "--index", "1", "--out", str(png)]) == 0
    columns, rows = min(4, rounds), -(-rounds // 4)
    sheet = Image.open(png).convert("RGB")
    assert sheet.size == (columns * 256, HEADER + rows * (256 + 96))  # 256 px panels, 96 px text, the title
    assert sheet.getpixel((12, 29)) == tuple(TARGET)  # the legend's swatch of the mask colour
    assert main(["data", "show", str(tiny_phantoms / "train.json"), "--index", "999", "--out", str(png)]) == 2
    assert "--index must be within 0.." in capsys.readouterr().err


def test_eval_writes_the_tables_of_the_shipped_model(phantom_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(phantom_root), "--out", str(out), "--limit", "1", "--split", "test",
                 "--protocol", "paper", "--no-real", "--no-brain"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["limit"] == 1 and "real_ct" not in results["tables"]
    main_table = results["tables"]["main"]
    rounds = len(load(phantom_root / "test.json")[0].rounds)
    assert {(r["protocol"], r["split"]) for r in main_table} == {("paper", "test")}
    for row in main_table:  # one dialogue, every round scored; the shipped model segments most of it
        assert row["overall"]["n"] == rounds and 0.5 < row["overall"]["dice"] <= 1.0
        assert 0.0 <= row["overall"]["giou"] <= row["overall"]["dice"]
    md = (out / "tables.md").read_text()
    assert md in capsys.readouterr().out  # printed as well
    assert "### Table 1 (paper protocol)" in md and f"{100 * main_table[0]['overall']['dice']:.1f}" in md
    assert (out / "per_round.png").stat().st_size > 0


def test_train_recipe_rerun_of_a_finished_run_writes_the_final_checkpoint_and_manifest(phantom_root, tmp_path):
    """A run whose stages are all done: the rerun skips them, fits the JCM's calibration (no run had one)
    and writes ``<out>/checkpoint``."""
    run = tmp_path / "run"
    shutil.copytree(SHIPPED_TINY / "tokenizer", run / "tokenizer")
    for k, (stage, _) in enumerate(TINY.stages):
        shutil.copytree(SHIPPED_TINY, run / stage / "checkpoint")
        (run / stage / "seconds.json").write_text(json.dumps({"seconds": 10.0 * (k + 1)}))
    threads = torch.get_num_threads()
    try:
        assert main(["train", "recipe", "tiny", "--out", str(run), "--data", str(phantom_root), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    final = run / "checkpoint"
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["command"] == "mediround train recipe tiny"
    assert [s["name"] for s in manifest["stages"]] == ["sam", "align", "text", "mediround", "jcm"]
    seconds = manifest["stage_seconds"]
    assert {k: v for k, v in seconds.items() if k not in ("data+tokenizer", "calibration")} == \
        {"sam": 10.0, "align": 20.0, "text": 30.0, "mediround": 40.0, "jcm": 50.0}
    assert seconds["calibration"] > 0 and manifest["jcm_calibration"]["pairs"] > 0
    assert manifest["total_seconds"] == pytest.approx(sum(seconds.values()), abs=0.1)
    written, last = load_file(final / "model.safetensors"), load_file(run / "jcm" / "checkpoint" / "model.safetensors")
    assert written.keys() == last.keys() and all(torch.equal(written[k], last[k]) for k in last)  # nothing trained
