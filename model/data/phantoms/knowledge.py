"""Relations between entities of a scene, grouped by the paper's five scenarios, and their phrasings.

A :class:`Relation` maps a source entity to a target entity of the same scene (or None). Questions
are built from a request frame ("Segment {x}.") and a relation phrase ("the lesion inside {ref}");
a few frames and phrases of every relation are held out of training for the unseen-phrasing split.

Answers name what they found (``named_answers``, ``related_answers``: "Sure, the liver is",
"Across the midline from round 2: the left kidney", rendered "... [SEG]."), of at most
``MAX_ANSWER_CHARS`` characters where the names allow. Which categories each modality draws and
where in the body each may show (``DRAWS``, ``SEEN_IN``) give the structures an image does not show
(``absent_structures``), asked about in "not in this image" rounds and answered in words
(``absent_answers``).
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
    answers: tuple[str, ...] = ()  # how an answer says the relation, with {ref}: "across the midline from {ref}"

    def __post_init__(self):
        if not self.answers or not all("{ref}" in a for a in self.answers):
            raise ValueError(f"relation {self.name}: answers must say how the target relates to {{ref}}, got "
                             f"{self.answers}")


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
             ("the pathological focus that {ref} harbours",), its=("its lesion", "its largest lesion"),
             answers=("inside {ref}", "within {ref}")),
    Relation("host_organ", "organ-lesion", _host,
             ("the organ that contains {ref}", "the organ in which {ref} lies", "the structure hosting {ref}"),
             ("the organ where {ref} was found",), its=("its host organ",),
             answers=("containing {ref}", "hosting {ref}")),
    Relation("substructure", "anatomical stratification", _substructure,
             ("the inner substructure of {ref}", "the structure nested inside {ref}",
              "the deeper compartment within {ref}"),
             ("the finer structure inside {ref}",), its=("its inner substructure", "its inner compartment"),
             answers=("nested in {ref}", "inside {ref}")),
    Relation("enclosing", "anatomical stratification", _enclosing,
             ("the larger structure that encloses {ref}", "the structure that surrounds {ref}",
              "the parent structure of {ref}"),
             ("the anatomy one level above {ref}",), its=("its enclosing structure",),
             answers=("enclosing {ref}", "around {ref}")),
    Relation("counterpart", "attribute relationship", _counterpart,
             ("the paired structure on the other side of {ref}", "the contralateral counterpart of {ref}",
              "the mirror-image partner of {ref}"),
             ("the same structure as {ref} on the opposite side",), its=("its contralateral twin",),
             answers=("across the midline from {ref}", "opposite {ref}")),
    Relation("companion_vessel", "attribute relationship", _companion,
             ("the vessel running alongside {ref}", "the companion vessel of {ref}",
              "the vessel that travels with {ref}"),
             ("the vessel paired with {ref} in the same sheath",), its=("its companion vessel",),
             answers=("alongside {ref}", "running with {ref}")),
    Relation("nearest_same", "spatial relationship", _nearest_same,
             ("the lesion of the same kind closest to {ref}", "the nearest similar lesion to {ref}",
              "the neighbouring lesion of the same type as {ref}"),
             ("the like lesion lying nearest to {ref}",), its=("its nearest sibling lesion",),
             answers=("nearest to {ref}", "closest to {ref}")),
    Relation("left_of", "spatial relationship", _direction(-1, 0),
             ("the structure immediately to the left of {ref} in the image",
              "the nearest structure on the image-left of {ref}", "the neighbour left of {ref} on the screen"),
             ("what lies just left of {ref} as displayed",), its=("its left-hand neighbour in the image",),
             answers=("image-left of {ref}", "on the image-left of {ref}")),
    Relation("right_of", "spatial relationship", _direction(1, 0),
             ("the structure immediately to the right of {ref} in the image",
              "the nearest structure on the image-right of {ref}", "the neighbour right of {ref} on the screen"),
             ("what lies just right of {ref} as displayed",), its=("its right-hand neighbour in the image",),
             answers=("image-right of {ref}", "on the image-right of {ref}")),
    Relation("above", "spatial relationship", _direction(0, -1),
             ("the structure directly above {ref} in the image", "the nearest structure over {ref} on the screen",
              "the neighbour just above {ref}"),
             ("what sits just over {ref} as displayed",), its=("its upper neighbour in the image",),
             answers=("above {ref}", "just above {ref}")),
    Relation("below", "spatial relationship", _direction(0, 1),
             ("the structure directly below {ref} in the image", "the nearest structure under {ref} on the screen",
              "the neighbour just below {ref}"),
             ("what sits just under {ref} as displayed",), its=("its lower neighbour in the image",),
             answers=("below {ref}", "just below {ref}")),
    Relation("compressed_ventricle", "strong inference", _same_side("lateral ventricle", ("brain tumor",)),
             ("the ventricle compressed by the mass effect of {ref}", "the fluid space that {ref} pushes on",
              "the ventricle most likely narrowed by {ref}"),
             ("the CSF space deformed by {ref}",), answers=("compressed by {ref}", "narrowed by {ref}")),
    Relation("compressed_lung", "strong inference", _same_side("lung", ("pleural effusion",)),
             ("the lung compressed by {ref}", "the lung that {ref} restricts", "the lung collapsing under {ref}"),
             ("the lung whose expansion {ref} limits",), answers=("compressed by {ref}", "restricted by {ref}")),
    Relation("artery_at_risk", "strong inference", _same_side("carotid artery", ("thyroid nodule",)),
             ("the artery at risk if {ref} grew outwards", "the artery a surgeon must protect when removing {ref}",
              "the large artery next to which {ref} would spread"),
             ("the artery endangered by lateral growth of {ref}",),
             answers=("at risk from {ref}", "endangered by {ref}")),
    Relation("resection", "strong inference", _resection,
             ("the organ that must be partly removed to resect {ref}", "the organ a surgeon operates on to take out "
              "{ref}", "the organ whose resection would cure {ref}"),
             ("the organ partially excised to remove {ref}",),
             answers=("to operate on for {ref}", "partly resected with {ref}")),
    Relation("viable_rim", "strong inference", _viable_rim,
             ("the viable tumour tissue surrounding {ref}", "the enhancing rim around {ref}",
              "the living tumour shell that walls off {ref}"),
             ("the active tumour ring around {ref}",), answers=("surrounding {ref}", "walling off {ref}")),
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


# -- answers -------------------------------------------------------------------------------------------------------
# What the gpt turn says before its [SEG] (the template renders "<phrase> [SEG]."): the structure's name and, in a
# relational round, how it relates to the round it refers to. "{How}" is the relation's answer phrase capitalised.
MAX_ANSWER_CHARS = 64
"""Longest answer phrase (before ``[SEG]``) drawn while a shorter wording exists: a generated answer must end, with its
``[SEG]``, within the predictor's token budget (24 new tokens; 64 characters are at most about 23 tokens of the tiny
model's BPE). Only a long name and a long relation together go over it, in their shortest wording."""
NAMED_ANSWERS = ("Sure, the {x} is", "The {x} is", "Here is the {x}:", "This is the {x}:", "Sure, here is the {x}:")
RELATED_ANSWERS = ("{How}: the {x}", "The {x} {how} is", "Sure, the {x} {how} is", "Here is the {x} {how}:")
ANSWER_REFERENCES = ("round {n}", "the {ref} of round {n}")  # how an answer names the round it refers to
ABSENT_ANSWERS = {
    "image": ("There is no {x} in this image.", "No {x} is visible in this image.",
              "I cannot find the {x} in this image.", "This image does not show the {x}."),
    "slice": ("The {x} is not in this slice.", "This slice does not cut the {x}.", "There is no {x} in this slice."),
}


