"""Relations between entities of a scene, grouped by the paper's five scenarios, and their phrasings.

A :class:`Relation` maps a source entity to a target entity of the same scene (or None). Questions
are built from a request frame ("Segment {x}.") and a relation phrase ("the lesion inside {ref}");
a few frames and phrases of every relation are held out of training for the unseen-phrasing split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.data.phantoms.scene import BONE, LESION, ORGAN, SUBSTRUCTURE, VESSEL, Entity, Scene

SCENARIOS = ("organ-lesion", "anatomical stratification", "attribute relationship", "spatial relationship",
             "strong inference")

FRAMES = (
    "Segment {x}.", "Please segment {x}.", "Now segment {x}.", "Outline {x}.", "Show me {x}.",
    "Can you delineate {x}?", "Please mark {x}.", "Highlight {x}.", "Where is {x}? Please segment it.",
    "Next, find {x}.", "I want to see {x}.", "Identify and segment {x}.",
)
HELD_OUT_FRAMES = ("Could you pick out {x}?", "Produce a mask of {x}.", "Draw the boundary of {x}.")

# How a question names an earlier round (appendix D.1). "its" only for the round just before.
REF_PHRASES = {"round": ("the output of round {n}", "the result of round {n}", "the round {n} output"),
               "instance": ("instance {n}",)}
PREFIXES = ("Based on {ref}, ", "Referring to {ref}, ", "With reference to {ref}, ")


@dataclass(frozen=True)
class Relation:
    """``target(scene, source)`` gives the entity a question about ``source`` asks for."""

    name: str
    scenario: str
    target: Callable[[Scene, Entity], Entity | None]
    phrases: tuple[str, ...]  # with {ref}; "its" forms are derived by replacing {ref} with "it"
    held_out: tuple[str, ...]
    its: tuple[str, ...] = ()  # extra possessive forms ("its lesion")


def _dist(a: Entity, b: Entity) -> float:
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return float(np.hypot(ax - bx, ay - by))


def _unique_best(candidates: list[Entity], score: Callable[[Entity], float], margin: float) -> Entity | None:
    """The lowest-scoring candidate if it beats the runner-up by ``margin`` (relative), else None."""
    ranked = sorted(candidates, key=score)
    if not ranked:
        return None
    if len(ranked) > 1 and score(ranked[1]) * (1 - margin) < score(ranked[0]):
        return None
    return ranked[0]


def _lesion_in(scene, src):
    lesions = [e for e in scene.children(src.key) if e.kind == LESION]
    return _unique_best(lesions, lambda e: -e.area, 0.3) if src.kind == ORGAN else None


def _host(scene, src):
    return scene.entities.get(src.parent) if src.kind == LESION and src.parent else None


def _substructure(scene, src):
    subs = [e for e in scene.children(src.key) if e.kind == SUBSTRUCTURE]
    return subs[0] if len(subs) == 1 else None


def _enclosing(scene, src):
    return scene.entities.get(src.parent) if src.kind == SUBSTRUCTURE and src.parent else None


def _counterpart(scene, src):
    if src.side is None or src.kind == LESION:
        return None
    others = [e for e in scene.of_category(src.category) if e.side and e.side != src.side]
    return others[0] if len(others) == 1 else None


_COMPANION = {"carotid artery": "jugular vein", "jugular vein": "carotid artery", "aorta": "inferior vena cava",
              "inferior vena cava": "aorta"}


def _companion(scene, src):
    want = _COMPANION.get(src.category)
    found = [e for e in scene.of_category(want or "") if e.side == src.side]
    return found[0] if len(found) == 1 else None


def _nearest_same(scene, src):
    others = [e for e in scene.of_category(src.category) if e.key != src.key]
    return _unique_best(others, lambda e: _dist(src, e), 0.25) if src.kind == LESION else None


def _direction(dx_sign: int, dy_sign: int):
    """Nearest separate structure whose centroid lies in the given image direction."""

    def target(scene, src):
        if src.kind not in (ORGAN, VESSEL, BONE):
            return None
        sx, sy = src.centroid
        cands = []
        for e in scene.entities.values():
            if e.key == src.key or e.kind not in (ORGAN, VESSEL, BONE) or e.parent == src.key \
                    or src.parent == e.key or (e.mask & src.mask).any():
                continue
            dx, dy = e.centroid[0] - sx, e.centroid[1] - sy
            along, across = (dx * dx_sign, abs(dy)) if dx_sign else (dy * dy_sign, abs(dx))
            if along > 0.03 and across < along:
                cands.append(e)
        return _unique_best(cands, lambda e: _dist(src, e), 0.3)

    return target


def _same_side(category: str, source_categories: tuple[str, ...]):
    def target(scene, src):
        if src.category not in source_categories or src.side is None:
            return None
        found = [e for e in scene.of_category(category) if e.side == src.side]
        return found[0] if len(found) == 1 else None

    return target


def _resection(scene, src):
    return _host(scene, src) if src.category in ("liver lesion", "kidney lesion", "lung nodule") else None


def _viable_rim(scene, src):
    return _enclosing(scene, src) if src.category == "necrotic core" else None


RELATIONS = (
    Relation("lesion_in", "organ-lesion", _lesion_in,
             ("the lesion inside {ref}", "the lesion located in {ref}", "the abnormality within {ref}",
              "the largest lesion in {ref}"),
             ("the pathological focus that {ref} harbours",), its=("its lesion", "its largest lesion")),
    Relation("host_organ", "organ-lesion", _host,
             ("the organ that contains {ref}", "the organ in which {ref} lies", "the structure hosting {ref}"),
             ("the organ where {ref} was found",), its=("its host organ",)),
    Relation("substructure", "anatomical stratification", _substructure,
             ("the inner substructure of {ref}", "the structure nested inside {ref}",
              "the deeper compartment within {ref}"),
             ("the finer structure inside {ref}",), its=("its inner substructure", "its inner compartment")),
    Relation("enclosing", "anatomical stratification", _enclosing,
             ("the larger structure that encloses {ref}", "the structure that surrounds {ref}",
              "the parent structure of {ref}"),
             ("the anatomy one level above {ref}",), its=("its enclosing structure",)),
    Relation("counterpart", "attribute relationship", _counterpart,
             ("the paired structure on the other side of {ref}", "the contralateral counterpart of {ref}",
              "the mirror-image partner of {ref}"),
             ("the same structure as {ref} on the opposite side",), its=("its contralateral twin",)),
    Relation("companion_vessel", "attribute relationship", _companion,
             ("the vessel running alongside {ref}", "the companion vessel of {ref}",
              "the vessel that travels with {ref}"),
             ("the vessel paired with {ref} in the same sheath",), its=("its companion vessel",)),
    Relation("nearest_same", "spatial relationship", _nearest_same,
             ("the lesion of the same kind closest to {ref}", "the nearest similar lesion to {ref}",
              "the neighbouring lesion of the same type as {ref}"),
             ("the like lesion lying nearest to {ref}",), its=("its nearest sibling lesion",)),
    Relation("left_of", "spatial relationship", _direction(-1, 0),
             ("the structure immediately to the left of {ref} in the image",
              "the nearest structure on the image-left of {ref}", "the neighbour left of {ref} on the screen"),
             ("what lies just left of {ref} as displayed",), its=("its left-hand neighbour in the image",)),
    Relation("right_of", "spatial relationship", _direction(1, 0),
             ("the structure immediately to the right of {ref} in the image",
              "the nearest structure on the image-right of {ref}", "the neighbour right of {ref} on the screen"),
             ("what lies just right of {ref} as displayed",), its=("its right-hand neighbour in the image",)),
    Relation("above", "spatial relationship", _direction(0, -1),
             ("the structure directly above {ref} in the image", "the nearest structure over {ref} on the screen",
              "the neighbour just above {ref}"),
             ("what sits just over {ref} as displayed",), its=("its upper neighbour in the image",)),
    Relation("below", "spatial relationship", _direction(0, 1),
             ("the structure directly below {ref} in the image", "the nearest structure under {ref} on the screen",
              "the neighbour just below {ref}"),
             ("what sits just under {ref} as displayed",), its=("its lower neighbour in the image",)),
    Relation("compressed_ventricle", "strong inference", _same_side("lateral ventricle", ("brain tumor",)),
             ("the ventricle compressed by the mass effect of {ref}", "the fluid space that {ref} pushes on",
              "the ventricle most likely narrowed by {ref}"),
             ("the CSF space deformed by {ref}",)),
    Relation("compressed_lung", "strong inference", _same_side("lung", ("pleural effusion",)),
             ("the lung compressed by {ref}", "the lung that {ref} restricts", "the lung collapsing under {ref}"),
             ("the lung whose expansion {ref} limits",)),
    Relation("artery_at_risk", "strong inference", _same_side("carotid artery", ("thyroid nodule",)),
             ("the artery at risk if {ref} grew outwards", "the artery a surgeon must protect when removing {ref}",
              "the large artery next to which {ref} would spread"),
             ("the artery endangered by lateral growth of {ref}",)),
    Relation("resection", "strong inference", _resection,
             ("the organ that must be partly removed to resect {ref}", "the organ a surgeon operates on to take out "
              "{ref}", "the organ whose resection would cure {ref}"),
             ("the organ partially excised to remove {ref}",)),
    Relation("viable_rim", "strong inference", _viable_rim,
             ("the viable tumour tissue surrounding {ref}", "the enhancing rim around {ref}",
              "the living tumour shell that walls off {ref}"),
             ("the active tumour ring around {ref}",)),
)



class RelationTable:
    """Every relation (of ``relations``: the phantoms' unless given) applied to every entity of one scene,
    computed once."""

    def __init__(self, scene: Scene, relations: tuple[Relation, ...] | None = None):
        self.scene, self.relations = scene, relations if relations is not None else RELATIONS
        self._targets = {(rel.name, e.key): rel.target(scene, e) for rel in self.relations
                         for e in scene.entities.values()}

    def target(self, relation: Relation, source: Entity) -> Entity | None:
        return self._targets[relation.name, source.key]

    def needs_reference(self, relation: Relation, source: Entity, target: Entity) -> bool:
        """True when the same question about another entity of the scene has another answer."""
        return any(self._targets[relation.name, key] not in (None, target)
                   for key in self.scene.entities if key != source.key)

    def feasible(self, source: Entity, scenario: str | None = None):
        """(relation, target) pairs from ``source`` whose answer depends on the reference."""
        for rel in self.relations:
            t = self.target(rel, source)
            if t is not None and (scenario is None or rel.scenario == scenario) \
                    and self.needs_reference(rel, source, t):
                yield rel, t


def question_variants(relation: Relation, ref_style: str, n: int, *, held_out: bool) -> list[str]:
    """Every question text for ``relation`` pointing at round/instance ``n`` (1-based) in ``ref_style``.

    Training variants use training frames and phrases only; held-out variants use at least one held-out
    frame or phrase.
    """
    frames_tr, phrases_tr = FRAMES, relation.phrases
    frames_all, phrases_all = FRAMES + HELD_OUT_FRAMES, relation.phrases + relation.held_out
    out = []
    for frame in frames_all:
        for phrase in phrases_all:
            is_held = frame not in frames_tr or phrase not in phrases_tr
            if is_held != held_out:
                continue
            if ref_style == "its":
                out.append(frame.format(x=phrase.replace("{ref}", "it")))
            else:
                for ref in REF_PHRASES[ref_style]:
                    ref = ref.format(n=n)
                    out.append(frame.format(x=phrase.format(ref=ref)))
                    if phrase.endswith("{ref}") and frame.startswith(("Segment", "Outline")):
                        # "Based on instance 2, segment the lesion inside it." (appendix D.1)
                        clause = frame.format(x=phrase.replace("{ref}", "it"))
                        out += [p.format(ref=ref) + clause[0].lower() + clause[1:] for p in PREFIXES]
    if ref_style == "its":
        frames = HELD_OUT_FRAMES if held_out else FRAMES
        out += [f.format(x=p) for f in frames for p in relation.its]
    return out


def absolute_questions(name: str, *, held_out: bool, first: bool = False) -> list[str]:
    """Questions naming an entity outright ("Segment the left kidney."); ``first`` drops "Now ..."/"Next, ..."."""
    frames = HELD_OUT_FRAMES if held_out else FRAMES
    if first:
        frames = [f for f in frames if not f.startswith(("Now", "Next"))]
    return [f.format(x=f"the {name}") for f in frames]
