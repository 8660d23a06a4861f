"""Training-time rewording of questions, so the small language model does not learn one fixed wording.

The generators phrase every question from a few request frames ("Segment {x}.") and relation
phrases; a model trained on those alone falls apart on wording it has not seen (``test_unseen``).
:func:`reword` redraws a question with, in turn:

- a new request frame from a free grammar (opener x verb x closer, question and statement forms) or,
  for "Based on {ref}, segment ..." questions, a new reference prefix;
- synonym swaps of function words ("nearest" -> "closest", "the output of" -> "the result of");
- word dropout of words that carry no target ("the", "please", "just", ...);
- one inserted filler word or pseudo-word ("zuvaki"), so an unknown word is something to read past.

What a question asks for never changes: structure names (the dialogue's categories, with their
side), "round N" / "instance N", "it" / "its", sides and directions are left as they are, so the
target and the reference the question resolves to (``model.questions``) stay the same. The tables
below share no word with the phrasings held out for ``test_unseen`` that training does not already
use (a test checks it): the held-out split stays unseen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from model.data.phantoms.knowledge import FRAMES, PREFIXES


@dataclass(frozen=True)
class TextAugment:
    """How often each rewording step applies (probabilities)."""

    p: float = 0.5
    """Share of questions reworded at all; the others keep the generator's wording."""
    reframe: float = 0.6
    """A reworded question gets a new request frame (or reference prefix)."""
    synonym: float = 0.3
    """Each swappable word or phrase is swapped."""
    dropout: float = 0.15
    """Each droppable word is dropped."""
    insert: float = 0.3
    """One filler word or pseudo-word is inserted."""
    seed: int = 0

    def __post_init__(self):
        for name in ("p", "reframe", "synonym", "dropout", "insert"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


# Free request frames: {v} a verb, {x} the target phrase. "Now"-like openers only after the first round.
OPENERS = ("", "Please ", "Kindly ", "Go ahead and ", "Help me ", "Try to ", "I want you to ", "I need you to ")
LATER_OPENERS = ("Now ", "Next, ", "Then ", "Also ", "Now please ")
VERBS = ("segment", "outline", "mark", "highlight", "delineate", "show", "find", "locate", "identify", "trace",
         "contour", "label", "isolate", "extract", "select", "identify and segment", "find and outline",
         "locate and mark", "delineate and label")
CLOSERS = (".", " for me.", " in this image.", " on this image.", " on the scan.", " on this slice.", ", please.",
           " here.")
QUESTION_FORMS = ("Can you {v} {x}?", "Would you {v} {x}?", "Will you {v} {x}?", "Can you please {v} {x}?",
                  "Where is {x}? {V} it.", "Where exactly is {x}? {V} it.")
STATEMENTS = ("I want to see {x}.", "I wish to see {x}.", "Let me see {x}.", "I need {x} segmented.",
              "I need {x} outlined.", "Give me {x}.", "Show {x}.", "Segmentation of {x}, please.")
REFERENCE_PREFIXES = PREFIXES + ("Using {ref}, ", "Starting from {ref}, ", "Given {ref}, ", "From {ref}, ",
                                 "Looking at {ref}, ", "Taking {ref} as the reference, ", "Relative to {ref}, ",
                                 "In relation to {ref}, ")

# Swaps of words that carry no target, as token tuples (lower case); sides, directions and names are not here.
SYNONYMS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("structure",): ("region", "area"),
    ("nearest",): ("closest",),
    ("immediately",): ("directly",),
    ("directly",): ("immediately",),
    ("neighbour",): ("neighbor",),
    ("inside",): ("within", "in"),
    ("within",): ("inside", "in"),
    ("contains",): ("includes", "encompasses"),
    ("encloses",): ("surrounds", "includes"),
    ("surrounds",): ("encloses",),
    ("largest",): ("biggest",),
    ("output",): ("result", "segmentation"),
    ("result",): ("output", "segmentation"),
    ("lies",): ("is", "is located"),
    ("paired",): ("matching",),
    ("counterpart",): ("twin", "partner"),
    ("makes", "up"): ("forms",),
    ("forms",): ("makes up",),
    ("is", "part", "of"): ("is a part of", "is in"),
    ("mirror-image",): ("mirrored",),
    ("on", "the", "screen"): ("on the image", "in the picture"),
    ("in", "the", "image"): ("on the image", "in the picture"),
}
DROPPABLE = frozenset({"the", "a", "please", "now", "just", "immediately", "directly", "next", "then", "also", "that",
                       "kindly"})
