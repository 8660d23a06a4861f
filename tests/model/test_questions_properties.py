"""Property tests of the question and reference rules (model/questions.py), with hypothesis.

Over arbitrary unicode text and round counts: ``normalize_question`` returns trimmed single-spaced text
(idempotent) or raises QuestionError; ``resolve_reference`` / ``check_reference`` / ``round_reference``
return None or the index of an existing earlier round, or raise ReferenceRoundError, with a message;
nothing else escapes.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from model.questions import (
    QuestionError,
    ReferenceRoundError,
    check_reference,
    normalize_question,
    resolve_reference,
    round_reference,
)

FAST = settings(max_examples=500, deadline=None)

# Text that often says "round N", "instance #N", "it" or "its", next to arbitrary unicode (non-ASCII digits
# and whitespace included), with numbers of any length.
numbers = st.one_of(st.integers(-3, 12).map(str), st.integers(0, 10**30).map(str),
                    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=6),
                    st.integers(4301, 5000).map(lambda n: "9" * n))
reference_words = st.builds(lambda word, sep, n: f"{word}{sep}{n}", st.sampled_from(["round", "Round", "instance",
                                                                                      "ROUND", "round#"]),
                            st.sampled_from(["", " ", " # ", "\u00a0", "\t"]), numbers)
fragments = st.one_of(st.text(max_size=12), reference_words, st.sampled_from(["it", "its", "It", "?", " ", "\n"]))
question_texts = st.lists(fragments, max_size=6).map(" ".join)
round_counts = st.integers(0, 20)


def expect_reference(call):
    """The result of ``call()``, or None after a ReferenceRoundError with a message; nothing else may escape."""
    try:
        return call()
    except ReferenceRoundError as e:
        assert str(e)
        return "refused"


@FAST
@given(st.text())
@example("\u2003\u00a0")
@example(" a \n\t b ")
def test_normalize_question_trims_and_is_idempotent_or_refuses_empty(text):
    try:
        out = normalize_question(text)
    except QuestionError as e:
        assert not text.split() and str(e)
    else:
        assert out and out == out.strip() and "  " not in out and out.split() == text.split()
        assert normalize_question(out) == out


@FAST
@given(question_texts, round_counts)
@example("Segment the lesion inside round " + "9" * 5000, 3)
@example("round \u0663", 3)  # an Arabic-Indic three
def test_a_resolved_reference_is_an_existing_earlier_round(question, rounds_so_far):
    result = expect_reference(lambda: resolve_reference(question, rounds_so_far))
    assert result is None or result == "refused" or 0 <= result < rounds_so_far


@FAST
@given(question_texts, round_counts, st.none() | st.integers(-(2**31), 2**31))
@example("Segment it.", 0, None)
@example("round " + "9" * 5000, 2, 1)
def test_round_reference_is_the_given_round_when_it_exists_else_what_the_question_says(question, rounds_so_far,
                                                                                        reference):
    result = expect_reference(lambda: round_reference(question, rounds_so_far, reference))
    assert result is None or result == "refused" or 0 <= result < rounds_so_far
    if reference is not None:
        assert result == (reference if 0 <= reference < rounds_so_far else "refused")


@FAST
@given(st.integers(), round_counts)
def test_check_reference_accepts_exactly_the_existing_rounds(reference, rounds_so_far):
    result = expect_reference(lambda: check_reference(reference, rounds_so_far))
    assert result == (reference if 0 <= reference < rounds_so_far else "refused")


@FAST
@given(st.integers(-5, 30), round_counts, st.sampled_from(["the output of round {}", "instance {}", "Round #{}"]))
def test_round_n_names_round_n(n, rounds_so_far, phrase):
    question = "Segment the lesion inside " + phrase.format(n) + "."
    result = expect_reference(lambda: resolve_reference(question, rounds_so_far))
    if n < 0:  # "round -1" is not read as a round number: the question refers to none
        assert result is None
    else:
        assert result == (n - 1 if 1 <= n <= rounds_so_far else "refused")