def _bounded(options: list[str]) -> list[str]:
    """The options of at most ``MAX_ANSWER_CHARS`` characters, or the shortest one if none is that short."""
    fit = [o for o in dict.fromkeys(options) if len(o) <= MAX_ANSWER_CHARS]
    return fit or [min(options, key=len)]


def named_answers(name: str) -> list[str]:
    """Answer phrases for a structure named outright: "Sure, the left kidney is"."""
    return _bounded([f.format(x=name) for f in NAMED_ANSWERS])


def related_answers(relation: Relation, name: str, n: int, reference_name: str) -> list[str]:
    """Answer phrases for ``name`` found through ``relation`` from round ``n`` (1-based) that showed
    ``reference_name``: "Across the midline from round 2: the left caudate nucleus"."""
    out = []
    for frame in RELATED_ANSWERS:
        for how in relation.answers:
            for ref in ANSWER_REFERENCES:
                h = how.format(ref=ref.format(n=n, ref=reference_name))
                out.append(frame.format(x=name, how=h, How=h[0].upper() + h[1:]))
    return _bounded(out)


def absent_answers(name: str, where: str = "image") -> list[str]:
    """Whole answers (no ``[SEG]``) saying that ``name`` is not in this image (``where="slice"``: this slice)."""
    return [f.format(x=name) for f in ABSENT_ANSWERS[where]]


