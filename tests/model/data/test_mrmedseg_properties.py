"""Property tests of the MR-MedSeg parser (model/data/mrmedseg.py), with hypothesis.

- Any JSON-ish record, and any bytes or text in a file, either parses or raises the module's own
  FormatError with a message; no KeyError, TypeError, IndexError, RecursionError, UnicodeDecodeError...
- parse -> write -> parse is the identity: a conversation made of valid parts comes back equal from its
  record, and any record that parses is a fixed point of parse(to_record(...)) after one pass.
- ``mediround data validate`` (model/data/validate.py) reports a broken split file as a problem instead of
  raising.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.data.mrmedseg import (
    GPT_TOKENS,
    HUMAN_TOKENS,
    Conversation,
    FormatError,
    Round,
    dump,
    iter_parsed,
    load,
    parse_record,
)
from model.data.validate import validate_dataset

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=80, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- strategies ----------------------------------------------------------------------------------
# JSON values of any shape, with keys and strings that sometimes are the format's own words.
format_words = st.sampled_from(["task", "segmentation", "base", "[null]", "conversations", "from", "value",
                                "human", "gpt", "ind", "[IMAGE256:a.png]", "[MASK-DECODE:m.png].",
                                "[MASK-ENCODE:m.png]", "[BOX-ENCODE:b.png]", "[REF-DECODE:r.png]", "[", "]", ":"])
json_text = st.one_of(format_words, st.text(max_size=20))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), json_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(json_text, inner, max_size=5)), max_leaves=25)


def token(name: str, path: str) -> str:
    return f"[{name}:{path}]"


any_token = st.builds(token, st.sampled_from(HUMAN_TOKENS + GPT_TOKENS + ("SEG", "FOO")),
                      st.sampled_from(["a.png", "", " ", "m/0.png", "x:y"]))
# Turn text: words, brackets, tokens (allowed or not), dots and whitespace, in any order.
turn_text = st.lists(st.one_of(st.text(max_size=8), any_token, st.sampled_from([".", " ", "..", "[", "]"])),
                     max_size=6).map("".join)


@st.composite
def near_valid_records(draw) -> dict:
    """Records shaped like MR-MedSeg whose parts are often valid and sometimes not."""
    n = draw(st.integers(1, 4))
    turns = []
    for k in range(n):
        human = draw(turn_text)
        if k == 0 and draw(st.booleans()):
            human = token("IMAGE256", "images/x.png") + " " + human
        turn = {"from": draw(st.sampled_from(["human", "human", "gpt", 3])), "value": human}
        if draw(st.booleans()):
            turn["ind"] = draw(st.one_of(st.integers(-2, 4), st.booleans(), st.text(max_size=2), st.floats()))
        gpt = draw(turn_text)
        if draw(st.booleans()):
            gpt += token("MASK-DECODE", "m.png") + "."
        turns += [turn, {"from": draw(st.sampled_from(["gpt", "gpt", "human"])), "value": gpt}]
    if draw(st.booleans()):
        turns = turns[:-1]
    record = {"task": draw(st.sampled_from(["segmentation", "segmentation", "other"])), "conversations": turns}
    if draw(st.booleans()):
        record["base"] = draw(json_values)
    record.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    return record


# The parts of a valid conversation: paths hold no brackets and are not blank; phrases hold no '[' (so no
# token can hide in them), are trimmed, and questions are not empty.
paths = st.text(st.characters(exclude_characters="[]"), min_size=1, max_size=12).filter(str.strip)
phrase_chars = st.characters(exclude_characters="[", exclude_categories=["Cs"])
questions = st.text(phrase_chars, min_size=1, max_size=40).map(str.strip).filter(bool)
answers = st.text(phrase_chars, max_size=40).map(str.strip)


# A round about a structure the image does not show says so in words (the project's extension of the format).
sentences = answers.filter(lambda a: any(c.isalnum() for c in a))


@st.composite
def conversations(draw) -> Conversation:
    rounds = []
    for k in range(draw(st.integers(1, 6))):
        found = [j for j in range(k) if rounds[j].has_mask]  # a question refers only to a round with a mask
        reference = draw(st.none() | st.sampled_from(found)) if found else None
        reference_mask = reference_box = None
        if reference is not None:
            reference_mask = draw(paths)
            reference_box = draw(st.none() | paths)
        if draw(st.integers(0, 4)) == 0:  # not in this image: words, no mask, no gpt token
            rounds.append(Round(question=draw(questions), answer=draw(sentences), mask=None, reference=reference,
                                reference_mask=reference_mask, reference_box=reference_box))
            continue
        rounds.append(Round(question=draw(questions), answer=draw(answers), mask=draw(paths), reference=reference,
                            reference_mask=reference_mask, reference_box=reference_box,
                            answer_reference_mask=draw(st.none() | paths)))
    extra = draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("task", "base", "conversations")),
                                 json_values, max_size=3))
    return Conversation(image=draw(paths), rounds=rounds, base=draw(st.sampled_from(["[null]", "", "b"])),
                        extra=extra)


# -- properties ----------------------------------------------------------------------------------
def parses_or_format_error(record) -> Conversation | None:
    try:
        return parse_record(record, file="f.json", index=0)
    except FormatError as e:
        assert e.message and str(e).startswith("f.json, record 0")
        return None


@FAST
@given(json_values)
def test_any_json_value_parses_or_is_a_format_error(value):
    parses_or_format_error(value)


@FAST
@given(near_valid_records())
@example({"task": "segmentation", "conversations": [
    {"from": "human", "value": "[IMAGE256:i.png] q"}, {"from": "gpt", "value": "Done.. [MASK-DECODE:m.png]."}]})
@example({"task": "segmentation", "conversations": [
    {"from": "human", "value": "[IMAGE256:i.png] q"}, {"from": "gpt", "value": "[MASK-DECODE:m.png] is it."}]})
def test_records_parse_or_fail_cleanly_and_what_parses_survives_a_round_trip(record):
    conv = parses_or_format_error(record)
    if conv is not None:
        again = parse_record(json.loads(json.dumps(conv.to_record())))
        assert again == conv


@FAST
@given(conversations())
def test_a_valid_conversation_comes_back_equal_from_its_record(conv):
    record = json.loads(json.dumps(conv.to_record()))
    assert parse_record(record) == conv
    assert parse_record(record).to_record() == record


@FILES
@given(conversations_list=st.lists(conversations(), min_size=1, max_size=3), jsonl=st.booleans())
def test_dump_then_load_is_the_identity(tmp_path, conversations_list, jsonl):
    path = tmp_path / "split.json"
    dump(conversations_list, path, jsonl=jsonl)
    assert load(path) == conversations_list


file_contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.lists(json_values.map(json.dumps), max_size=4).map(lambda lines: "\n".join(lines).encode()),
    st.integers(1, 6000).map(lambda n: b"[" * n),  # nesting deeper than json's recursion limit
    st.integers(1, 6000).map(lambda n: b"7" * n),  # an integer longer than int() converts by default
)


@FILES
@given(data=file_contents)
@example(data=b"\xff\xfe[]")
@example(data=b"[" * 100_000)
@example(data=b"9" * 5000)
@example(data=b"{}\n" + b"9" * 5000)
def test_a_file_of_any_bytes_loads_or_is_a_format_error_naming_it(tmp_path, data):
    path = tmp_path / "split.json"
    path.write_bytes(data)
    try:
        load(path)
    except FormatError as e:
        assert e.file == str(path) and e.message
    problems = [p for p in iter_parsed(path) if isinstance(p, FormatError)]
    assert all(p.file == str(path) and p.message for p in problems)


@FILES
@given(data=file_contents)
@example(data=b"\xff\xfe[]")
@example(data=b"[" * 100_000)
def test_validate_reports_a_broken_split_instead_of_raising(tmp_path, data):
    (tmp_path / "train.json").write_bytes(data)
    report = validate_dataset(tmp_path)
    assert all(isinstance(p, FormatError) and p.message for p in report.problems)


@FILES
@given(path=st.text(st.characters(exclude_characters="[]"), min_size=1, max_size=30).filter(str.strip)
       .filter(lambda p: not p.startswith("/")))
@example(path="a\x00b.png")
@example(path="x" * 300)
@example(path=".")
def test_validate_reports_any_named_file_that_cannot_be_read(tmp_path, path):
    """Paths in a record are arbitrary text: whatever they name, validation reports it, never raises."""
    record = {"task": "segmentation", "conversations": [
        {"from": "human", "value": f"[IMAGE256:{path}] Segment the liver."},
        {"from": "gpt", "value": f"[MASK-DECODE:{path}]."}]}
    (tmp_path / "train.json").write_text(json.dumps([record]))
    report = validate_dataset(tmp_path)
    assert all(isinstance(p, FormatError) and p.message for p in report.problems)
