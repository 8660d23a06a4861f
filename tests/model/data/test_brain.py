"""The real-brain generator: format, determinism, honest slabs, sides, references and relations checked on the masks."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from model.data.brain import anatomy, splits
from model.data.brain.generate import BrainSplitSpec, default_splits, generate_dataset
from model.data.brain.knowledge import BY_RELATION, MIN_OFFSET, RELATIONS
from model.data.brain.scene import CONTACT_MM, MIN_AREA_MM2, brain_slice
from model.data.brain.volume import load_brain
from model.data.images import load_mask
from model.data.mrmedseg import load
from model.data.phantoms.knowledge import question_variants
from model.data.phantoms.shapes import dilate
from model.data.show import HEADER
from model.data.validate import validate_dataset
from model.questions import resolve_reference
from tests.conftest import require_brain_templates

SPLITS = ("train", "val", "test", "test_hard", "test_unseen")


@pytest.fixture(scope="session")
def brain_templates():
    return require_brain_templates()


@pytest.fixture(scope="session")
def brain_root(brain_templates, tmp_path_factory):
    """Every 7th slice of every slab, two dialogues per training slice and one per held-out slice and split."""
    root = tmp_path_factory.mktemp("brain")
    generate_dataset(root, seed=0, splits=default_splits(0.34), stride=7, workers=1, progress=False)
    return root


def _records(root: Path, split: str):
    return load(root / f"{split}.json")


def test_generated_dataset_validates_with_zero_problems(brain_root):
    report = validate_dataset(brain_root)
    assert report.ok, report.summary()
    assert set(report.conversations) == set(SPLITS)
    assert all(report.conversations[s] >= 5 for s in SPLITS), report.summary()


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers_other_seed_other_data(brain_templates, tmp_path):
    spec = {"train": BrainSplitSpec("train", 1), "test": BrainSplitSpec("test", 1, 0.0)}
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        generate_dataset(tmp_path / name, seed=seed, splits=spec, stride=30, workers=workers, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    stats = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert stats["seed"] == 5 and stats["slabs"]["axial"]["test"]["margin_slices"] == splits.MARGIN


def test_held_out_slabs_are_contiguous_and_training_keeps_a_margin_from_them(brain_root):
    positions = {}  # (split, orientation) -> slice positions in mm
    for split in SPLITS:
        for conv in _records(brain_root, split):
            positions.setdefault((split, conv.extra["orientation"]), set()).add(conv.extra["position_mm"])
    for orientation, slabs in splits.SLABS.items():
        train = positions[("train", orientation)]
        for slab_name, slab in slabs.items():
            held = set().union(*(positions.get((s, orientation), set()) for s in SPLITS
                                 if default_splits()[s].slab == slab_name))
            assert held, (orientation, slab_name)
            fold = abs if slab.mirrored else (lambda p: p)
            assert all(slab.lo <= fold(p) <= slab.hi for p in held), (orientation, slab_name, sorted(held))
            gap = min(abs(fold(p) - fold(q)) for p in train for q in held)
            assert gap > splits.MARGIN, (orientation, slab_name, gap)
    # and for every slice of the volume, not only the sampled ones: no slice in two slabs, none in a margin
    volume = load_brain()
    by_slab = splits.slices_by_slab(volume)
    seen = [s for cut in by_slab.values() for s in cut]
    assert len(seen) == len(set(seen))
    for orientation, index in by_slab["train"]:
        p = volume.position_mm(orientation, index)
        assert all(s.distance(p) > splits.MARGIN for s in splits.SLABS[orientation].values())


def test_val_and_test_meet_every_orientation_and_the_deep_nuclei(brain_root):
    for split in ("val", "test"):
        assert {c.extra["orientation"] for c in _records(brain_root, split)} == {"axial", "coronal", "sagittal"}
    volume = load_brain()
    test = [brain_slice(volume, o, i, 192) for o, i in splits.slices_by_slab(volume)["test"][::4]]
    categories = {e.category for s in test for e in s.entities.values()}
    assert {"caudate nucleus", "putamen", "thalamus", "hippocampus"} <= categories


def test_left_structures_lie_on_the_image_right_in_axial_and_coronal_slices(brain_templates):
    """Radiological display: the patient's left is on the image's right; axial top is anterior."""
    volume = load_brain()
    checked = 0
    for orientation, mm in (("axial", 10), ("axial", -30), ("coronal", -10), ("coronal", -60)):
        index = round(mm - volume.affine[2 if orientation == "axial" else 1, 3])
        scene = brain_slice(volume, orientation, index, 192)
        w = scene.image.shape[1]
        for e in scene.entities.values():
            if e.side is None:
                continue
            right_half = e.mask[:, w // 2:].sum() / e.area  # medial cortex may touch the midline by a pixel
            assert (right_half > 0.9) if e.side == "left" else (right_half < 0.1), (orientation, e.key, right_half)
            assert (e.centroid[0] > 0.5) == (e.side == "left"), (orientation, e.key, e.centroid)
            checked += 1
    assert checked > 50
    axial = brain_slice(volume, "axial", 80, 192)
    front, back = axial.entities["left_frontal_lobe"], axial.entities["left_occipital_lobe"]
    assert front.centroid[1] < back.centroid[1]  # anterior at the top
    coronal = brain_slice(volume, "coronal", 60, 192)
    assert coronal.entities["left_cuneus"].centroid[1] < coronal.entities["left_cerebellar_hemisphere"].centroid[1]
    sagittal = brain_slice(volume, "sagittal", 60, 192)  # x = -30: the left hemisphere, anterior on the left
    assert sagittal.entities["left_frontal_lobe"].centroid[0] < sagittal.entities["left_occipital_lobe"].centroid[0]
    assert all(e.side in ("left", None) for e in sagittal.entities.values())


def test_masks_are_at_least_the_minimum_size(brain_root):
    mm = load_brain().mm_per_pixel(192)
    for path in (brain_root / "masks").iterdir():
        assert load_mask(path).sum() >= MIN_AREA_MM2 / mm**2, path.name


def test_hard_dialogues_are_long_chains_and_regular_ones_short(brain_root):
    for conv in _records(brain_root, "test_hard"):
        assert 6 <= len(conv.rounds) <= 8
        depth = []
        for r in conv.rounds:
            depth.append(0 if r.reference is None else depth[r.reference] + 1)
        assert max(depth) >= 3
    for split in ("test", "test_unseen"):  # counting the rounds with a mask: "not in this image" ones come on top
        assert all(2 <= sum(r.has_mask for r in c.rounds) <= 5 for c in _records(brain_root, split))
    assert all(len(c.rounds) <= 8 for s in SPLITS for c in _records(brain_root, s))


def test_every_question_resolves_to_its_reference_in_all_three_phrasings(brain_root):
    styles = set()
    for split in SPLITS:
        for conv in _records(brain_root, split):
            for k, (r, meta) in enumerate(zip(conv.rounds, conv.extra["rounds_meta"], strict=True)):
                assert resolve_reference(r.question, k) == r.reference, (conv.extra["id"], k, r.question)
                styles.add(meta["ref_style"])
                if meta["ref_style"] in ("round", "instance"):
                    assert f"{meta['ref_style']} {r.reference + 1}" in r.question
                elif meta["ref_style"] == "its":
                    assert r.reference == k - 1
    assert {"round", "instance", "its", None} <= styles


def test_unseen_split_uses_only_held_out_phrasings(brain_root):
    train = {r.question for c in _records(brain_root, "train") for r in c.rounds}
    for conv in _records(brain_root, "test_unseen"):
        assert conv.extra["phrasing"] == "held-out"
        assert not {r.question for r in conv.rounds} & train


@pytest.mark.parametrize("relation", RELATIONS, ids=lambda r: r.name)
def test_each_relation_has_training_and_disjoint_held_out_paraphrases(relation):
    train = set(question_variants(relation, "round", 2, held_out=False))
    held = set(question_variants(relation, "round", 2, held_out=True))
    its = set(question_variants(relation, "its", 2, held_out=False))
    assert len(train) >= 10 and len(held) >= 3 and len(its) >= 10
    assert not train & held


def _side(key: str) -> str | None:
    return key.split("_")[0] if key.startswith(("left_", "right_")) else None


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return (xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0]


# (image x, image y) of each direction per orientation, for the checks below (written out again, not imported)
_DIRECTIONS = {"axial": {"anterior": (0, -1), "posterior": (0, 1)},
               "coronal": {"superior": (0, -1), "inferior": (0, 1)},
               "sagittal": {"anterior": (-1, 0), "posterior": (1, 0), "superior": (0, -1), "inferior": (0, 1)}}


def _check_relation(name, orientation, source, target, src_meta, tgt_meta, radius):
    src_side, tgt_side = _side(src_meta["entity"]), _side(tgt_meta["entity"])
    if name == "counterpart":
        assert src_meta["category"] == tgt_meta["category"] and {src_side, tgt_side} == {"left", "right"}
        if orientation != "sagittal":
            assert (_centroid(source)[0] - 0.5) * (_centroid(target)[0] - 0.5) < 0
    elif name.startswith("member:"):
        assert tgt_meta["category"] in anatomy.descendants(src_meta["category"])
        assert not (target & ~source).any(), "a member lies inside its group"
    elif name.startswith("container:"):
        assert src_meta["category"] in anatomy.descendants(tgt_meta["category"])
        assert not (source & ~target).any(), "a structure lies inside its group"
    elif name in ("medial", "lateral", *_DIRECTIONS["sagittal"]):
        (sx, sy), (tx, ty) = _centroid(source), _centroid(target)
        if name in ("medial", "lateral"):
            assert orientation != "sagittal" and tgt_side in (None, src_side)
            outward = abs(tx - 0.5) - abs(sx - 0.5)
            along, across = (outward if name == "lateral" else -outward), abs(ty - sy)
        else:
            vx, vy = _DIRECTIONS[orientation][name]
            along, across = (tx - sx) * vx + (ty - sy) * vy, abs((tx - sx) * vy - (ty - sy) * vx)
        assert along >= MIN_OFFSET and across < along, (name, along, across)
        assert (dilate(source, radius) & target).any(), "the structure in that direction borders its reference"
    elif name == "main_neighbour":
        assert (dilate(source, radius) & target).any()
    else:
        fact = next(f for f in anatomy.FACTS if f.name == name)
        assert fact.pairs[src_meta["category"]] == tgt_meta["category"] and src_side == tgt_side is not None


def test_every_relational_round_is_true_on_the_masks(brain_root):
    """Re-check each relational round from the mask files alone: containment, sides, direction, contact."""
    radius = max(1, round(CONTACT_MM / load_brain().mm_per_pixel(192)))
    seen = set()
    for split in SPLITS:
        for conv in _records(brain_root, split):
            metas = conv.extra["rounds_meta"]
            for r, meta in zip(conv.rounds, metas, strict=True):
                if r.reference is None:
                    continue
                assert meta["relation"] in BY_RELATION and meta["scenario"] == BY_RELATION[meta["relation"]].scenario
                source, target = load_mask(brain_root / r.reference_mask), load_mask(brain_root / r.mask)
                _check_relation(meta["relation"], conv.extra["orientation"], source, target, metas[r.reference],
                                meta, radius)
                seen.add(meta["relation"].split(":")[0])
    assert {"counterpart", "member", "container", "main_neighbour", "medial", "lateral", "anterior", "posterior",
            "superior", "inferior", "striatum_partner"} <= seen, seen


def test_every_relational_round_needs_its_reference(brain_root):
    """Rebuild each held-out slice's relations: the round's answer, and another source would give another one."""
    from model.data.brain.knowledge import BrainRelationTable

    volume, tables = load_brain(), {}
    for split in ("test", "test_hard"):
        for conv in _records(brain_root, split):
            key = (conv.extra["orientation"], conv.extra["slice"])
            if key not in tables:
                tables[key] = BrainRelationTable(brain_slice(volume, *key, 192))
            table, metas = tables[key], conv.extra["rounds_meta"]
            for r, meta in zip(conv.rounds, metas, strict=True):
                if r.reference is not None:
                    relation = BY_RELATION[meta["relation"]]
                    source = table.scene.entities[metas[r.reference]["entity"]]
                    target = table.target(relation, source)
                    assert target is not None and target.key == meta["entity"]
                    assert table.needs_reference(relation, source, target)


def test_dialogues_cover_four_scenarios_and_name_structures_with_their_side(brain_root):
    convs = [c for s in SPLITS for c in _records(brain_root, s)]
    assert {c.extra["scenario"] for c in convs} == {"anatomical stratification", "attribute relationship",
                                                    "spatial relationship", "strong inference"}
    for conv in convs:
        k = next(k for k, r in enumerate(conv.rounds) if r.has_mask)  # the first round that names a structure
        r, meta = conv.rounds[k], conv.extra["rounds_meta"][k]
        side = _side(meta["entity"])
        assert (f"the {side} {meta['category']}" if side else f"the {meta['category']}") in r.question


def test_cli_writes_a_brain_dataset_and_show_draws_it_with_the_patient_directions(brain_templates, tmp_path, capsys):
    from PIL import Image

    from serving.cli import main

    out = tmp_path / "brain"
    assert main(["data", "brain", "--out", str(out), "--seed", "0", "--stride", "40", "--scale", "0.2",
                 "--workers", "1"]) == 0
    assert "brain slices" in capsys.readouterr().out
    assert main(["data", "validate", str(out)]) == 0
    convs = load(out / "test.json")
    axial = next(i for i, c in enumerate(convs) if c.extra["orientation"] == "axial")
    png = tmp_path / "c.png"
    assert main(["data", "show", str(out / "test.json"), "--index", str(axial), "--out", str(png)]) == 0
    sheet = np.asarray(Image.open(png).convert("RGB"))
    yellow = (sheet[..., 0] > 200) & (sheet[..., 1] > 200) & (sheet[..., 2] < 80)
    panel = sheet.shape[1] // min(4, len(convs[axial].rounds))
    middle = slice(HEADER + 100, HEADER + 160)  # the first panel's left and right edges, half way down
    assert yellow[middle, :20].any() and yellow[middle, panel - 20:panel].any()  # R ... L


def test_answers_name_the_structure_with_its_side_and_say_how_it_relates(brain_root):
    from model.data.phantoms.knowledge import MAX_ANSWER_CHARS, named_answers, related_answers
    from model.data.template import answer_text

    related = 0
    for split in SPLITS:
        for conv in _records(brain_root, split):
            metas = conv.extra["rounds_meta"]
            for r, meta in zip(conv.rounds, metas, strict=True):
                if not r.has_mask:
                    continue
                side = _side(meta["entity"])
                assert meta["name"] == (f"{side} {meta['category']}" if side else meta["category"])
                assert f"the {meta['name']}" in r.answer or r.answer.startswith(f"The {meta['name']}"), r.answer
                assert answer_text(r.answer).count("[SEG]") == 1
                options = named_answers(meta["name"])
                if r.reference is not None:
                    relation = BY_RELATION[meta["relation"]]
                    options = related_answers(relation, meta["name"], r.reference + 1, metas[r.reference]["name"])
                    assert f"round {r.reference + 1}" in r.answer
                    assert any(how.split("{ref}")[0].strip().lower() in r.answer.lower() for how in relation.answers)
                    related += 1
                # bounded: the drawn wording is short, or the shortest there is for these names
                assert r.answer in options and (len(r.answer) <= MAX_ANSWER_CHARS or options == [r.answer]), r.answer
    assert related > 100


def _atlas_labels(volume, name: str, side: str | None) -> set[int]:
    """AAL label numbers of a structure or group on one side (both sides for an unsided group)."""
    wanted = anatomy.leaves(name)
    return {label for label, aal in volume.names.items()
            if (parse := anatomy.parse_aal(aal))[0].name in wanted and (side is None or parse[1] == side)}


def test_what_a_round_says_is_not_in_the_slice_has_no_atlas_voxel_on_it(brain_root):
    """Each "not in this image" round: no mask, no [SEG], nothing refers to it; a structure it names has no atlas
    voxel on that slice's plane, a lesion is asked of a healthy brain, an organ belongs to another body region."""
    from model.data.brain.knowledge import LESIONS
    from model.data.phantoms.knowledge import SEEN_IN
    from model.data.template import answer_text

    volume, kinds = load_brain(), {}
    for split in SPLITS:
        for conv in _records(brain_root, split):
            _, plane = volume.plane(conv.extra["orientation"], conv.extra["slice"])
            on_plane = set(np.unique(plane).tolist())
            for k, (r, meta) in enumerate(zip(conv.rounds, conv.extra["rounds_meta"], strict=True)):
                if r.has_mask:
                    continue
                kinds[split] = kinds.get(split, set()) | {meta["absent"]}
                assert r.mask is None and "[SEG]" not in answer_text(r.answer, has_mask=False)
                assert all(later.reference != k for later in conv.rounds[k + 1:])
                assert meta["name"] in r.question and meta["name"] in r.answer
                if meta["absent"] == "not in slice":
                    side = _side(meta["name"].replace(" ", "_"))
                    labels = _atlas_labels(volume, meta["category"], side)
                    assert labels and not labels & on_plane, (conv.extra["id"], meta["name"])
                    assert "slice" in r.answer
                elif meta["absent"] == "healthy brain":
                    assert meta["category"] in LESIONS
                else:
                    assert meta["absent"] == "other region" and "head" not in SEEN_IN[meta["category"]]
    assert set(kinds) == set(SPLITS), kinds  # training and every held-out split carry them
    assert set().union(*kinds.values()) == {"not in slice", "healthy brain", "other region"}
