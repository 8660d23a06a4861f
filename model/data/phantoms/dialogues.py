"""Multi-round dialogues over a phantom scene, in the MR-MedSeg format.

A dialogue starts by naming an entity outright; each later round either names a new entity or
asks, through a :class:`~model.data.phantoms.knowledge.Relation`, for an entity related to an
earlier round's output. A relational round is kept only when its answer depends on which round it
refers to (``Relation.needs_reference``). Hard dialogues are longer and chain references
(round 4 refers to 3, which refers to 2, ...). Answers name what they segment and how it relates
("Sure, the liver is [SEG].", "Inside round 1: the liver lesion [SEG].").

``add_absent`` puts "not in this image" rounds into a planned dialogue: a structure the image does not
show, asked for by name and answered in words, without a mask; no round refers to one. They are drawn
with their own random stream, so the other rounds keep their targets and references whatever the share.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from model.data.mrmedseg import Conversation, Round
from model.data.phantoms.knowledge import (
    Absent,
    Relation,
    RelationTable,
    absent_answers,
    absolute_questions,
    named_answers,
    question_variants,
    related_answers,
)
from model.data.phantoms.scene import Entity, Scene

REGULAR_ROUNDS, HARD_ROUNDS, HARD_CHAIN = (2, 5), (6, 8), 3
MAX_ROUNDS = HARD_ROUNDS[1]  # "not in this image" rounds never make a dialogue longer than the paper's eight


@dataclass
class PlannedRound:
    """A round's target (``entity``) and how it is reached; a "not in this image" round has ``absent`` instead."""

    entity: Entity | None
    reference: int | None = None
    relation: Relation | None = None
    depth: int = 0  # length of the reference chain ending here
    absent: Absent | None = None


def display_name(scene: Scene, entity: Entity) -> str:
    """How an answer names ``entity``: its unique name in the scene, else its category (with its side)."""
    return scene.name(entity) or (f"{entity.side} {entity.category}" if entity.side else entity.category)


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


def add_absent(plan: list[PlannedRound], absent: list[Absent], weights: dict[str, float], rng: np.random.Generator,
               share: float) -> list[PlannedRound]:
    """``plan`` with "not in this image" rounds about some of ``absent`` put in at random places.

    Each planned round brings one with probability ``share / (1 - share)``, so they make about ``share`` of the
    rounds; ``weights`` weighs the kinds of absence (``Absent.reason``). References are renumbered; the dialogue
    stays within ``MAX_ROUNDS`` and never asks about one structure twice.
    """
    if not 0 <= share <= 0.5:
        raise ValueError(f"share must be within [0, 0.5], got {share}")
    if share == 0 or not absent:
        return plan
    count = min(int(rng.binomial(len(plan), share / (1 - share))), MAX_ROUNDS - len(plan), len(absent))
    if count <= 0:
        return plan
    per_kind = Counter(a.reason for a in absent)
    weight = np.array([weights[a.reason] / per_kind[a.reason] for a in absent])
    chosen = rng.choice(len(absent), size=count, replace=False, p=weight / weight.sum())
    slots = np.sort(rng.integers(0, len(plan) + 1, size=count))  # each goes before planned round `slot`
    out, index = [], {}
    for k, planned in enumerate([*plan, None]):
        out += [PlannedRound(None, absent=absent[c]) for c, slot in zip(chosen, slots, strict=True) if slot == k]
        if planned is not None:
            index[k] = len(out)
            out.append(planned)
    return [replace(p, reference=index[p.reference]) if p.reference is not None else p for p in out]


def to_conversation(scene: Scene, plan: list[PlannedRound], rng: np.random.Generator, *, image: str, mask_path,
                    held_out: bool, meta: dict, absent_rng: np.random.Generator | None = None) -> Conversation:
    """Phrase a planned dialogue; ``mask_path(entity)`` gives the dataset-relative mask path.

    ``absent_rng`` (default ``rng``) phrases the "not in this image" rounds, so that adding them leaves the other
    rounds' draws as they were.
    """
    absent_rng = absent_rng or rng
    rounds, rounds_meta, named = [], [], 0
    for k, p in enumerate(plan):
        if p.absent is not None:
            options = absolute_questions(p.absent.name, held_out=held_out, first=k == 0)
            question = options[absent_rng.integers(len(options))]
            answers = absent_answers(p.absent.name, p.absent.where)
            rounds.append(Round(question=question, answer=answers[absent_rng.integers(len(answers))], mask=None))
            rounds_meta.append({"entity": None, "category": p.absent.category, "name": p.absent.name,
                                "relation": None, "scenario": None, "ref_style": None, "absent": p.absent.reason})
            continue
        name = display_name(scene, p.entity)
        if p.relation is None:
            options, style = absolute_questions(scene.name(p.entity), held_out=held_out, first=named == 0), None
            answers = named_answers(name)
        else:
            style = _ref_style(rng, k, p.reference)
            options = question_variants(p.relation, style, p.reference + 1, held_out=held_out)
            answers = related_answers(p.relation, name, p.reference + 1, display_name(scene, plan[p.reference].entity))
        named += 1
        question = options[rng.integers(len(options))]
        ref_mask = mask_path(plan[p.reference].entity) if p.reference is not None else None
        rounds.append(Round(question=question, answer=answers[rng.integers(len(answers))],
                            mask=mask_path(p.entity), reference=p.reference, reference_mask=ref_mask,
                            reference_box=ref_mask, answer_reference_mask=ref_mask))
        rounds_meta.append({"entity": p.entity.key, "category": p.entity.category, "name": name,
                            "relation": p.relation.name if p.relation else None,
                            "scenario": p.relation.scenario if p.relation else None, "ref_style": style})
    return Conversation(image=image, rounds=rounds, extra={**meta, "rounds_meta": rounds_meta})