FILLERS = ("here", "carefully", "exactly", "precisely", "quickly", "again", "clearly", "fully", "kindly")
_RARE = "qxzjkvwy"  # every pseudo-word holds one of these, so it is no English word
_CONSONANTS, _VOWELS = "bdfghlmnprst", "aeiou"

_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+|[^\sA-Za-z\d]+")
_REFERENCE = re.compile(r"^(?:round|instance)$", re.IGNORECASE)
_PREFIX_FORM = re.compile(r"^(?P<prefix>Based on|Referring to|With reference to) (?P<ref>.+?), (?P<clause>.+)$")


def _frame_pattern(frame: str) -> re.Pattern:
    head, tail = frame.split("{x}")
    return re.compile(f"^{re.escape(head)}(?P<x>.+){re.escape(tail)}$")


_FRAMES = [_frame_pattern(f) for f in sorted(FRAMES, key=len, reverse=True)]  # longest first: "Please segment"
_SYNONYM_KEYS = sorted(SYNONYMS, key=len, reverse=True)  # "on the screen" before "the"


def vocabulary() -> set[str]:
    """Every word the rewording can bring into a question (pseudo-words aside): what the honesty test checks."""
    texts = [*OPENERS, *LATER_OPENERS, *VERBS, *CLOSERS, *QUESTION_FORMS, *STATEMENTS, *REFERENCE_PREFIXES,
             *FILLERS, *(" ".join(k) for k in SYNONYMS), *(v for vs in SYNONYMS.values() for v in vs)]
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z][A-Za-z'-]*", t.replace("{ref}", "").replace(
        "{x}", "").replace("{v}", "").replace("{V}", ""))}


