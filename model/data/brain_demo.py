"""A held-out real-brain dialogue to show people: a test-slab slice of the Colin27 brain and a dialogue on it.

``held_out_brain_dialogue(out)`` writes a few test-slab slices (never seen in training: ``brain.splits``)
under ``out`` and picks one dialogue whose later rounds build on earlier ones, on an axial slice
through the deep nuclei when there is one. The choice is a pure function of the arguments, so a
demo shows the same dialogue every time. Needs Debian's mricron-data.
"""

from __future__ import annotations

from pathlib import Path

from model.data.brain.generate import BrainSplitSpec, generate_dataset
from model.data.brain.volume import TEMPLATES
from model.data.mrmedseg import Conversation, load


def _appeal(conv: Conversation, orientation: str) -> tuple:
    """Sort key, best first: the orientation asked for, rounds that refer back, then length, then id."""
    refs = sum(r.reference is not None for r in conv.rounds)
    return (conv.extra.get("orientation") != orientation, -min(refs, 3), -min(len(conv.rounds), 5),
            conv.extra.get("id", ""))


def held_out_brain_dialogue(out: str | Path, *, seed: int = 0, orientation: str = "axial", max_rounds: int = 5,
                            templates: str | Path = TEMPLATES) -> tuple[Path, Conversation]:
    """(dataset root, conversation): a regular test dialogue of 3..``max_rounds`` rounds on a held-out slice.

    Generates the test slabs' every 3rd slice with two dialogues each under ``out`` (a second call reuses
    them). Raises ``FileNotFoundError`` naming the package when mricron-data is not installed.
    """
    root = Path(out)
    if not (root / "test.json").exists():
        generate_dataset(root, seed=seed, splits={"test": BrainSplitSpec("test", 2, 0.0)}, stride=3, workers=1,
                         templates=templates, progress=False)
    candidates = [c for c in load(root / "test.json") if 3 <= len(c.rounds) <= max_rounds]
    if not candidates:
        raise ValueError(f"no test dialogue of 3..{max_rounds} rounds under {root}")
    return root, min(candidates, key=lambda c: _appeal(c, orientation))
