"""Whole-dataset validation: the text format plus the files it names (existence, mask values, sizes).

``validate_dataset(root)`` checks every ``*.json`` / ``*.jsonl`` split under ``root`` and returns a
:class:`Report` with every problem located by file, record and turn, and summary statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from model.data.images import MaskFormatError, load_mask
from model.data.mrmedseg import Conversation, FormatError, iter_parsed

SPLIT_SUFFIXES = (".json", ".jsonl")
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)
"""What opening a named file can raise: not an image, truncated, a NUL in its path (ValueError), too many pixels."""


@dataclass
class Report:
    """What ``validate_dataset`` found: counts per split and every problem."""

    conversations: Counter = field(default_factory=Counter)
    rounds: Counter = field(default_factory=Counter)
    absent: Counter = field(default_factory=Counter)
    """Rounds per split about a structure the image does not show (no mask; ``model.data.mrmedseg``)."""
    rounds_per_conversation: Counter = field(default_factory=Counter)
    images: set = field(default_factory=set)
    masks: set = field(default_factory=set)
    problems: list[FormatError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{'split':<24}{'conversations':>14}{'rounds':>9}{'not in image':>14}"]
        for split in sorted(self.conversations):
            lines.append(f"{split:<24}{self.conversations[split]:>14}{self.rounds[split]:>9}"
                         f"{self.absent[split]:>14}")
        hist = " ".join(f"{k}:{v}" for k, v in sorted(self.rounds_per_conversation.items()))
        lines += [f"rounds per conversation: {hist}",
                  f"distinct images: {len(self.images)}, distinct masks: {len(self.masks)}",
                  f"problems: {len(self.problems)}"]
        lines += [f"  {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


class _FileChecker:
    """Checks each image / mask file once, however many rounds name it."""

    def __init__(self, root: Path):
        self.root = root
        self.sizes: dict[str, tuple[int, int] | str] = {}

    def image_size(self, rel: str) -> tuple[int, int] | str:
        if rel not in self.sizes:
            path = self.root / rel
            try:
                with Image.open(path) as img:
                    self.sizes[rel] = img.size
            except FileNotFoundError:
                self.sizes[rel] = f"image file not found: {path}"
            except _UNREADABLE as e:
                self.sizes[rel] = f"image file {path} cannot be read: {e}"
        return self.sizes[rel]

    def mask_size(self, rel: str) -> tuple[int, int] | str:
        if rel not in self.sizes:
            path = self.root / rel
            try:
                m = load_mask(path)
                self.sizes[rel] = (m.shape[1], m.shape[0])
            except FileNotFoundError:
                self.sizes[rel] = f"mask file not found: {path}"
            except MaskFormatError as e:
                self.sizes[rel] = f"{path}: {e}"
            except _UNREADABLE as e:
                self.sizes[rel] = f"mask file {path} cannot be read: {e}"
        return self.sizes[rel]


def check_files(conv: Conversation, checker: _FileChecker, *, file: str, index: int) -> list[FormatError]:
    """Problems with the files one conversation names: missing, unreadable, bad masks, size mismatch."""
    problems = []
    size = checker.image_size(conv.image)
    if isinstance(size, str):
        problems.append(FormatError(size, file=file, record=index, turn=0))
    for k, r in enumerate(conv.rounds):
        named = [(2 * k, r.reference_mask), (2 * k, r.reference_box),
                 (2 * k + 1, r.answer_reference_mask), (2 * k + 1, r.mask)]
        for turn, rel in named:
            if rel is None:
                continue
            msize = checker.mask_size(rel)
            if isinstance(msize, str):
                problems.append(FormatError(msize, file=file, record=index, turn=turn))
            elif isinstance(size, tuple) and msize != size:
                problems.append(FormatError(
                    f"mask {rel} is {msize[0]}x{msize[1]} but image {conv.image} is {size[0]}x{size[1]}; "
                    "masks must match their image's size", file=file, record=index, turn=turn))
    return list({str(p): p for p in problems}.values())


def validate_split(path: Path, report: Report, checker: _FileChecker) -> None:
    split = path.stem
    for i, parsed in enumerate(iter_parsed(path)):
        if isinstance(parsed, FormatError):
            report.problems.append(parsed)
            continue
        report.conversations[split] += 1
        report.rounds[split] += len(parsed.rounds)
        report.rounds_per_conversation[len(parsed.rounds)] += 1
        report.images.add(parsed.image)
        report.absent[split] += sum(not r.has_mask for r in parsed.rounds)
        report.masks.update(r.mask for r in parsed.rounds if r.has_mask)
        report.problems += check_files(parsed, checker, file=str(path), index=i)


def validate_dataset(root: str | Path, splits: list[str] | None = None) -> Report:
    """Validate every split file under ``root`` (or just the named ones)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix in SPLIT_SUFFIXES and p.name != "dataset.json")
    if splits:
        files = [p for p in files if p.stem in splits]
    if not files:
        raise FileNotFoundError(f"no split files (*.json, *.jsonl) in {root}")
    report, checker = Report(), _FileChecker(root)
    for path in files:
        validate_split(path, report, checker)
    return report
