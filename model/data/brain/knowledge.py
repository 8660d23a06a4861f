"""What a question about a brain slice may ask for, given an earlier round's structure, and how it says so.

The relations are the phantoms' :class:`~model.data.phantoms.knowledge.Relation` (and their question
machinery: frames, reference phrasings, held-out variants), over four of the paper's five scenarios:

- attribute relationship: the contralateral counterpart (the phantoms' own relation and phrasing);
- anatomical stratification: a named member inside a group ("the putamen within the output of
  round 2") and the group of a kind that holds a structure ("the lobe that contains instance 1");
- spatial relationship: the structure immediately medial / lateral / anterior / posterior / superior /
  inferior, measured on the slice's masks, and the main neighbour (longest shared border);
- strong inference: same-side pairs that anatomy knowledge links (``anatomy.FACTS``).

A healthy brain has no lesions, so the organ-lesion scenario has nothing to carry; a lesion is one of
the things a "not in this image" round asks for (``absent_structures``), with a structure the slice
does not cut and an organ of another body region. Spatial answers are kept only when unambiguous:
the target touches the source, its centroid lies clearly in that direction (offset of at least
``MIN_OFFSET`` of the image, more along than across), and it borders the source at least
``CLEAR_WIN`` times more than any other candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.data.brain.anatomy import BY_NAME, FACTS, GROUP_BY_NAME, GROUP_WORDS, GROUPS, container, descendants
from model.data.brain.scene import GROUP, BrainSlice
from model.data.phantoms.knowledge import RELATIONS as PHANTOM_RELATIONS
from model.data.phantoms.knowledge import Absent, Relation, RelationTable
from model.data.phantoms.knowledge import absent_structures as phantom_absent_structures
from model.data.phantoms.scene import Entity

MIN_OFFSET = 0.02  # about 4 px at 192 px: closer centroids are side by side, not one beyond the other
CLEAR_WIN = 1.5

# (image x, image y) unit vector of each anatomical direction per orientation; medial/lateral depend on the side
_SCREEN = {
    "axial": {"anterior": (0, -1), "posterior": (0, 1)},
    "coronal": {"superior": (0, -1), "inferior": (0, 1)},
    "sagittal": {"anterior": (-1, 0), "posterior": (1, 0), "superior": (0, -1), "inferior": (0, 1)},
}


@dataclass(frozen=True)
class Offset:
    """Where ``target``'s centroid lies from ``source``'s along a direction and across it (image units)."""

    along: float
    across: float


def offset(scene: BrainSlice, source: Entity, target: Entity, direction: str) -> Offset | None:
    """The offset in an anatomical direction, or None when the slice cannot show that direction."""
    (sx, sy), (tx, ty) = source.centroid, target.centroid
    if direction in ("medial", "lateral"):
        if scene.orientation == "sagittal" or source.side is None:
            return None
        if target.side not in (None, source.side):
            return None  # the other hemisphere is contralateral, not medial
        outward = abs(tx - 0.5) - abs(sx - 0.5)  # the midline is the image's vertical centre line
        return Offset(outward if direction == "lateral" else -outward, abs(ty - sy))
    vector = _SCREEN[scene.orientation].get(direction)
    if vector is None:
        return None
    vx, vy = vector
    dx, dy = tx - sx, ty - sy
    return Offset(dx * vx + dy * vy, abs(dx * vy - dy * vx))


def _in_direction(direction: str):
    def target(scene: BrainSlice, src: Entity) -> Entity | None:
        if src.kind == GROUP:
            return None
        cands = []
        for e in scene.structures():
            o = offset(scene, src, e, direction) if e.key != src.key else None
            if o is not None and scene.contact.get((src.key, e.key), 0) > 0 and o.along >= MIN_OFFSET \
                    and o.across < o.along:
                cands.append(e)
        return _clear_winner(scene, src, cands)

    return target


def _clear_winner(scene: BrainSlice, src: Entity, cands: list[Entity]) -> Entity | None:
    """The candidate bordering ``src`` most, if it borders it ``CLEAR_WIN`` times more than the runner-up."""
    ranked = sorted(cands, key=lambda e: -scene.contact.get((src.key, e.key), 0))
    if not ranked:
        return None
    if len(ranked) > 1 and scene.contact[src.key, ranked[0].key] < CLEAR_WIN * scene.contact[src.key, ranked[1].key]:
        return None
    return ranked[0]


def _main_neighbour(scene: BrainSlice, src: Entity) -> Entity | None:
    if src.kind == GROUP:
        return None
    return _clear_winner(scene, src, [e for e in scene.structures() if (src.key, e.key) in scene.contact])


def _find(scene: BrainSlice, category: str, side: str | None) -> Entity | None:
    found = [e for e in scene.of_category(category) if e.side == side]
    return found[0] if len(found) == 1 else None


def _member(category: str):
    """The structure or group named ``category`` inside the source group, on its side."""

    def target(scene: BrainSlice, src: Entity) -> Entity | None:
        if src.kind != GROUP or category not in descendants(src.category):
            return None
        if src.side is not None:
            return _find(scene, category, src.side)
        inside = scene.of_category(category)  # a group of both sides (the cerebellum): only an unmistakable member
        return inside[0] if len(inside) == 1 else None

    return target


def _container(word: str):
    """The group of kind ``word`` (lobe, striatum, ...) that holds the source, on its side."""

    def target(scene: BrainSlice, src: Entity) -> Entity | None:
        group = container(src.category, word)
        if group is None:
            return None
        return _find(scene, group, src.side if GROUP_BY_NAME[group].sided else None)

    return target


def _fact(pairs: dict[str, str]):
    def target(scene: BrainSlice, src: Entity) -> Entity | None:
        want = pairs.get(src.category)
        return _find(scene, want, src.side) if want and src.side else None

    return target


def _member_relation(category: str) -> Relation:
    return Relation(
        f"member:{category}", "anatomical stratification", _member(category),
        (f"the {category} within {{ref}}", f"the {category} inside {{ref}}", f"the {category} that is part of {{ref}}"),
        (f"the {category} belonging to {{ref}}",), its=(f"its {category}",), answers=("within {ref}", "inside {ref}"))


def _container_relation(word: str) -> Relation:
    return Relation(
        f"container:{word}", "anatomical stratification", _container(word),
        (f"the {word} that contains {{ref}}", f"the {word} that {{ref}} is part of",
         f"the {word} in which {{ref}} lies"),
        (f"the {word} housing {{ref}}",), its=(f"its {word}",), answers=("containing {ref}", "holding {ref}"))


def _direction_relation(direction: str) -> Relation:
    return Relation(
        direction, "spatial relationship", _in_direction(direction),
        (f"the structure immediately {direction} to {{ref}}", f"the nearest structure {direction} to {{ref}}",
         f"the neighbour just {direction} to {{ref}}"),
        (f"the structure bordering {{ref}} on the {direction} side",), its=(f"its {direction} neighbour",),
        answers=(f"{direction} to {{ref}}", f"just {direction} to {{ref}}"))


_MEMBERS = sorted({m for g in GROUPS for m in descendants(g.name)})
_COUNTERPART = next(r for r in PHANTOM_RELATIONS if r.name == "counterpart")  # phrasing and rule fit as they are

RELATIONS: tuple[Relation, ...] = (
    _COUNTERPART,
    *(_member_relation(m) for m in _MEMBERS),
    *(_container_relation(w) for w in GROUP_WORDS),
    *(_direction_relation(d) for d in ("medial", "lateral", "anterior", "posterior", "superior", "inferior")),
    Relation("main_neighbour", "spatial relationship", _main_neighbour,
             ("the structure sharing the longest border with {ref}", "the main neighbour of {ref}",
              "the structure that {ref} borders most"),
             ("the structure with the longest common boundary with {ref}",), its=("its main neighbour",),
             answers=("bordering {ref} most", "sharing the longest border with {ref}")),
    *(Relation(f.name, "strong inference", _fact(f.pairs), f.phrases, f.held_out, f.its, f.answers) for f in FACTS),
)
BY_RELATION = {r.name: r for r in RELATIONS}
assert all(m in BY_NAME or m in GROUP_BY_NAME for m in _MEMBERS)


class BrainRelationTable(RelationTable):
    """Every brain relation applied to every structure of one slice, computed once."""

    def __init__(self, scene: BrainSlice):
        super().__init__(scene, RELATIONS)


LESIONS = ("brain tumor", "tumor", "lesion")
"""What a "not in this image" round may ask for on a healthy brain (the atlas brain has none)."""
ABSENT_WEIGHTS = {"not in slice": 0.6, "healthy brain": 0.2, "other region": 0.2}
"""How often each kind of absence is asked for on a brain slice."""


def absent_structures(scene: BrainSlice) -> list[Absent]:
    """What a brain slice does not show and a question may ask for: a structure or group the slice does not cut
    (``BrainSlice.uncut``, named with its side), a lesion (the brain is healthy), an organ of another body region."""
    out = [Absent(f"{side} {name}" if side else name, name, "not in slice", "slice") for name, side in
           sorted(scene.uncut, key=lambda k: (k[0], k[1] or ""))]
    out += [Absent(name, name, "healthy brain") for name in LESIONS]
    return out + phantom_absent_structures(scene, region="head")
