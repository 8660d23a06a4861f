import copy
import json
from pathlib import Path

import pytest

from model.data.mrmedseg import FormatError, dump, load, parse_record, read_records

SAMPLE = Path(__file__).parent / "official_sample.json"


def sample_record() -> dict:
    return copy.deepcopy(read_records(SAMPLE)[0])


def test_official_sample_parses_into_typed_rounds():
    (conv,) = load(SAMPLE)
    assert conv.image == "images/sample_0001.png"
    assert conv.rounds[0].question == "Segment the target region in the medical image."
    assert conv.rounds[0].reference is None and conv.rounds[0].mask == "masks/sample_0001_round_00.png"
    r1 = conv.rounds[1]
    assert (r1.reference, r1.reference_mask, r1.answer) == (0, "masks/sample_0001_round_00.png",
                                                            "The segmentation output is")
    assert r1.mask == "masks/sample_0001_round_01.png"
    assert conv.rounds[6].answer == "This part is segmented:"
    assert conv.rounds[7].answer == ""


def test_round_trip_reproduces_the_official_record_exactly(tmp_path):
    record = sample_record()
    assert parse_record(record).to_record() == record
    dump(load(SAMPLE), tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == [record]


@pytest.mark.parametrize("layout", ["list", "object", "jsonl"])
def test_reads_list_single_object_and_json_lines(tmp_path, layout):
    record = sample_record()
    path = tmp_path / "data.json"
    if layout == "list":
        path.write_text(json.dumps([record, record]))
    elif layout == "object":
        path.write_text(json.dumps(record))
    else:
        path.write_text(json.dumps(record) + "\n\n" + json.dumps(record) + "\n")
    assert len(load(path)) == (1 if layout == "object" else 2)


def test_extra_keys_survive_a_round_trip():
    record = {**sample_record(), "id": "x1", "scenario": "organ-lesion"}
    assert parse_record(record).to_record() == record


NOT_THERE = "There is no left kidney in this image."


def test_a_gpt_turn_without_tokens_is_a_round_about_a_structure_not_in_the_image():
    """The project's extension: 0 bracket tokens means "not present": no mask, the sentence kept whole."""
    record = sample_record()
    record["conversations"][19]["value"] = NOT_THERE  # the last round, which no round refers to
    conv = parse_record(record)
    last = conv.rounds[9]
    assert (last.mask, last.answer, last.has_mask, last.reference) == (None, NOT_THERE, False, 8)
    assert all(r.has_mask for r in conv.rounds[:9])
    assert parse_record(record).to_record() == record


def test_a_later_round_may_not_refer_to_a_round_that_found_nothing():
    record = sample_record()
    record["conversations"][3]["value"] = NOT_THERE  # round 1 finds nothing, and round 2 refers to it (ind 1)
    with pytest.raises(FormatError, match="a question may refer only to a round with a mask") as err:
        parse_record(record)
    assert err.value.turn == 4


@pytest.mark.parametrize("value", ["", ".", " .. "])
def test_a_gpt_turn_without_tokens_must_say_something(value):
    record = sample_record()
    record["conversations"][19]["value"] = value
    with pytest.raises(FormatError, match="must say in words") as err:
        parse_record(record)
    assert err.value.turn == 19


def test_a_round_without_a_mask_checks_itself():
    from model.data.mrmedseg import Round

    with pytest.raises(ValueError, match="must say in words"):
        Round(question="Segment the liver.", answer="", mask=None)
    with pytest.raises(ValueError, match="no REF-DECODE"):
        Round(question="Segment the liver.", answer=NOT_THERE, mask=None, answer_reference_mask="m.png")


def broken(mutate):
    record = sample_record()
    mutate(record)
    return record


def set_value(turn, value):
    def mutate(r):
        r["conversations"][turn]["value"] = value
    return mutate


CASES = {
    "odd count": (lambda r: r["conversations"].pop(), None, "odd count"),
    "wrong task": (lambda r: r.update(task="classification"), None, "task must be 'segmentation'"),
    "unknown token": (set_value(3, "It is [FOO-DECODE:a.png][MASK-DECODE:b.png]."), 3, "unknown bracket token"),
    "malformed token": (set_value(1, "[MASK-DECODE:masks/a.png."), 1, "malformed bracket token"),
    "token in wrong turn": (set_value(1, "[MASK-ENCODE:a.png]."), 1, "may not appear in this turn"),
    "three gpt tokens": (set_value(3, "[REF-DECODE:a.png][REF-DECODE:a.png][MASK-DECODE:b.png]."), 3,
                         "optionally preceded"),
    "three different gpt tokens": (set_value(3, "It is [REF-DECODE:a.png][MASK-DECODE:b.png][MASK-DECODE:c.png]."),
                                   3, "optionally preceded"),
    "ref-decode alone": (set_value(3, "It is [REF-DECODE:a.png]."), 3, "optionally preceded"),
    "ind missing": (lambda r: r["conversations"][2].pop("ind"), 2, "'ind' (the referenced round, 0-based) is missing"),
    "ind current": (lambda r: r["conversations"][2].update(ind=1), 2, "must point at an earlier round"),
    "ind later": (lambda r: r["conversations"][4].update(ind=5), 4, "must point at an earlier round"),
    "ind not int": (lambda r: r["conversations"][2].update(ind="0"), 2, "must be an integer"),
    "no image": (set_value(0, "Segment it."), 0, "must start with [IMAGE256"),
    "empty path": (set_value(1, "[MASK-DECODE:]."), 1, "empty path"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_record_names_file_record_turn_and_problem(case):
    mutate, turn, message = CASES[case]
    with pytest.raises(FormatError) as err:
        parse_record(broken(mutate), file="train.json", index=4)
    e = err.value
    assert (e.file, e.record, e.turn) == ("train.json", 4, turn)
    assert message in str(e)
    assert str(e).startswith("train.json, record 4")


def test_not_json_at_all_is_a_clear_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json\n")
    with pytest.raises(FormatError, match="neither JSON nor JSON Lines"):
        load(path)
