"""The ``mediround`` command: one entry point, a subcommand per job (``data``, ``demo``, ...)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _data_validate(args) -> int:
    from model.data.validate import validate_dataset

    report = validate_dataset(args.dir, args.split or None)
    print(report.summary())
    return 0 if report.ok else 1


def _data_phantoms(args) -> int:
    from model.data.phantoms.generate import default_splits, generate_dataset

    start = time.perf_counter()
    stats = generate_dataset(args.out, seed=args.seed, splits=default_splits(args.scale),
                             image_size=args.image_size, workers=args.workers)
    took = time.perf_counter() - start
    images = sum(s["images"] for s in stats["splits"].values())
    print(f"wrote {images} images to {args.out} in {took:.1f} s ({images / took:.1f} images/s)")
    for split, s in stats["statistics"].items():
        print(f"  {split:<12} {s['conversations']:>5} conversations  rounds {s['rounds']}")
    return 0


def _data_show(args) -> int:
    from model.data.mrmedseg import load
    from model.data.show import render_conversation

    path = Path(args.file)
    conversations = load(path)
    if not 0 <= args.index < len(conversations):
        print(f"--index must be within 0..{len(conversations) - 1} for {path}", file=sys.stderr)
        return 2
    out = render_conversation(conversations[args.index], args.root or path.parent, args.out)
    print(f"wrote {out}")
    return 0


def _demo(args) -> int:
    """Generate a small phantom set, validate it and the real slices, and draw sample dialogues."""
    from model.data.mrmedseg import load
    from model.data.phantoms.generate import default_splits, generate_dataset
    from model.data.real import REAL_DIALOGUES, REAL_SLICES
    from model.data.show import render_conversation
    from model.data.validate import validate_dataset

    out = Path(args.out)
    print(f"== phantom MR-MedSeg data (seed {args.seed}) -> {out / 'phantoms'}")
    generate_dataset(out / "phantoms", seed=args.seed, splits=default_splits(0.02), workers=1, progress=False)
    report = validate_dataset(out / "phantoms")
    print(report.summary())
    for split in ("test", "test_hard"):
        conv = load(out / "phantoms" / f"{split}.json")[0]
        print(f"\n-- {split}: {conv.extra['modality']}, {conv.extra['scenario']}")
        for k, r in enumerate(conv.rounds):
            ref = f" [refers to round {r.reference + 1}]" if r.reference is not None else ""
            print(f"  round {k + 1}{ref}: {r.question}\n      -> {r.answer} <mask {r.mask}>")
        print(f"  picture: {render_conversation(conv, out / 'phantoms', out / f'{split}.png')}")
    print(f"\n== real CT slices -> {REAL_SLICES}")
    real = validate_dataset(REAL_SLICES, ["dialogues"])
    print(real.summary())
    conv = load(REAL_DIALOGUES)[0]
    print(f"  picture: {render_conversation(conv, REAL_SLICES, out / 'real.png')}")
    return 0 if report.ok and real.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediround", description="MediRound Serve: multi-round medical "
                                     "reasoning segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="MR-MedSeg datasets: validate, generate phantoms, draw dialogues")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("validate", help="check a dataset directory (format, files, masks, sizes)")
    p.add_argument("dir", help="dataset root holding the split files (*.json / *.jsonl)")
    p.add_argument("--split", action="append", help="only this split (repeatable), e.g. --split val")
    p.set_defaults(func=_data_validate)
    p = dsub.add_parser("phantoms", help="generate the phantom MR-MedSeg dataset")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed; output is deterministic for a seed")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every split's size (default 1.0)")
    p.add_argument("--image-size", type=int, default=192, help="image side in pixels, 128..256 (default 192)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.set_defaults(func=_data_phantoms)
    p = dsub.add_parser("show", help="render one conversation as a PNG")
    p.add_argument("file", help="a split file, e.g. data/phantoms/val.json")
    p.add_argument("--index", type=int, default=0, help="record index in the file (default 0)")
    p.add_argument("--root", help="dataset root the paths are relative to (default: the file's folder)")
    p.add_argument("--out", default="conversation.png", help="output PNG (default conversation.png)")
    p.set_defaults(func=_data_show)

    p = sub.add_parser("demo", help="the main job: run the demo end to end")
    p.add_argument("--out", default="out/demo", help="where pictures and data go (default out/demo)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"mediround: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
