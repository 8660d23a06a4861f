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


# -- answers that name what they found; rounds about what the image does not show ----------------------------------
def _relation_named(relation, answer: str, n: int) -> bool:
    """Whether ``answer`` says ``relation`` from round ``n``: one of its answer phrases, pointing at that round."""
    return f"round {n}" in answer and any(how.split("{ref}")[0].strip().lower() in answer.lower()
                                          for how in relation.answers)


def test_answers_name_their_structure_with_one_seg_and_relational_ones_say_how_it_relates(phantom_root):
    from model.data.phantoms.knowledge import MAX_ANSWER_CHARS, named_answers, related_answers
    from model.data.template import answer_text

    relations = {r.name: r for r in RELATIONS}
    named = related = 0
    for split in ("train", "val", "test", "test_hard", "test_unseen"):
        for conv in load(phantom_root / f"{split}.json"):
            metas = conv.extra["rounds_meta"]
            for r, meta in zip(conv.rounds, metas, strict=True):
                assert answer_text(r.answer).count("[SEG]") == 1 and "[SEG]" not in r.answer
                assert meta["name"].endswith(meta["category"]) and f"the {meta['name']}" in r.answer.lower(), meta
                if meta["relation"] is None:
                    options = named_answers(meta["name"])
                else:
                    relation = relations[meta["relation"]]
                    options = related_answers(relation, meta["name"], r.reference + 1, metas[r.reference]["name"])
                    assert _relation_named(relation, r.answer, r.reference + 1), (r.answer, meta)
                    related += 1
                assert r.answer in options and len(r.answer) <= MAX_ANSWER_CHARS, r.answer
                named += 1
    assert related > 20 and named > related


ABSENT_SPLITS = {"train": SplitSpec(10, 2, 0.3, absent=0.3), "test_unseen": SplitSpec(4, 1, 0.0, True, absent=0.3)}


@pytest.fixture(scope="module")
def absent_root(tmp_path_factory):
    """Phantoms where about a third of the rounds ask for a structure the image does not show."""
    root = tmp_path_factory.mktemp("absent")
    generate_dataset(root, seed=4, splits=ABSENT_SPLITS, image_size=128, workers=1, progress=False)
    return root


def test_rounds_about_what_the_image_does_not_show_have_no_mask_and_no_seg(absent_root):
    from model.data.mrmedseg import read_records
    from model.data.template import answer_text

    report = validate_dataset(absent_root)
    assert report.ok, report.summary()
    assert report.absent["train"] > 5 and report.absent["test_unseen"] > 0
    for split in ABSENT_SPLITS:
        records = read_records(absent_root / f"{split}.json")
        for record, conv in zip(records, load(absent_root / f"{split}.json"), strict=True):
            for k, (r, meta) in enumerate(zip(conv.rounds, conv.extra["rounds_meta"], strict=True)):
                if r.has_mask:
                    assert "absent" not in meta
                    continue
                gpt = record["conversations"][2 * k + 1]["value"]
                assert "[" not in gpt and gpt == r.answer  # no MASK-DECODE, no mask file
                assert "[SEG]" not in answer_text(r.answer, has_mask=False)
                assert meta["absent"] in ("other region", "not drawn") and meta["entity"] is None
                assert f"the {meta['name']}" in r.question and meta["name"] in r.answer
                assert all(later.reference != k for later in conv.rounds[k + 1:])  # nothing refers to it


def test_what_a_round_says_is_absent_is_really_absent_from_its_image(absent_root):
    """Redraw each image's scene: the asked category was never drawn on it, and is of another body region or one its
    modality could have drawn; the image's masks are all of other categories."""
    from model.data.phantoms.generate import draw_scene
    from model.data.phantoms.knowledge import DRAWS, REGIONS, SEEN_IN

    checked = set()
    for split_idx, split in enumerate(ABSENT_SPLITS):
        for conv in load(absent_root / f"{split}.json"):
            index = int(conv.extra["id"].split("_")[-2])
            _, modality, scene = draw_scene(4, split_idx, index, 128)
            assert modality == conv.extra["modality"]
            for r, meta in zip(conv.rounds, conv.extra["rounds_meta"], strict=True):
                if r.has_mask:
                    assert scene.entities[meta["entity"]].category == meta["category"]
                    continue
                category = meta["category"]
                assert category not in scene.drawn and not scene.of_category(category)
                region_ok = REGIONS[scene.modality] not in SEEN_IN[category]
                assert region_ok if meta["absent"] == "other region" else category in DRAWS[scene.modality]
                checked.add(meta["absent"])
    assert checked == {"other region", "not drawn"}


def test_absent_rounds_leave_the_other_rounds_as_they_were(tmp_path):
    """Adding them draws from their own stream: every other round keeps its target and reference."""
    def targets(root):
        return [[(r.mask, r.reference_mask) for r in c.rounds if r.has_mask] for c in load(root / "train.json")]

    for name, share in (("none", 0.0), ("some", 0.3)):
        generate_dataset(tmp_path / name, seed=2, splits={"train": SplitSpec(6, 1, 0.3, absent=share)},
                         image_size=128, workers=1, progress=False)
    some = load(tmp_path / "some" / "train.json")
    assert any(not r.has_mask for c in some for r in c.rounds)
    assert targets(tmp_path / "none") == targets(tmp_path / "some")


def test_the_tables_of_what_each_modality_draws_hold():
    from model.data.phantoms.generate import default_splits
    from model.data.phantoms.knowledge import DRAWS, SEEN_IN

    for i in range(6):
        for draw in MODALITIES.values():
            scene = draw(128, np.random.default_rng(i))
            assert {e.category for e in scene.entities.values()} <= scene.drawn <= DRAWS[scene.modality]
    assert set(SEEN_IN) <= set().union(*DRAWS.values())
    assert all(spec.absent > 0 for spec in default_splits().values())  # every split, training and held out