# -- what an image does not show -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Absent:
    """A structure an image does not show, as a "not in this image" round asks for it."""

    name: str  # as the question and the answer say it: "left kidney"
    category: str
    reason: str  # why it is absent: "other region", "not drawn", "not in slice", "healthy brain"
    where: str = "image"  # how the answer says it (``ABSENT_ANSWERS``): "image" or "slice"


REGIONS = {"CT abdomen": "abdomen", "CT chest": "chest", "MR brain": "head", "X-ray chest": "chest",
           "US thyroid": "neck"}
"""The body region each phantom modality shows."""
DRAWS = {
    "CT abdomen": frozenset({"subcutaneous fat", "vertebra", "spinal canal", "psoas muscle", "liver", "spleen",
                             "stomach", "gallbladder", "kidney", "renal pelvis", "kidney lesion", "liver lesion",
                             "aorta", "inferior vena cava"}),
    "CT chest": frozenset({"subcutaneous fat", "vertebra", "spinal canal", "heart", "lung", "aorta", "trachea",
                           "pleural effusion", "lung nodule"}),
    "MR brain": frozenset({"skull", "brain", "cerebral hemisphere", "brain tumor", "tumor core", "necrotic core",
                           "lateral ventricle"}),
    "X-ray chest": frozenset({"lung", "heart", "trachea", "clavicle", "pleural effusion", "lung nodule"}),
    "US thyroid": frozenset({"trachea", "thyroid isthmus", "thyroid lobe", "carotid artery", "jugular vein",
                             "thyroid nodule"}),
}
"""Every category each phantom modality may draw (a test checks the drawings against it)."""
SEEN_IN = {
    "brain": {"head"}, "cerebral hemisphere": {"head"}, "lateral ventricle": {"head"}, "brain tumor": {"head"},
    "skull": {"head"},
    "thyroid lobe": {"neck", "chest"}, "thyroid isthmus": {"neck", "chest"}, "thyroid nodule": {"neck", "chest"},
    "carotid artery": {"head", "neck", "chest"}, "jugular vein": {"head", "neck", "chest"},
    "trachea": {"neck", "chest"}, "clavicle": {"neck", "chest"},
    "heart": {"chest", "abdomen"}, "lung": {"chest", "abdomen"}, "pleural effusion": {"chest", "abdomen"},
    "lung nodule": {"chest", "abdomen"}, "aorta": {"chest", "abdomen"}, "inferior vena cava": {"chest", "abdomen"},
    "liver": {"chest", "abdomen"}, "liver lesion": {"chest", "abdomen"}, "spleen": {"chest", "abdomen"},
    "stomach": {"chest", "abdomen"},
    "gallbladder": {"abdomen"}, "kidney": {"abdomen"}, "renal pelvis": {"abdomen"}, "kidney lesion": {"abdomen"},
    "psoas muscle": {"abdomen"},
}
"""Where in the body a real image may show each category a "not in this image" round can ask for. Generous on
purpose: a structure is asked for as absent from another region only when no image of that region shows it (the
liver is not absent from the chest: low chest slices cut it). Never asked for: what is everywhere or generic
(subcutaneous fat, vertebra, spinal canal, a tumour's core)."""
PAIRED = frozenset({"kidney", "renal pelvis", "psoas muscle", "lung", "cerebral hemisphere", "lateral ventricle",
                    "thyroid lobe", "carotid artery", "jugular vein", "clavicle"})
"""Categories named with a side ("left kidney")."""
ABSENT_WEIGHTS = {"other region": 0.6, "not drawn": 0.4}
"""How often each kind of absence is asked for on a phantom, when the scene has both."""


def absent_structures(scene: Scene, region: str | None = None) -> list[Absent]:
    """What ``scene`` does not show and a question may ask for: categories of another body region, and categories
    its own modality draws but did not draw here (no kidney on an upper abdominal slice, no lung nodule).

    ``region`` is the scene's body region (default: its phantom modality's); a scene not drawn by a phantom
    modality (the real brain) gets only the other regions' categories.
    """
    region = region or REGIONS[scene.modality]
    own = DRAWS.get(scene.modality, frozenset())
    out = []
    for category, regions in SEEN_IN.items():
        if category in scene.drawn or scene.of_category(category):
            continue
        if region not in regions:
            reason = "other region"
        elif category in own:
            reason = "not drawn"
        else:
            continue  # another modality's structure that an image of this region might show
        sides = ("left", "right") if category in PAIRED else (None,)
        out += [Absent(f"{side} {category}" if side else category, category, reason) for side in sides]
    return out
