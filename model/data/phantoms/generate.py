"""Write a whole phantom MR-MedSeg dataset: images/, masks/, one JSON file per split, dataset.json.

Splits: ``train`` and ``val`` (regular and hard dialogues mixed), ``test`` (regular), ``test_hard``
(hard) and ``test_unseen`` (regular, phrased only with held-out templates). Every image belongs to
one split. Output is a pure function of the seed and the sizes. ``SplitSpec.absent`` puts "not in this
image" rounds into a split's dialogues (the default splits: ``ABSENT_SHARE`` of the rounds in every
split, so training teaches abstention and each held-out split measures it).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.data.images import save_mask
from model.data.mrmedseg import dump, parse_record
from model.data.phantoms.ct import ct_abdomen, ct_chest
from model.data.phantoms.dialogues import add_absent, plan_dialogue, to_conversation
from model.data.phantoms.knowledge import ABSENT_WEIGHTS, SCENARIOS, RelationTable, absent_structures
from model.data.phantoms.mr import mr_brain
from model.data.phantoms.ultrasound import us_thyroid
from model.data.phantoms.xray import xray_chest

MODALITIES = {"ct_abdomen": ct_abdomen, "ct_chest": ct_chest, "mr_brain": mr_brain, "xray_chest": xray_chest,
              "us_thyroid": us_thyroid}
GENERATOR_VERSION = 2  # 2: answers name what they found; "not in this image" rounds
ABSENT_SHARE = 0.1
"""Share of the rounds of the default splits that ask about a structure the image does not show."""
# Spatial and attribute relations fit almost every scene, the others only some: draw those more often.
SCENARIO_WEIGHTS = {"organ-lesion": 4.0, "anatomical stratification": 4.0, "attribute relationship": 1.0,
                    "spatial relationship": 1.0, "strong inference": 4.0}


@dataclass(frozen=True)
class SplitSpec:
    """``images`` images with ``dialogues`` conversations each; ``hard`` is the share of hard ones.

    ``absent`` is the share of rounds (on average) that ask about a structure the image does not show and are
    answered in words, without a mask; 0 gives none.
    """

    images: int
    dialogues: int = 1
    hard: float = 0.3
    held_out: bool = False
    absent: float = 0.0

    def __post_init__(self):
        if not 0 <= self.absent <= 0.5:
            raise ValueError(f"absent must be a share of rounds within [0, 0.5], got {self.absent}")


def default_splits(scale: float = 1.0) -> dict[str, SplitSpec]:
    """Sizes for training the tiny model on a 2-core CPU; ``scale`` shrinks or grows them all."""

    def n(x):
        return max(1, round(x * scale))

    a = ABSENT_SHARE
    return {"train": SplitSpec(n(1500), 2, 0.3, absent=a), "val": SplitSpec(n(150), 1, 0.3, absent=a),
            "test": SplitSpec(n(200), 1, 0.0, absent=a), "test_hard": SplitSpec(n(200), 1, 1.0, absent=a),
            "test_unseen": SplitSpec(n(200), 1, 0.0, held_out=True, absent=a)}


ABSENT_STREAM = 1  # the last seed word of an image's "not in this image" random stream


def draw_scene(seed: int, split_idx: int, index: int, size: int):
    """(rng, modality, scene) of image ``index`` of the ``split_idx``-th split: the same arguments, the same scene;
    ``rng`` goes on to plan and phrase its dialogues."""
    rng = np.random.default_rng([seed, split_idx, index])
    modality = list(MODALITIES)[int(rng.integers(len(MODALITIES)))]
    return rng, modality, MODALITIES[modality](size, rng)


def _image_job(args) -> list[dict]:
    """Draw one image, plan its dialogues, write the files they need; returns the records."""
    out, seed, split_idx, split, spec, i, size = args
    rng, modality, scene = draw_scene(seed, split_idx, i, size)
    absent_rng = np.random.default_rng([seed, split_idx, i, ABSENT_STREAM])  # its own: the rest draws as before
    absent = absent_structures(scene)
    image_id = f"{split}_{i:05d}"
    records, used = [], {}
    table = RelationTable(scene)
    feasible = [sc for sc in SCENARIOS if any(table.feasible(e, sc) for e in scene.entities.values())]
    for d in range(spec.dialogues):
        hard = bool(rng.random() < spec.hard)
        plan, tried = None, set()
        while plan is None and len(tried) < len(feasible):
            left = [sc for sc in feasible if sc not in tried]
            weights = np.array([SCENARIO_WEIGHTS[sc] for sc in left])
            scenario = left[rng.choice(len(left), p=weights / weights.sum())]
            tried.add(scenario)
            for _ in range(4):
                plan = plan_dialogue(table, rng, scenario=scenario, hard=hard)
                if plan:
                    break
        if plan is None:
            continue
        plan = add_absent(plan, absent, ABSENT_WEIGHTS, absent_rng, spec.absent)

        def mask_path(e, image_id=image_id):
            used[e.key] = e
            return f"masks/{image_id}_{e.key}.png"

        meta = {"id": f"{image_id}_{d}", "modality": modality, "scenario": scenario,
                "difficulty": "hard" if hard else "regular", "phrasing": "held-out" if spec.held_out else "train"}
        conv = to_conversation(scene, plan, rng, image=f"images/{image_id}.png", mask_path=mask_path,
                               held_out=spec.held_out, meta=meta, absent_rng=absent_rng)
        records.append(conv.to_record())
    if records:
        Image.fromarray(scene.image).save(Path(out) / "images" / f"{image_id}.png")
        for key, e in used.items():
            save_mask(e.mask, Path(out) / "masks" / f"{image_id}_{key}.png")
    return records


def generate_dataset(out: str | Path, *, seed: int = 0, splits: dict[str, SplitSpec] | None = None,
                     image_size: int = 192, workers: int = 2, progress: bool = True) -> dict:
    """Generate the dataset under ``out``; returns the statistics also written to ``dataset.json``."""
    if not 128 <= image_size <= 256:
        raise ValueError(f"image_size must be within 128..256 pixels, got {image_size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    splits = splits or default_splits()
    jobs = [(str(out), seed, s, name, spec, i, image_size)
            for s, (name, spec) in enumerate(splits.items()) for i in range(spec.images)]
    results: dict[str, list[dict]] = {name: [] for name in splits}
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for job, records in tqdm(zip(jobs, pool.map(_image_job, jobs, chunksize=8), strict=True),
                                 total=len(jobs), desc="phantoms", unit="image", disable=not progress):
            results[job[3]] += records
    for name, records in results.items():
        dump([parse_record(r) for r in records], out / f"{name}.json")
    stats = {"generator_version": GENERATOR_VERSION, "seed": seed, "image_size": image_size,
             "splits": {k: asdict(v) for k, v in splits.items()}, "statistics": dataset_statistics(results)}
    (out / "dataset.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


class _Inline:
    """A stand-in for a process pool when ``workers == 1`` (same results, one process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def dataset_statistics(results: dict[str, list[dict]]) -> dict:
    """Counts per split of modalities, scenarios, difficulty, rounds, reference phrasing, categories, and of the
    rounds about a structure the image does not show (``absent``, by reason; ``absent_share`` of all rounds)."""
    stats = {}
    for split, records in results.items():
        c = {key: Counter() for key in ("modality", "scenario", "difficulty", "rounds", "round_scenario",
                                        "ref_style", "category", "reference_distance", "absent")}
        for r in records:
            c["modality"][r["modality"]] += 1
            c["scenario"][r["scenario"]] += 1
            c["difficulty"][r["difficulty"]] += 1
            c["rounds"][len(r["rounds_meta"])] += 1
            turns = r["conversations"][0::2]
            for k, (m, turn) in enumerate(zip(r["rounds_meta"], turns, strict=True)):
                if m.get("absent"):
                    c["round_scenario"]["not in the image"] += 1
                    c["absent"][m["absent"]] += 1
                    continue
                c["round_scenario"][m["scenario"] or "named outright"] += 1
                c["ref_style"][m["ref_style"] or "none"] += 1
                c["category"][m["category"]] += 1
                if "ind" in turn:
                    c["reference_distance"][k - turn["ind"]] += 1
        rounds = sum(len(r["rounds_meta"]) for r in records)
        stats[split] = {"conversations": len(records), **{k: dict(sorted(v.items())) for k, v in c.items()},
                        "absent_share": round(sum(c["absent"].values()) / rounds, 4) if rounds else 0.0}
    return stats

