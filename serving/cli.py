"""The ``mediround`` command: one entry point, a subcommand per job (``data``, ``demo``, ...)."""

from __future__ import annotations

import argparse
import json
import os
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


def _train_recipe(args) -> int:
    import torch

    from model.recipe import RECIPES, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    run_recipe(RECIPES[args.name], args.out, data=args.data, workers=args.workers, use_gpu=args.gpu)
    return 0


def _eval(args) -> int:
    from model.evaluate import SPLITS, evaluate

    results = evaluate(args.checkpoint, args.data, args.out, limit=args.limit, splits=tuple(args.split or SPLITS),
                       protocols=tuple(args.protocol or ("paper", "auto")), real=not args.no_real,
                       sam_checkpoint=args.sam_checkpoint)
    print((Path(args.out) / "tables.md").read_text())
    if args.manifest:
        from model.checkpoint import read_manifest

        manifest = read_manifest(args.checkpoint)
        from model.evaluate import regression_score

        manifest["evaluation"] = {"command": "mediround " + " ".join(sys.argv[1:]), "tables": results["tables"]}
        manifest["regression"] = regression_score(args.checkpoint, Path(args.out) / "regression")
        (Path(args.checkpoint) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


def _demo(args) -> int:
    from serving.demo import run_demo

    return run_demo(args.out, seed=args.seed, checkpoint=args.checkpoint)


def _bench(args) -> int:
    from serving.bench import markdown, run_bench

    data = args.data or ("data/phantoms" if Path("data/phantoms/test_hard.json").exists() else None)
    report = run_bench(args.out, data=data, dialogues=args.dialogues, levels=tuple(args.concurrency),
                       checkpoint=args.checkpoint)
    print(markdown(report))
    print(f"wrote {args.out}/bench.json, bench.md, bench.png")
    return 0


def _serve(args) -> int:
    import asyncio
    import signal

    from serving.server import ServerOptions
    from serving.service import Service, ServiceOptions

    replicas = dict(item.split("=", 1) for item in args.replicas or [])
    options = ServiceOptions(checkpoint=args.checkpoint, redis_url=args.redis_url, serve_config=args.serve_config,
                             replicas={k: int(v) for k, v in replicas.items()}, metrics_port=args.metrics_port,
                             ray_address=args.ray_address, attach=args.attach,
                             server=ServerOptions(address=args.address, token=args.token, tls_cert=args.tls_cert,
                                                  tls_key=args.tls_key))

    async def main() -> None:
        service = await Service(options).start()
        print(f"mediround serving on {service.address} (gRPC mediround.v1.MediRound; health and reflection on)"
              + (f", metrics on :{args.metrics_port}/metrics" if args.metrics_port else ""), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await service.stop()

    asyncio.run(main())
    return 0


def _chat(args) -> int:
    from serving.client import MediRoundClient

    with MediRoundClient(args.address, token=args.token) as client:
        session = client.create_session(args.image)
        print(f"session {session.id} on {args.image} ({session.width}x{session.height}); empty line to quit")
        while True:
            try:
                question = input(f"round {client.session(session.id).round_count + 1}> ").strip()
            except EOFError:
                break
            if not question:
                break
            r = client.ask(session.id, question)
            box = f" box ({r.box.x_min},{r.box.y_min})-({r.box.x_max},{r.box.y_max})" if r.has_mask else ""
            print(f"  {r.answer}  [q {r.quality:.2f}{', corrected' if r.corrected else ''}{box}; "
                  f"reference round {r.reference_round or '-'}; {r.timings.total_ms:.0f} ms]")
            if args.save_masks and r.has_mask:
                path = Path(args.save_masks) / f"{session.id}_round{r.index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(r.mask_png)
                print(f"  mask: {path}")
    return 0


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

    train = sub.add_parser("train", help="train MediRound models")
    tsub = train.add_subparsers(dest="train_command", required=True)
    p = tsub.add_parser("recipe", help="run a whole training recipe (data, tokenizer, every stage), resumable")
    p.add_argument("name", choices=["tiny"], help="the recipe: 'tiny' makes the shipped CPU checkpoint")
    p.add_argument("--out", default="runs/tiny", help="run directory; rerunning resumes (default runs/tiny)")
    p.add_argument("--data", help="phantom dataset root (default <out>/data, generated when missing)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (default 1: in-process)")
    p.add_argument("--gpu", action="store_true", help="Ray Train workers use GPUs (NCCL)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in-process (default: torch's choice)")
    p.set_defaults(func=_train_recipe)

    p = sub.add_parser("eval", help="paper-style tables for a checkpoint on the phantom splits and real slices")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.add_argument("--data", default="data/phantoms", help="phantom dataset root (default data/phantoms)")
    p.add_argument("--out", default="out/eval", help="where tables, plots and pictures go (default out/eval)")
    p.add_argument("--limit", type=int, help="only the first N dialogues of each split")
    p.add_argument("--split", action="append", help="only this split (repeatable)")
    p.add_argument("--protocol", action="append", choices=["paper", "auto"], help="only this protocol (repeatable)")
    p.add_argument("--no-real", action="store_true", help="skip the real CT-slice dialogues")
    p.add_argument("--sam-checkpoint", help="checkpoint whose SAM Table 3 prompts with boxes, e.g. runs/tiny/sam/"
                   "checkpoint (the box-pretrained SAM before stage 1); default: the evaluated checkpoint's")
    p.add_argument("--manifest", action="store_true", help="record the tables (and the regression slice's "
                   "score) in the checkpoint's manifest.json")
    p.set_defaults(func=_eval)

    p = sub.add_parser("serve", help="run the gRPC service (embedded Redis unless --redis-url / REDIS_URL)")
    p.add_argument("--address", default="127.0.0.1:50051", help="gRPC listen address (default 127.0.0.1:50051)")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.add_argument("--redis-url", help="dialogue Redis (redis://, rediss://, unix://); default: REDIS_URL or embedded")
    p.add_argument("--serve-config", help="Ray Serve config YAML (default deploy/serve/cpu-tiny.yaml)")
    p.add_argument("--replicas", action="append", metavar="DEPLOYMENT=N", help="override replicas, e.g. Reasoner=2")
    p.add_argument("--metrics-port", type=int, help="expose Prometheus metrics on this port (e.g. 9464)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--attach", action="store_true",
                   help="serve the applications already running on the Ray cluster (e.g. a KubeRay RayService) "
                        "instead of deploying them; stopping leaves them running")
    p.add_argument("--token", default=os.environ.get("MEDIROUND_TOKEN"),
                   help="require 'authorization: Bearer <token>' metadata (default: MEDIROUND_TOKEN)")
    p.add_argument("--tls-cert", help="PEM certificate chain (with --tls-key: serve TLS)")
    p.add_argument("--tls-key", help="PEM private key")
    p.set_defaults(func=_serve)

    p = sub.add_parser("chat", help="an interactive dialogue with a running service")
    p.add_argument("image", help="PNG (8/16-bit), JPEG or TIFF file")
    p.add_argument("--address", default="127.0.0.1:50051", help="service address (default 127.0.0.1:50051)")
    p.add_argument("--token", help="bearer token, if the service asks for one")
    p.add_argument("--save-masks", help="write each round's mask PNG into this folder")
    p.set_defaults(func=_chat)

    p = sub.add_parser("demo", help="the main job: run the demo end to end")
    p.add_argument("--out", default="out/demo", help="where pictures and data go (default out/demo)")
    p.add_argument("--seed", type=int, default=7, help="seed of the held-out phantom image (default 7)")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="served pipeline vs a naive server, side by side (writes bench.md/.png)")
    p.add_argument("--out", default="out/bench", help="where bench.json, bench.md and bench.png go")
    p.add_argument("--data", help="phantom dataset root with test_hard.json (default: data/phantoms if present, "
                   "else a small set generated under data/bench)")
    p.add_argument("--dialogues", type=int, default=32, help="8-round dialogues per concurrency (default 32)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="dialogues held at once")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.set_defaults(func=_bench)
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
