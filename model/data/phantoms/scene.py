"""A phantom scene: one rendered image and its labelled entity instances.

Every modality module returns a :class:`Scene`. Sides are the patient's: on the axial, PA and
transverse views drawn here the patient's right is on the image left (radiological convention).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Entity kinds, used by relations ("the lesion in ...", "the structure left of ...").
ORGAN, LESION, SUBSTRUCTURE, TISSUE, VESSEL, BONE = "organ", "lesion", "substructure", "tissue", "vessel", "bone"


@dataclass
class Entity:
    """One labelled instance: ``key`` is unique in its scene, ``category`` is what it is."""

    key: str
    category: str
    kind: str
    mask: np.ndarray  # (H, W) bool
    side: str | None = None  # the patient's "left" / "right", for paired structures
    parent: str | None = None  # key of the entity that contains it

    # Cached: read only once the scene is finished and masks no longer change.
    @cached_property
    def area(self) -> int:
        return int(self.mask.sum())

    @cached_property
    def centroid(self) -> tuple[float, float]:
        """(x, y) in 0..1 image units."""
        ys, xs = np.nonzero(self.mask)
        h, w = self.mask.shape
        return float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h


@dataclass
class Scene:
    """A rendered image (H, W) uint8 and its entities (in drawing order).

    ``drawn`` names every category the drawing tried to add, kept or not (too small, carved away):
    a category outside it was never painted, so the image does not show it.
    """

    modality: str
    image: np.ndarray
    entities: dict[str, Entity] = field(default_factory=dict)
    drawn: frozenset[str] = frozenset()

    def of_category(self, category: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.category == category]

    def children(self, key: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.parent == key]

    def name(self, entity: Entity) -> str | None:
        """A name that picks ``entity`` out of this scene without any reference, or None."""
        same = self.of_category(entity.category)
        if len(same) == 1:
            return entity.category
        if entity.side and sum(e.side == entity.side for e in same) == 1:
            return f"{entity.side} {entity.category}"
        return None


class SceneBuilder:
    """Collects entities while a modality draws; drops the ones too small to segment."""

    def __init__(self, modality: str, size: int, min_area: int = 12):
        self.modality, self.size, self.min_area = modality, size, min_area
        self.entities: dict[str, Entity] = {}
        self._count: Counter = Counter()
        self._tried: set[str] = set()

    def add(self, category: str, kind: str, mask: np.ndarray, *, side: str | None = None,
            parent: Entity | None = None, inside_parent: bool = True) -> Entity | None:
        """Add an instance; ``inside_parent`` clips it to its parent (a lesion to its organ)."""
        self._tried.add(category)
        if parent is not None and inside_parent:
            mask = mask & parent.mask
        if mask.sum() < self.min_area:
            return None
        self._count[category] += 1
        key = f"{category.replace(' ', '_')}_{self._count[category]}"
        entity = Entity(key, category, kind, mask, side, parent.key if parent else None)
        self.entities[key] = entity
        return entity

    def carve(self, entity: Entity | None, *others: Entity | None) -> None:
        """Remove the other entities' pixels from ``entity`` (what lies in front of it)."""
        if entity is None:
            return
        for o in others:
            if o is not None:
                entity.mask = entity.mask & ~o.mask

    def finish(self, image: np.ndarray) -> Scene:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        kept = {k: e for k, e in self.entities.items() if e.mask.sum() >= self.min_area}
        for e in kept.values():
            if e.parent not in kept:
                e.parent = None
        return Scene(self.modality, image, kept, frozenset(self._tried))


def side_of(x: float) -> str:
    """Patient side of an image x (0..1) under the radiological convention."""
    return "right" if x < 0.5 else "left"
