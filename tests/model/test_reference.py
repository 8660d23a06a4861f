import numpy as np
import pytest

from model.questions import ReferenceRoundError, resolve_reference
from model.reference import reference_box, reference_crop


@pytest.mark.parametrize("question, rounds, expected", [
    ("Segment the liver.", 0, None),
    ("Segment the lesion inside the output of round 1.", 2, 0),
    ("Show the paired structure on the other side of instance 2.", 3, 1),
    ("Please mark the vessel running alongside it.", 3, 2),
    ("Segment its largest lesion.", 1, 0),
    ("Where is the left lung? Please segment it.", 2, None),
    ("Based on instance 1, segment the lesion inside it.", 4, 0),
])
def test_references_resolve_from_the_question(question, rounds, expected):
    assert resolve_reference(question, rounds) == expected


def test_a_reference_to_a_missing_round_is_a_clear_error():
    with pytest.raises(ReferenceRoundError, match="refers to round 3, but the dialogue has rounds 1..2"):
        resolve_reference("Segment the lesion in round 3.", 2)
    with pytest.raises(ReferenceRoundError, match="first round"):
        resolve_reference("Segment its lesion.", 0)


def test_crop_and_box_follow_the_mask_with_a_small_mask_fallback():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:7] = True  # 3 x 5 = 15 pixels
    crop = reference_crop(image, mask)
    assert crop.shape == (5, 5, 3) and (crop[:3] == image[1:4, 2:7]).all() and not crop[3:].any()
    assert np.allclose(reference_box(mask), [2 / 8, 1 / 6, 6 / 8, 3 / 6])
    tiny = np.zeros((6, 8), bool)
    tiny[0, :9 - 1] = True
    assert np.allclose(reference_box(tiny), [0, 0, 1, 1]) and reference_crop(image, tiny).shape == (8, 8, 3)
