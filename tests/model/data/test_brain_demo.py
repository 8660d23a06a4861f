"""The demo's real-brain dialogue: a held-out slice, rounds that build on each other, the same one every time."""

from model.data.brain import splits
from model.data.brain_demo import held_out_brain_dialogue
from tests.conftest import require_brain_templates


def test_the_demo_dialogue_is_on_a_held_out_slice_and_refers_back(tmp_path):
    require_brain_templates()
    root, conv = held_out_brain_dialogue(tmp_path / "brain")
    assert splits.slab_of(conv.extra["orientation"], conv.extra["position_mm"]) == "test"
    assert conv.extra["orientation"] == "axial" and 3 <= len(conv.rounds) <= 5
    assert sum(r.reference is not None for r in conv.rounds) >= 2
    assert (root / conv.image).exists() and all((root / r.mask).exists() for r in conv.rounds)
    again_root, again = held_out_brain_dialogue(tmp_path / "brain")  # reused, and the same choice
    assert (again_root, again.extra["id"], again.rounds) == (root, conv.extra["id"], conv.rounds)
    _, coronal = held_out_brain_dialogue(tmp_path / "brain", orientation="coronal")
    assert coronal.extra["orientation"] == "coronal"
