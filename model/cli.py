"""The model's ``mediround`` subcommands: ``data validate|phantoms|brain|show``, ``train recipe`` and ``eval``.

``register(subparsers)`` adds them to the one ``mediround`` command (``serving/cli.py`` builds it and
maps errors to exit codes); each handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model.config import SHIPPED_TINY


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
        print(f"  {split:<12} {s['conversations']:>5} conversations  rounds {s['rounds']}  "
              f"not in the image {s['absent_share']:.1%}")
    return 0


def _data_brain(args) -> int:
    from model.data.brain.generate import default_splits, generate_dataset

    start = time.perf_counter()
    stats = generate_dataset(args.out, seed=args.seed, splits=default_splits(args.scale), image_size=args.image_size,
                             stride=args.stride, workers=args.workers, templates=args.templates)
    took = time.perf_counter() - start
    slices = sum(stats["slices"].values())
    print(f"wrote {slices} brain slices to {args.out} in {took:.1f} s ({stats['slices']})")
    for split, s in stats["statistics"].items():
        print(f"  {split:<12} {s['conversations']:>5} conversations  rounds {s['rounds']}  "
              f"not in the image {s['absent_share']:.1%}")
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


def _train_recipe(args) -> int:
    import torch

    from model.training.recipe import RECIPES, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    run_recipe(RECIPES[args.name], args.out, data=args.data, brain=args.brain, workers=args.workers, use_gpu=args.gpu)
    return 0


DEFAULT_BRAIN = Path("data/brain")


def _eval_brain(args) -> Path | None:
    """The real-brain root to evaluate on: ``--brain``, else data/brain when it is there (a note when not)."""
    if args.no_brain:
        return None
    if args.brain:
        return Path(args.brain)
    if (DEFAULT_BRAIN / "dataset.json").exists():
        return DEFAULT_BRAIN
    print(f"note: no real-brain dataset at {DEFAULT_BRAIN}, its splits are left out (make one with: mediround data "
          f"brain --out {DEFAULT_BRAIN}, or name one with --brain)", file=sys.stderr)
    return None


def _eval(args) -> int:
    from model.evaluation.evaluate import SPLITS, evaluate

    results = evaluate(args.checkpoint, args.data, args.out, limit=args.limit, splits=tuple(args.split or SPLITS),
                       protocols=tuple(args.protocol or ("paper", "auto")), real=not args.no_real,
                       brain=_eval_brain(args), sam_checkpoint=args.sam_checkpoint)
    print((Path(args.out) / "tables.md").read_text())
    if args.manifest:
        from model.checkpoint import read_manifest
        from model.evaluation.evaluate import regression_score

        manifest = read_manifest(args.checkpoint)
        manifest["evaluation"] = {"command": "mediround " + " ".join(sys.argv[1:]), "tables": results["tables"]}
        manifest["regression"] = regression_score(args.checkpoint, Path(args.out) / "regression")
        if manifest.get("brain"):  # trained on the real brain: re-scored on held-out slices (test_shipped.py)
            from model.evaluation.evaluate import brain_regression_score

            manifest["brain_regression"] = brain_regression_score(args.checkpoint, Path(args.out) / "brain_regression")
        (Path(args.checkpoint) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data``, ``train`` and ``eval`` to the ``mediround`` subcommands ``sub``."""
    data = sub.add_parser("data", help="MR-MedSeg datasets: validate, generate phantoms or real-brain slices, draw "
                          "dialogues")
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
    p = dsub.add_parser("brain", help="generate the real-brain MR-MedSeg dataset (Colin27 T1 + AAL, mricron-data)")
    p.add_argument("--out", required=True, help="output directory, e.g. data/brain")
    p.add_argument("--seed", type=int, default=0, help="random seed; output is deterministic for a seed")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the dialogues per slice (default 1.0)")
    p.add_argument("--image-size", type=int, default=192, help="image side in pixels, 128..256 (default 192)")
    p.add_argument("--stride", type=int, default=1, help="every n-th slice of each slab (default 1: all)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--templates", default="/usr/share/mricron/templates",
                   help="folder holding ch2.nii.gz, aal.nii.gz, aal.nii.txt (default: where mricron-data puts them)")
    p.set_defaults(func=_data_brain)
    p = dsub.add_parser("show", help="render one conversation as a PNG")
    p.add_argument("file", help="a split file, e.g. data/phantoms/val.json")
    p.add_argument("--index", type=int, default=0, help="record index in the file (default 0)")
    p.add_argument("--root", help="dataset root the paths are relative to (default: the file's folder)")
    p.add_argument("--out", default="conversation.png", help="output PNG (default conversation.png)")
    p.set_defaults(func=_data_show)

    train = sub.add_parser("train", help="train MediRound models")
    tsub = train.add_subparsers(dest="train_command", required=True)
    p = tsub.add_parser("recipe", help="run a whole training recipe (data, tokenizer, every stage), resumable")
    p.add_argument("name", choices=["tiny", "tiny-plain-text", "tiny-smoke"], help="the recipe: 'tiny' makes the "
                   "shipped CPU checkpoint; 'tiny-plain-text' is it without rewording the questions (the ablation); "
                   "'tiny-smoke' runs every part of it on small data, 10 steps a stage, in a few minutes")
    p.add_argument("--out", default="runs/tiny", help="run directory; rerunning resumes (default runs/tiny)")
    p.add_argument("--data", help="phantom dataset root (default <out>/data, generated when missing)")
    p.add_argument("--brain", help="real-brain dataset root (default <out>/brain, generated when missing; needs "
                   "mricron-data)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (default 1: in-process)")
    p.add_argument("--gpu", action="store_true", help="Ray Train workers use GPUs (NCCL)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in-process (default: torch's choice)")
    p.set_defaults(func=_train_recipe)

    p = sub.add_parser("eval", help="paper-style tables for a checkpoint on the phantom and real-brain splits and "
                       "real CT slices")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.add_argument("--data", default="data/phantoms", help="phantom dataset root (default data/phantoms)")
    p.add_argument("--out", default="out/eval", help="where tables, plots and pictures go (default out/eval)")
    p.add_argument("--limit", type=int, help="only the first N dialogues of each split")
    p.add_argument("--split", action="append", help="only this split (repeatable)")
    p.add_argument("--protocol", action="append", choices=["paper", "auto"], help="only this protocol (repeatable)")
    p.add_argument("--no-real", action="store_true", help="skip the real CT-slice dialogues")
    p.add_argument("--brain", help=f"real-brain dataset root whose splits join the tables as brain/<split>, with "
                   f"Dice per structure and size (default: {DEFAULT_BRAIN} when it holds one)")
    p.add_argument("--no-brain", action="store_true", help="skip the real-brain splits")
    p.add_argument("--sam-checkpoint", help="a further checkpoint whose SAM Table 3 prompts with boxes, e.g. "
                   "runs/tiny/sam/checkpoint (the box-tuned SAM before stage 1)")
    p.add_argument("--manifest", action="store_true", help="record the tables (and the regression slice's "
                   "score) in the checkpoint's manifest.json")
    p.set_defaults(func=_eval)
