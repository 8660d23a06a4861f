import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from model.data.mrmedseg import load
from model.data.phantoms.generate import MODALITIES, SplitSpec, generate_dataset
from model.data.phantoms.knowledge import RELATIONS, SCENARIOS, RelationTable, question_variants
from model.data.phantoms.shapes import erode
from model.data.validate import validate_dataset


def test_generated_dataset_validates_with_zero_problems(phantom_root):
    report = validate_dataset(phantom_root)
    assert report.ok, report.summary()
    assert set(report.conversations) == {"train", "val", "test", "test_hard", "test_unseen"}


def test_splits_do_not_share_images(phantom_root):
    images = {split: {c.image for c in load(phantom_root / f"{split}.json")}
              for split in ("train", "val", "test", "test_hard", "test_unseen")}
    all_images = [i for s in images.values() for i in s]
    assert len(all_images) == len(set(all_images))


def test_hard_dialogues_are_long_chains_and_regular_ones_short(phantom_root):
    for conv in load(phantom_root / "test_hard.json"):
        assert 6 <= len(conv.rounds) <= 8
        depth = []
        for r in conv.rounds:
            depth.append(0 if r.reference is None else depth[r.reference] + 1)
        assert max(depth) >= 3
    for conv in load(phantom_root / "test.json"):
        assert 2 <= len(conv.rounds) <= 5


def test_every_relational_round_needs_its_reference():
    """Re-derive each relational round from a scene: another source would give another answer."""
    from model.data.phantoms.dialogues import plan_dialogue

    rng = np.random.default_rng(0)
    seen = set()
    for i, draw in enumerate(list(MODALITIES.values()) * 3):
        table = RelationTable(draw(160, np.random.default_rng(i)))
        for scenario in SCENARIOS:
            plan = plan_dialogue(table, rng, scenario=scenario, hard=False)
            for p in plan or []:
                if p.relation is not None:
                    source = plan[p.reference].entity
                    assert table.target(p.relation, source) is p.entity
                    assert table.needs_reference(p.relation, source, p.entity)
                    seen.add(p.relation.scenario)
    assert seen == set(SCENARIOS)


def test_modalities_and_entity_categories_cover_the_spec():
    categories = set()
    for i in range(4):
        for draw in MODALITIES.values():
            categories |= {e.category for e in draw(160, np.random.default_rng(i)).entities.values()}
    assert len(MODALITIES) >= 4
    assert len(categories) >= 20, sorted(categories)


def _inside(scene, category):
    e = next(e for e in scene.entities.values() if e.category == category)
    return scene.image[erode(e.mask, 2)].astype(float)


def test_images_have_the_intensity_signature_of_their_modality():
    draw = {name: fn(160, np.random.default_rng(1)) for name, fn in MODALITIES.items()}
    ct = draw["ct_abdomen"]
    assert ct.image[:8, :8].mean() < 10 and _inside(ct, "vertebra").mean() > 200  # air black, bone white
    liver = _inside(ct, "liver")
    lobe = _inside(draw["us_thyroid"], "thyroid lobe")
    # ultrasound speckle is multiplicative: far grainier than CT's additive noise on a parenchyma
    assert lobe.std() / lobe.mean() > 2 * liver.std() / liver.mean()
    assert _inside(draw["us_thyroid"], "carotid artery").mean() < 0.3 * lobe.mean()  # anechoic lumen
    xr = draw["xray_chest"]
    assert _inside(xr, "lung").mean() < _inside(xr, "heart").mean() - 30  # air-filled lungs darker
    mr = draw["mr_brain"]
    assert _inside(mr, "lateral ventricle").mean() > _inside(mr, "cerebral hemisphere").mean() + 40  # T2: CSF bright
    chest = draw["ct_chest"]
    assert _inside(chest, "lung").mean() < 90 < _inside(chest, "aorta").mean()


@pytest.mark.parametrize("relation", RELATIONS, ids=lambda r: r.name)
def test_each_relation_has_ten_training_paraphrases_and_disjoint_held_out_ones(relation):
    train = set(question_variants(relation, "round", 2, held_out=False))
    held = set(question_variants(relation, "round", 2, held_out=True))
    its = set(question_variants(relation, "its", 2, held_out=False))
    assert len(train) >= 10 and len(held) >= 3 and len(its) >= 10
    assert not train & held


def test_unseen_split_uses_only_held_out_phrasings(phantom_root):
    train_questions = {r.question for c in load(phantom_root / "train.json") for r in c.rounds}
    for conv in load(phantom_root / "test_unseen.json"):
        assert conv.extra["phrasing"] == "held-out"
        assert not {r.question for r in conv.rounds} & train_questions


def test_reference_phrasings_name_the_referenced_round(phantom_root):
    styles = set()
    for split in ("train", "val", "test", "test_hard"):
        for conv in load(phantom_root / f"{split}.json"):
            for k, (r, meta) in enumerate(zip(conv.rounds, conv.extra["rounds_meta"], strict=True)):
                styles.add(meta["ref_style"])
                if meta["ref_style"] == "round":
                    assert f"round {r.reference + 1}" in r.question
                elif meta["ref_style"] == "instance":
                    assert f"instance {r.reference + 1}" in r.question
                elif meta["ref_style"] == "its":
                    assert r.reference == k - 1
    assert {"round", "instance", "its", None} <= styles


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = {"train": SplitSpec(3, 2), "test": SplitSpec(2, 1, 0.0)}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_dataset(tmp_path / name, seed=seed, splits=spec, image_size=128, workers=1, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    stats = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert stats["seed"] == 5 and stats["statistics"]["train"]["conversations"] >= 5


def test_image_size_outside_the_supported_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="128..256"):
        generate_dataset(tmp_path, image_size=512, splits={"train": SplitSpec(1)}, workers=1, progress=False)