def pseudo_word(rng: np.random.Generator) -> str:
    """A pronounceable non-word of 5-7 letters holding one of ``_RARE``."""
    n = int(rng.integers(5, 8))
    letters = [str(rng.choice(list(_CONSONANTS if i % 2 == 0 else _VOWELS))) for i in range(n)]
    letters[int(rng.integers(0, n)) // 2 * 2] = str(rng.choice(list(_RARE)))  # a consonant slot
    return "".join(letters)


def _new_frame(rng: np.random.Generator, first: bool) -> str:
    """A request frame with ``{x}`` from the free grammar."""
    verb = str(rng.choice(VERBS))
    kind = rng.random()
    if kind < 0.6:
        openers = OPENERS if first else OPENERS + LATER_OPENERS
        opener = str(rng.choice(openers))
        frame = f"{opener}{verb} {{x}}{rng.choice(CLOSERS)}"
        return frame[0].upper() + frame[1:]
    if kind < 0.85:
        return str(rng.choice(QUESTION_FORMS)).replace("{v}", verb).replace("{V}", verb.capitalize())
    return str(rng.choice(STATEMENTS))


def _reframe(question: str, rng: np.random.Generator, first: bool) -> str:
    """The question under a new frame or reference prefix; unchanged when its frame is not a generator's."""
    m = _PREFIX_FORM.match(question)
    if m:
        prefix = str(rng.choice(REFERENCE_PREFIXES)).format(ref=m["ref"])
        clause = m["clause"]
        x = _frame_target(clause[0].upper() + clause[1:])
        if x is not None and rng.random() < 0.5:
            clause = f"{rng.choice(VERBS)} {x}{rng.choice(CLOSERS)}"
        return prefix + clause[0].lower() + clause[1:]
    x = _frame_target(question)
    return question if x is None else _new_frame(rng, first).replace("{x}", x)


def _frame_target(question: str) -> str | None:
    """The ``{x}`` of a question built from one of the generators' frames, else None."""
    for f in _FRAMES:
        match = f.match(question)
        if match:
            return match["x"]
    return None


def _protected(tokens: list[str], names: list[list[str]]) -> tuple[list[bool], list[int]]:
    """Per token: whether it may not change; per token: the span id it belongs to (-1: none).

    Spans are the names (longest match first) and "round N" / "instance N"; "it", "its" and numbers are
    protected on their own.
    """
    lower = [t.lower() for t in tokens]
    keep, span = [False] * len(tokens), [-1] * len(tokens)
    spans = 0
    for name in sorted(names, key=len, reverse=True):
        for i in range(len(tokens) - len(name) + 1):
            if lower[i:i + len(name)] == name and all(s < 0 for s in span[i:i + len(name)]):
                for j in range(i, i + len(name)):
                    keep[j], span[j] = True, spans
                spans += 1
    for i, t in enumerate(lower):
        if _REFERENCE.match(t) and i + 1 < len(tokens) and tokens[i + 1].isdigit():
            keep[i] = keep[i + 1] = True
            span[i] = span[i + 1] = spans
            spans += 1
        elif t in ("it", "its", "left", "right") or t.isdigit():
            keep[i] = True
    return keep, span


def _join(tokens: list[str]) -> str:
    text = " ".join(tokens)
    text = re.sub(r" ([.,?!;:])", r"\1", text)
    text = re.sub(r"[,;:]+([.?!])", r"\1", text)  # "..., please." with "please" dropped
    text = re.sub(r"^[,;:]\s*", "", text)  # "Next, find ..." with "Next" dropped
    return text[0].upper() + text[1:] if text else text


def _match_case(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[:1].isupper() else word


def reword(question: str, rng: np.random.Generator, config: TextAugment, *, names: list[str] = (),
           first: bool = False) -> str:
    """``question`` reworded by ``config`` with ``rng``; ``names`` are structure names it must keep.

    ``first``: the dialogue's first round (no "Now ..." / "Next, ..." openers).
    """
    if rng.random() >= config.p:
        return question
    if rng.random() < config.reframe:
        question = _reframe(question, rng, first)
    tokens = _TOKEN.findall(question)
    keep, span = _protected(tokens, [_TOKEN.findall(n.lower()) for n in names])
    out, out_keep, out_span, i = [], [], [], 0
    while i < len(tokens):
        swapped = False
        for key in _SYNONYM_KEYS:
            n = len(key)
            if tuple(t.lower() for t in tokens[i:i + n]) == key and not any(keep[i:i + n]):
                if rng.random() < config.synonym:
                    words = str(rng.choice(SYNONYMS[key])).split()
                    words[0] = _match_case(words[0], tokens[i])
                    out += words
                    out_keep += [False] * len(words)
                    out_span += [-1] * len(words)
                    i += n
                    swapped = True
                break
        if swapped:
            continue
        t = tokens[i]
        if not keep[i] and t.lower() in DROPPABLE and rng.random() < config.dropout and len(tokens) > 3:
            i += 1
            continue
        out.append(t)
        out_keep.append(keep[i])
        out_span.append(span[i])
        i += 1
    if rng.random() < config.insert and len(out) > 1:
        # gaps 1..len-1 (before token g) that do not split a name or a "round N"
        gaps = [g for g in range(1, len(out)) if out_span[g] < 0 or out_span[g] != out_span[g - 1]]
        if gaps:
            g = int(rng.choice(gaps))
            word = pseudo_word(rng) if rng.random() < 0.5 else str(rng.choice(FILLERS))
            out.insert(g, word)
    return _join(out)
