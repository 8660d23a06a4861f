"""What a round's question may be, and which earlier round it refers to: one set of rules for the
predictor and the service (this module imports no torch, so the gRPC front can use it).

Rounds are counted two ways, and names say which: a round *number* is 1-based (what users say,
"round 2", and what the API carries); a round *index* is 0-based (positions in a dialogue).
``round_index`` / ``round_number`` are the one conversion between them.

A question is checked once, where its dialogue is known: ``resolve_question`` (the predictor's
``resolve`` in one process, the service's ``Dialogue`` in the front) gives a ``Question`` that the
predictor builds its prompt from as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import overload


class QuestionError(ValueError):
    """An empty question or one longer than the model or the service accepts."""


class ReferenceRoundError(ValueError):
    """A question or request that refers to a round the dialogue does not have."""


@dataclass(frozen=True)
class Question:
    """A round's question once checked against its dialogue: what the prompt is built from."""

    text: str
    """Normalised (``normalize_question``)."""
    reference_index: int | None
    """0-based index of the earlier round it refers to, checked to exist; None: it refers to none."""


@overload
def round_index(number: int) -> int: ...
@overload
def round_index(number: int | None) -> int | None: ...
def round_index(number: int | None) -> int | None:
    """1-based round number -> 0-based round index (None stays None)."""
    return None if number is None else number - 1


@overload
def round_number(index: int) -> int: ...
@overload
def round_number(index: int | None) -> int | None: ...
def round_number(index: int | None) -> int | None:
    """0-based round index -> 1-based round number (None stays None)."""
    return None if index is None else index + 1


def normalize_question(question: str) -> str:
    """The question with runs of whitespace made one space and the ends trimmed; refuses an empty one.

    The normalised text is what the prompt is built from and what a round stores, so a rebuilt
    dialogue re-tokenises exactly the string its cache was made from.
    """
    question = " ".join(question.split())
    if not question:
        raise QuestionError("the question is empty; ask for a structure, e.g. 'Segment the liver.'")
    return question


def check_reference(reference: int, rounds_so_far: int) -> int:
    """``reference`` (a 0-based round index) if the dialogue has that round; else a clear error."""
    if not 0 <= reference < rounds_so_far:
        have = f"rounds 1..{rounds_so_far}" if rounds_so_far else "no earlier rounds"
        raise ReferenceRoundError(f"the reference to round {reference + 1} does not exist; the dialogue has {have}")
    return reference


_EXPLICIT = re.compile(r"\b(?:round|instance)\s*#?\s*(\d+)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:it|its)\b", re.IGNORECASE)


def resolve_reference(question: str, rounds_so_far: int) -> int | None:
    """The 0-based round index a question refers to, or None when it names its target outright.

    "round N" / "instance N" (1-based, as users say it) win; otherwise "it" / "its" mean the
    previous round (appendix D.1), except in a follow-up after a question mark ("Where is the liver?
    Please segment it.", where "it" is the liver). A reference to a round that does not exist raises.
    """
    match = _EXPLICIT.search(question)
    if match:
        digits = match.group(1)
        # a number of more digits than any dialogue has rounds is out of range without int() (which refuses
        # over 4300 digits); \d also matches non-ASCII digits, which int() reads
        n = int(digits) if len(digits) <= 9 else None
        if n is None or not 1 <= n <= rounds_so_far:
            have = f"rounds 1..{rounds_so_far}" if rounds_so_far else "no earlier rounds"
            shown = n if n is not None else f"{digits[:9]}... ({len(digits)} digits)"
            raise ReferenceRoundError(f"the question refers to round {shown}, but the dialogue has {have}")
        return n - 1
    if _PRONOUN.search(question.split("?")[0]):
        if rounds_so_far == 0:
            raise ReferenceRoundError("the question refers to an earlier result ('it'/'its'), but this is the "
                                      "first round; name the structure to segment")
        return rounds_so_far - 1
    return None


def round_reference(question: str, rounds_so_far: int, reference: int | None = None) -> int | None:
    """The round index a new round refers to: ``reference`` when given (checked), else what the question says."""
    if reference is None:
        return resolve_reference(question, rounds_so_far)
    return check_reference(reference, rounds_so_far)


def resolve_question(question: str, rounds_so_far: int, reference_index: int | None = None) -> Question:
    """The next round's question, normalised, and the round it refers to: ``reference_index`` (0-based) when
    given (checked), else what the question says."""
    text = normalize_question(question)
    return Question(text=text, reference_index=round_reference(text, rounds_so_far, reference_index))
