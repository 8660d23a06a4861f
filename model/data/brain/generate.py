"""Write a whole real-brain MR-MedSeg dataset: images/, masks/, one JSON file per split, dataset.json.

The phantoms' layout and splits (``model.data.phantoms.generate``): ``train`` and ``val`` (regular
and hard dialogues mixed), ``test`` (regular), ``test_hard`` (hard) and ``test_unseen`` (regular,
held-out phrasings only). Images come from the volume's slabs (``splits.py``): train from the
training slices, val from the val slabs, the three test splits from the test slabs (they share
those slices, never a training one). Dialogues are planned and phrased by the phantoms' own
planner over the brain's relations. Output is a pure function of the seed, the sizes and the
template files, whatever the number of workers. ``BrainSplitSpec.absent`` puts "not in this image"
rounds into a split's dialogues (a structure the slice does not cut, a lesion, an organ of another
region; ``knowledge.absent_structures``), in every split of the defaults.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.data.brain import splits as slabs
from model.data.brain.knowledge import ABSENT_WEIGHTS, BrainRelationTable, absent_structures
from model.data.brain.scene import MODALITY, SOURCE, brain_slice
from model.data.brain.volume import ORIENTATIONS, TEMPLATES, load_brain
from model.data.images import save_mask
from model.data.mrmedseg import dump, parse_record
from model.data.phantoms.dialogues import add_absent, plan_dialogue, to_conversation
from model.data.phantoms.generate import ABSENT_SHARE, ABSENT_STREAM, _Inline, dataset_statistics  # as the phantoms
from model.data.phantoms.knowledge import SCENARIOS

GENERATOR_VERSION = 2  # 2: answers name what they found; "not in this image" rounds
# Drawn among the scenarios a slice carries; the counterpart fits nearly every axial and coronal slice, the
# others fewer (no organ-lesion: a healthy brain has no lesions).
SCENARIO_WEIGHTS = {"anatomical stratification": 1.5, "attribute relationship": 1.0, "spatial relationship": 1.5,
                    "strong inference": 1.5}


@dataclass(frozen=True)
class BrainSplitSpec:
    """``dialogues`` conversations on every slice of ``slab``; ``hard`` is the share of hard ones; ``absent`` the
    share of rounds (on average) about a structure the slice does not show, answered in words without a mask."""

    slab: str
    dialogues: int = 1
    hard: float = 0.3
    held_out: bool = False
    absent: float = 0.0

    def __post_init__(self):
        if self.slab not in ("train", "val", "test"):
            raise ValueError(f"slab must be 'train', 'val' or 'test', got {self.slab!r}")
        if not 0 <= self.absent <= 0.5:
            raise ValueError(f"absent must be a share of rounds within [0, 0.5], got {self.absent}")


def default_splits(scale: float = 1.0) -> dict[str, BrainSplitSpec]:
    """Dialogues per slice for training the tiny model; ``scale`` multiplies them (at least one per slice)."""

    def n(x):
        return max(1, round(x * scale))

    a = ABSENT_SHARE
    return {"train": BrainSplitSpec("train", n(6), 0.3, absent=a), "val": BrainSplitSpec("val", n(3), 0.3, absent=a),
            "test": BrainSplitSpec("test", n(4), 0.0, absent=a),
            "test_hard": BrainSplitSpec("test", n(4), 1.0, absent=a),
            "test_unseen": BrainSplitSpec("test", n(4), 0.0, held_out=True, absent=a)}


def _plan(table: BrainRelationTable, rng: np.random.Generator, hard: bool):
    """A dialogue plan for one slice and the scenario it was drawn for, or (None, None)."""
    scene = table.scene
    feasible = [sc for sc in SCENARIOS if sc in SCENARIO_WEIGHTS
                and any(next(table.feasible(e, sc), None) for e in scene.entities.values())]
    tried: set[str] = set()
    while len(tried) < len(feasible):
        left = [sc for sc in feasible if sc not in tried]
        weights = np.array([SCENARIO_WEIGHTS[sc] for sc in left])
        scenario = left[rng.choice(len(left), p=weights / weights.sum())]
        tried.add(scenario)
        for _ in range(4):
            plan = plan_dialogue(table, rng, scenario=scenario, hard=hard)
            if plan:
                return plan, scenario
    return None, None


def _slice_job(args) -> dict[str, list[dict]]:
    """Cut one slice, plan the dialogues of every split that uses it, write the files they need."""
    out, seed, templates, orientation, index, size, uses = args
    scene = brain_slice(load_brain(templates), orientation, index, size)
    table = BrainRelationTable(scene)
    absent = absent_structures(scene)
    image_id = scene.image_id
    used, results = {}, {}

    def mask_path(e):
        used[e.key] = e
        return f"masks/{image_id}_{e.key}.png"

    for split_idx, split, spec in uses:
        rng = np.random.default_rng([seed, split_idx, ORIENTATIONS.index(orientation), index])
        absent_rng = np.random.default_rng([seed, split_idx, ORIENTATIONS.index(orientation), index, ABSENT_STREAM])
        records = []
        for d in range(spec.dialogues):
            hard = bool(rng.random() < spec.hard)
            plan, scenario = _plan(table, rng, hard)
            if plan is None:
                continue
            plan = add_absent(plan, absent, ABSENT_WEIGHTS, absent_rng, spec.absent)
            meta = {"id": f"{split}_{image_id}_{d}", "modality": MODALITY, "scenario": scenario,
                    "difficulty": "hard" if hard else "regular", "phrasing": "held-out" if spec.held_out else "train",
                    "source": SOURCE, "orientation": orientation, "slice": index,
                    "position_mm": scene.position_mm}
            conv = to_conversation(scene, plan, rng, image=f"images/{image_id}.png", mask_path=mask_path,
                                   held_out=spec.held_out, meta=meta, absent_rng=absent_rng)
            records.append(conv.to_record())
        results[split] = records
    if used:
        Image.fromarray(scene.image).save(Path(out) / "images" / f"{image_id}.png")
        for key, e in used.items():
            save_mask(e.mask, Path(out) / "masks" / f"{image_id}_{key}.png")
    return results


def generate_dataset(out: str | Path, *, seed: int = 0, splits: dict[str, BrainSplitSpec] | None = None,
                     image_size: int = 192, stride: int = 1, workers: int = 2, templates: str | Path = TEMPLATES,
                     progress: bool = True) -> dict:
    """Generate the dataset under ``out``; returns the statistics also written to ``dataset.json``.

    ``stride`` keeps every n-th slice of each slab (1: all of them; more makes small sets for tests).
    """
    if not 128 <= image_size <= 256:
        raise ValueError(f"image_size must be within 128..256 pixels, got {image_size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    splits = splits or default_splits()
    by_slab = {name: cut[::stride] for name, cut in slabs.slices_by_slab(load_brain(templates)).items()}
    jobs = []
    for slab, cut in by_slab.items():
        uses = [(i, name, spec) for i, (name, spec) in enumerate(splits.items()) if spec.slab == slab]
        if uses:
            jobs += [(str(out), seed, str(templates), orientation, index, image_size, uses)
                     for orientation, index in cut]
    results: dict[str, list[dict]] = {name: [] for name in splits}
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for per_split in tqdm(pool.map(_slice_job, jobs, chunksize=4), total=len(jobs), desc="brain slices",
                              unit="slice", disable=not progress):
            for name, records in per_split.items():
                results[name] += records
    for name, records in results.items():
        dump([parse_record(r) for r in records], out / f"{name}.json")
    stats = {"generator_version": GENERATOR_VERSION, "seed": seed, "image_size": image_size, "stride": stride,
             "source": SOURCE, "templates": str(templates), "splits": {k: asdict(v) for k, v in splits.items()},
             "slabs": slabs.describe(), "slices": {k: len(v) for k, v in by_slab.items()},
             "statistics": dataset_statistics(results)}
    (out / "dataset.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats

