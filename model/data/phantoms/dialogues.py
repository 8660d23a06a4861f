"""Multi-round dialogues over a phantom scene, in the MR-MedSeg format.

A dialogue starts by naming an entity outright; each later round either names a new entity or
asks, through a :class:`~model.data.phantoms.knowledge.Relation`, for an entity related to an
earlier round's output. A relational round is kept only when its answer depends on which round it
refers to (``Relation.needs_reference``). Hard dialogues are longer and chain references
(round 4 refers to 3, which refers to 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data.mrmedseg import Conversation, Round
from model.data.phantoms.knowledge import Relation, RelationTable, absolute_questions, question_variants
from model.data.phantoms.scene import Entity, Scene

# The official gpt-turn phrases (MR-MedSeg); "" gives a bare "[MASK-DECODE:...]." answer.
ANSWER_PHRASES = ("", "It is", "Sure,", "The segmentation output is", "The segment is",
                  "This part is segmented:", "Sure, it is", "Here is the result:")
REGULAR_ROUNDS, HARD_ROUNDS, HARD_CHAIN = (2, 5), (6, 8), 3


@dataclass
class PlannedRound:
    entity: Entity
    reference: int | None = None
    relation: Relation | None = None
    depth: int = 0  # length of the reference chain ending here


def _candidates(table: RelationTable, plan: list[PlannedRound], used: set[str], hard: bool, scenario: str):
    """(weight, PlannedRound) for every admissible next round."""
    scene, k = table.scene, len(plan)
    out = []
    for r, prev in enumerate(plan):
        for rel, target in table.feasible(prev.entity):
            if target.key in used:
                continue
            w = 4.0 if rel.scenario == scenario else 1.0
            w *= (4.0 if r == k - 1 else 0.7) if hard else (1.5 if r == k - 1 else 1.0)
            out.append((w, PlannedRound(target, r, rel, prev.depth + 1)))
    named = [e for e in scene.entities.values() if e.key not in used and scene.name(e)]
    out += [(0.6 / max(len(named), 1), PlannedRound(e)) for e in named]
    return out


def plan_dialogue(table: RelationTable, rng: np.random.Generator, *, scenario: str,
                  hard: bool) -> list[PlannedRound] | None:
    """Targets and references of one dialogue, or None if this scene cannot carry the scenario."""
    scene = table.scene
    lo, hi = HARD_ROUNDS if hard else REGULAR_ROUNDS
    n_rounds = int(rng.integers(lo, hi + 1))
    starts = [e for e in scene.entities.values() if scene.name(e)]
    useful = [e for e in starts if any(table.feasible(e, scenario))]
    pool = useful or starts
    if not pool:
        return None
    plan = [PlannedRound(pool[rng.integers(len(pool))])]
    used = {plan[0].entity.key}
    while len(plan) < n_rounds:
        cands = _candidates(table, plan, used, hard, scenario)
        if not cands:
            break
        weights = np.array([w for w, _ in cands])
        nxt = cands[rng.choice(len(cands), p=weights / weights.sum())][1]
        plan.append(nxt)
        used.add(nxt.entity.key)
    if len(plan) < lo or not any(p.relation and p.relation.scenario == scenario for p in plan):
        return None
    if hard and max(p.depth for p in plan) < HARD_CHAIN:
        return None
    return plan


def _ref_style(rng: np.random.Generator, k: int, reference: int) -> str:
    if reference == k - 1:
        return str(rng.choice(["round", "instance", "its"], p=[0.4, 0.3, 0.3]))
    return str(rng.choice(["round", "instance"], p=[0.55, 0.45]))


def to_conversation(scene: Scene, plan: list[PlannedRound], rng: np.random.Generator, *, image: str,
                    mask_path, held_out: bool, meta: dict) -> Conversation:
    """Phrase a planned dialogue; ``mask_path(entity)`` gives the dataset-relative mask path."""
    rounds, rounds_meta = [], []
    for k, p in enumerate(plan):
        if p.relation is None:
            options, style = absolute_questions(scene.name(p.entity), held_out=held_out, first=k == 0), None
        else:
            style = _ref_style(rng, k, p.reference)
            options = question_variants(p.relation, style, p.reference + 1, held_out=held_out)
        question = options[rng.integers(len(options))]
        ref_mask = mask_path(plan[p.reference].entity) if p.reference is not None else None
        rounds.append(Round(question=question, answer=ANSWER_PHRASES[rng.integers(len(ANSWER_PHRASES))],
                            mask=mask_path(p.entity), reference=p.reference, reference_mask=ref_mask,
                            reference_box=ref_mask, answer_reference_mask=ref_mask))
        rounds_meta.append({"entity": p.entity.key, "category": p.entity.category,
                            "relation": p.relation.name if p.relation else None,
                            "scenario": p.relation.scenario if p.relation else None, "ref_style": style})
    return Conversation(image=image, rounds=rounds, extra={**meta, "rounds_meta": rounds_meta})
