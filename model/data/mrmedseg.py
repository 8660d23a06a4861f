"""The MR-MedSeg conversation format: typed records, reading, writing and validation.

One record is ``{"task": "segmentation", "base": "[null]", "conversations": [...]}`` with
alternating human / gpt turns (reference notes §1). Files may hold a JSON list, a single
object or JSON Lines. Everything about the *text* of the format lives here; pixels are checked
by :mod:`model.data.validate`.

This project's extension of the official format: "not in this image". A gpt turn with no bracket
token at all (0 tokens, where the official format has 1 or 2) answers a question about a structure
the image does not show; its text says so in words ("There is no left kidney in this image.") and
is kept whole as the round's ``answer``; the round has no mask (``Round.mask`` is None) and no
mask file. No later round may refer to it (``ind``): there is no output to refer to. Readers of
the official data never meet such a turn; a gpt turn with 3 or more tokens stays an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Bracket tokens and the turn each may appear in.
HUMAN_TOKENS = ("IMAGE256", "MASK-ENCODE", "BOX-ENCODE")
GPT_TOKENS = ("REF-DECODE", "MASK-DECODE")
KNOWN_TOKENS = HUMAN_TOKENS + GPT_TOKENS

_TOKEN = re.compile(r"\[([A-Z0-9-]+):([^\[\]]*)\]")
_ANY_BRACKET = re.compile(r"\[[A-Z][A-Z0-9-]*[:\]]")


class FormatError(ValueError):
    """A record that breaks the MR-MedSeg format, located by file, record and turn."""

    def __init__(self, message: str, *, file: str | None = None, record: int | None = None,
                 turn: int | None = None):
        self.message, self.file, self.record, self.turn = message, file, record, turn
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"{self.file}" if self.file else None,
                 f"record {self.record}" if self.record is not None else None,
                 f"turn {self.turn}" if self.turn is not None else None]
        prefix = ", ".join(w for w in where if w)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass(frozen=True)
class Round:
    """One human question and the gpt answer to it.

    ``reference`` is the 0-based index of the earlier round whose output the question refers
    to (the official ``ind``), or None. ``reference_mask`` / ``reference_box`` are the
    MASK-ENCODE / BOX-ENCODE paths (relative to the dataset root), ``mask`` the MASK-DECODE
    target. ``answer`` is the gpt phrase without its bracket tokens ("" when there is none).
    A round whose structure is not in the image has no mask (``mask`` None) and its whole
    sentence as ``answer`` (the module docstring's extension).
    """

    question: str
    answer: str
    mask: str | None
    reference: int | None = None
    reference_mask: str | None = None
    reference_box: str | None = None
    answer_reference_mask: str | None = None  # REF-DECODE: carried, never trained on

    def __post_init__(self):
        if self.mask is None and self.answer_reference_mask is not None:
            raise ValueError("a round without a mask has no gpt tokens, so no REF-DECODE either")
        if self.mask is None and not any(c.isalnum() for c in self.answer):
            raise ValueError(f"a round without a mask must say in words that the structure is not in the image, "
                             f"got answer {self.answer!r}")

    @property
    def has_mask(self) -> bool:
        """False for a round about a structure the image does not show (answered in words only)."""
        return self.mask is not None


@dataclass
class Conversation:
    """One MR-MedSeg record: an image and its rounds. ``extra`` keeps unknown keys for round trip."""

    image: str
    rounds: list[Round]
    task: str = "segmentation"
    base: str = "[null]"
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        """The official JSON record for this conversation."""
        turns = []
        for k, r in enumerate(self.rounds):
            prefix = f"[IMAGE256:{self.image}]" if k == 0 else ""
            if r.reference_mask is not None:
                prefix += f"[MASK-ENCODE:{r.reference_mask}]"
            if r.reference_box is not None:
                prefix += f"[BOX-ENCODE:{r.reference_box}]"
            human = {"from": "human", "value": f"{prefix} {r.question}" if prefix else r.question}
            if r.reference is not None:
                human["ind"] = r.reference
            if r.mask is None:  # not in this image: the sentence alone, no token
                turns += [human, {"from": "gpt", "value": r.answer}]
                continue
            tokens = f"[REF-DECODE:{r.answer_reference_mask}]" if r.answer_reference_mask else ""
            tokens += f"[MASK-DECODE:{r.mask}]"
            answer = f"{r.answer} {tokens}." if r.answer else f"{tokens}."
            turns += [human, {"from": "gpt", "value": answer}]
        return {"task": self.task, "base": self.base, "conversations": turns, **self.extra}


def _tokens(text: str) -> tuple[list[tuple[str, str]], str]:
    """Split bracket tokens from text: ([(name, path), ...], text without them)."""
    found = [(m.group(1), m.group(2)) for m in _TOKEN.finditer(text)]
    return found, _TOKEN.sub("", text)


def _check_tokens(found, rest, allowed, fail):
    for name, path in found:
        if name not in KNOWN_TOKENS:
            fail(f"unknown bracket token [{name}:...]; known tokens are {', '.join(KNOWN_TOKENS)}")
        if name not in allowed:
            fail(f"[{name}:...] may not appear in this turn; allowed here: {', '.join(allowed)}")
        if not path.strip():
            fail(f"[{name}:] has an empty path")
    if _ANY_BRACKET.search(rest):
        fail(f"malformed bracket token in {rest.strip()!r}: expected [NAME:path] with NAME one of "
             f"{', '.join(KNOWN_TOKENS)}")


def parse_record(record: dict, *, file: str | None = None, index: int | None = None) -> Conversation:
    """Parse and check one record's text; raise FormatError naming the file, record and turn."""

    def fail(message: str, turn: int | None = None):
        raise FormatError(message, file=file, record=index, turn=turn)

    if not isinstance(record, dict):
        fail(f"a record must be a JSON object, got {type(record).__name__}")
    if record.get("task") != "segmentation":
        fail(f"task must be 'segmentation', got {record.get('task')!r}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        fail("'conversations' must be a non-empty list of turns")
    if len(turns) % 2:
        fail(f"turns must alternate human/gpt in pairs, got an odd count ({len(turns)})")
    image, rounds = None, []
    for t in range(0, len(turns), 2):
        human, gpt = turns[t], turns[t + 1]
        for j, (turn, who) in enumerate(((human, "human"), (gpt, "gpt"))):
            if not isinstance(turn, dict) or turn.get("from") != who or not isinstance(turn.get("value"), str):
                fail(f"expected a {who} turn {{'from': '{who}', 'value': str}}, got {turn!r:.80}", t + j)
        k = t // 2

        def fail_h(message, t=t):
            fail(message, t)

        found, question = _tokens(human["value"])
        _check_tokens(found, question, HUMAN_TOKENS, fail_h)
        names = [n for n, _ in found]
        paths = dict(found)
        if k == 0:
            if names[:1] != ["IMAGE256"]:
                fail("the first human turn must start with [IMAGE256:<image path>]", t)
            image = paths["IMAGE256"]
        elif "IMAGE256" in names:
            fail("[IMAGE256:...] may appear only in the first human turn", t)
        if any(names.count(n) > 1 for n in set(names)):
            fail(f"a bracket token appears twice in one turn: {names}", t)
        ind = human.get("ind")
        has_ref = "MASK-ENCODE" in names or "BOX-ENCODE" in names
        if has_ref and ind is None:
            fail("[MASK-ENCODE]/[BOX-ENCODE] present but 'ind' (the referenced round, 0-based) is missing", t)
        if ind is not None:
            if isinstance(ind, bool) or not isinstance(ind, int):
                fail(f"'ind' must be an integer round index, got {ind!r}", t)
            if not 0 <= ind < k:
                fail(f"'ind' = {ind} must point at an earlier round (0..{k - 1}) of round {k}", t)
            if not rounds[ind].has_mask:
                fail(f"'ind' = {ind} points at a round that found nothing (its gpt turn has no [MASK-DECODE]): "
                     "a question may refer only to a round with a mask", t)
            if not has_ref:
                fail("'ind' given but the turn has no [MASK-ENCODE:...] token", t)
        if not question.strip():
            fail("the question is empty", t)

        def fail_g(message, t=t):
            fail(message, t + 1)

        found_g, answer = _tokens(gpt["value"])
        _check_tokens(found_g, answer, GPT_TOKENS, fail_g)
        names_g = [n for n, _ in found_g]
        if names_g not in ([], ["MASK-DECODE"], ["REF-DECODE", "MASK-DECODE"]):
            fail(f"a gpt turn holds [MASK-DECODE:...] optionally preceded by [REF-DECODE:...] (or, when the "
                 f"structure is not in the image, no token at all), got {names_g}", t + 1)
        if not names_g and not any(c.isalnum() for c in answer):
            fail(f"a gpt turn without [MASK-DECODE:...] must say in words that the structure is not in the "
                 f"image, got {gpt['value']!r:.80}", t + 1)
        paths_g = dict(found_g)
        rounds.append(Round(
            question=question.strip(),
            answer=answer.strip().removesuffix(".").strip() if names_g else answer.strip(),
            mask=paths_g.get("MASK-DECODE"),
            reference=ind,
            reference_mask=paths.get("MASK-ENCODE"),
            reference_box=paths.get("BOX-ENCODE"),
            answer_reference_mask=paths_g.get("REF-DECODE"),
        ))
    extra = {k: v for k, v in record.items() if k not in ("task", "base", "conversations")}
    return Conversation(image=image, rounds=rounds, task=record["task"], base=record.get("base", "[null]"),
                        extra=extra)


def _loads(text: str):
    """``json.loads``, with every way it refuses a text raised as ``JSONDecodeError``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None
    except ValueError:  # an integer longer than int() converts (sys.get_int_max_str_digits())
        raise json.JSONDecodeError("a number too long to read", text, 0) from None


def read_records(path: str | Path) -> list[dict]:
    """Raw records from a JSON list, a single JSON object or JSON Lines (UTF-8, with or without a BOM)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text (byte {e.start}: {e.reason}); MR-MedSeg files are JSON in UTF-8",
                          file=str(path)) from None
    try:
        data = _loads(text)
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(_loads(line))
                except json.JSONDecodeError as e:
                    raise FormatError(f"neither JSON nor JSON Lines (line {n}: {e.msg})", file=str(path)) from None
    return data if isinstance(data, list) else [data]


def load(path: str | Path) -> list[Conversation]:
    """Parse every record of a file; the first broken record raises FormatError."""
    return [parse_record(r, file=str(path), index=i) for i, r in enumerate(read_records(path))]


def iter_parsed(path: str | Path) -> Iterator[Conversation | FormatError]:
    """Each record parsed, or the FormatError it raised, so a validator can report them all."""
    try:
        records = read_records(path)
    except FormatError as e:
        yield e
        return
    for i, r in enumerate(records):
        try:
            yield parse_record(r, file=str(path), index=i)
        except FormatError as e:
            yield e


def dump(conversations: Iterable[Conversation], path: str | Path, *, jsonl: bool = False) -> None:
    """Write conversations as a JSON list (default) or JSON Lines."""
    records = [c.to_record() for c in conversations]
    with open(path, "w", encoding="utf-8") as f:
        if jsonl:
            f.writelines(json.dumps(r) + "\n" for r in records)
        else:
            json.dump(records, f, indent=1)
            f.write("\n")
