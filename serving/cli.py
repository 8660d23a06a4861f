"""The ``mediround`` command: one entry point, a subcommand per job (``serve``, ``demo``, ...).

The model's subcommands (``data``, ``train``, ``eval``) are registered by ``model/cli.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from model.cli import register as register_model_commands
from model.config import SHIPPED_TINY


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


def _default_data_dir() -> str:
    """``MEDIROUND_DATA_DIR``, else ``$XDG_DATA_HOME/mediround``, else ``~/.local/share/mediround``."""
    if os.environ.get("MEDIROUND_DATA_DIR"):
        return os.environ["MEDIROUND_DATA_DIR"]
    return str(Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mediround")


def _send_audit_to(target: str) -> None:
    """The audit log (one JSON line per call, ``serving.front.server``) to ``target``: a file, or "-" for stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
    audit = logging.getLogger("mediround.audit")
    audit.setLevel(logging.INFO)
    audit.addHandler(handler)
    audit.propagate = False  # its own stream: never mixed into, or filtered by, other logging


def _serve(args) -> int:
    import asyncio
    import signal

    from serving.runtime.logs import configure_logging

    configure_logging(args.log_level, args.log_format)

    from serving.front.server import ServerOptions
    from serving.runtime.embedded_redis import DataDirectoryInUse
    from serving.runtime.service import Service, ServiceOptions

    _send_audit_to(args.audit_log)
    replicas = dict(item.split("=", 1) for item in args.replicas or [])
    http = None
    if args.http is not None:
        from serving.http.server import HttpOptions

        http = HttpOptions(port=args.http, host=args.address.rsplit(":", 1)[0],
                           cors_origins=tuple(args.cors_origin or ()))
    options = ServiceOptions(checkpoint=args.checkpoint, redis_url=args.redis_url, data_dir=args.data_dir,
                             serve_config=args.serve_config,
                             replicas={k: int(v) for k, v in replicas.items()}, metrics_port=args.metrics_port,
                             metrics_address=args.metrics_address, ray_metrics_port=args.ray_metrics_port,
                             ray_address=args.ray_address, attach=args.attach, http=http,
                             server=ServerOptions(address=args.address, token=args.token,
                                                  tokens_file=args.tokens_file, tls_cert=args.tls_cert,
                                                  tls_key=args.tls_key, pacs_file=args.pacs_file,
                                                  checkpoint=args.checkpoint))

    async def main() -> None:
        service = await Service(options).start()
        print(f"mediround serving on {service.address} (gRPC mediround.v1.MediRound; health and reflection on)"
              + (f", metrics on :{args.metrics_port}/metrics" if args.metrics_port else "")
              + (f", the page and HTTP API on {service.gateway.url}" if service.gateway else ""), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await service.stop()

    try:
        asyncio.run(main())
    except DataDirectoryInUse as e:
        print(f"mediround: error: {e}", file=sys.stderr)
        return 2
    return 0


def _token(args) -> int:
    from serving.front.tenants import TENANT_NAME, new_token, parse_tokens_file, token_hash

    if not TENANT_NAME.fullmatch(args.tenant):
        raise ValueError("a tenant name is 1-63 lowercase letters, digits, '.', '_' or '-'")
    token = new_token()
    entry = f'  - name: {args.tenant}\n    token_sha256: "{token_hash(token)}"\n'
    for option in ("max_sessions", "max_rounds_in_flight"):
        if getattr(args, option):
            entry += f"    {option}: {getattr(args, option)}\n"
    if args.pacs:
        entry += f"    pacs: [{', '.join(json.dumps(name) for name in args.pacs)}]\n"
    parse_tokens_file("tenants:\n" + entry, "the new entry")  # the same rules as the server's (ValueError)
    # stdout is the entry alone (mediround token NAME >> tenants.yaml); the token goes to the terminal
    print("the token (give it to the tenant: it is shown once and stored nowhere); the entry for the tokens "
          f"file, under 'tenants:', follows on stdout\n{token}", file=sys.stderr)
    print(entry, end="")
    return 0


CHAT_EXIT_CODES = """exit status: 0 the dialogue ended (an empty line or end of input); 1 the service could not be
reached or refused the image; 2 a bad command line or an unreadable file. A round the service refuses prints one
line (error: STATUS: message) and the dialogue goes on."""


def _window_options(window: str | None, frame: int | None):
    """``--window`` / ``--frame`` as DicomOptions (None: the file's own); ``--window`` is a preset or CENTRE/WIDTH."""
    from mediround.v1 import mediround_pb2 as pb

    if not window and not frame:
        return None
    preset, slash, width = (window or "").partition("/")
    if slash:
        try:
            center, span = float(preset), float(width)
        except ValueError:
            raise ValueError(f"--window takes a preset name or CENTRE/WIDTH numbers such as 40/400; "
                             f"got '{window}'") from None
        return pb.DicomOptions(frame=frame or 0, window_center=center, window_width=span)
    if preset.lstrip("-").replace(".", "", 1).isdigit():
        raise ValueError(f"--window takes a preset name (ct-abdomen, ct-lung, ct-brain, ct-bone, ...) or CENTRE/WIDTH "
                         f"such as {preset}/400; got '{window}'")
    return pb.DicomOptions(frame=frame or 0, window_preset=preset)


def _rpc_error(e, address: str) -> str:
    """A service's refusal as one line: ``error: STATUS: message``."""
    import grpc

    if e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (e.details() or "").lower():
        return f"error: UNAVAILABLE: no MediRound service answers at {address} (is 'mediround serve' running there?)"
    return f"error: {e.code().name}: {e.details()}"


def _chat(args) -> int:
    import grpc

    from serving.client import MediRoundClient, readable_answer

    options = _window_options(args.window, args.frame)
    image = Path(args.image).read_bytes()  # a missing file: FileNotFoundError, exit status 2
    with MediRoundClient(args.address, token=args.token) as client:
        try:
            session = client.create_session(image, dicom_options=options)
        except grpc.RpcError as e:
            print(_rpc_error(e, args.address), file=sys.stderr)
            return 1
        what = ""
        if session.HasField("dicom"):
            d = session.dicom
            what = (f"; DICOM {d.modality} frame {d.frame}/{d.number_of_frames}, window "
                    f"{d.window_center:g}/{d.window_width:g} ({d.window_source})")
        print(f"session {session.id} on {args.image} ({session.width}x{session.height}{what}); empty line to quit")
        rounds = 0
        while True:
            try:
                question = input(f"round {rounds + 1}> ").strip()
            except EOFError:
                break
            if not question:
                break
            try:
                r = client.ask(session.id, question)
            except grpc.RpcError as e:  # one line, and the dialogue goes on
                print(_rpc_error(e, args.address), file=sys.stderr)
                continue
            rounds = r.number
            box = f" box ({r.box.x_min},{r.box.y_min})-({r.box.x_max},{r.box.y_max})" if r.has_mask else ""
            judged = f"q {r.quality:.2f}{', corrected' if r.corrected else ''}{box}; " if r.has_mask else "no mask; "
            print(f"  {readable_answer(r.answer)}  [{judged}reference round {r.reference_round or '-'}; "
                  f"{r.timings.total_ms:.0f} ms]")
            if args.save_masks and r.has_mask:
                path = Path(args.save_masks) / f"{session.id}_round{r.number}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(r.mask_png)
                print(f"  mask: {path}")
        if args.save_masks and session.HasField("dicom") and rounds:
            try:
                seg = client.segmentation(session.id)
            except grpc.RpcError as e:  # e.g. a source a SEG cannot reference: the PNG masks stand
                print(f"no DICOM SEG: {e.details()}")
            else:
                path = Path(args.save_masks) / f"{session.id}_seg.dcm"
                path.write_bytes(seg.dicom)
                print(f"DICOM SEG of rounds {list(seg.rounds)}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediround", description="MediRound Serve: multi-round medical "
                                     "reasoning segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    register_model_commands(sub)  # data, train, eval: model/cli.py

    p = sub.add_parser("serve", help="run the gRPC service (embedded Redis unless --redis-url / REDIS_URL)")
    p.add_argument("--address", default="127.0.0.1:50051", help="gRPC listen address (default 127.0.0.1:50051)")
    p.add_argument("--checkpoint", default=str(SHIPPED_TINY), help="checkpoint directory (default: the shipped tiny)")
    p.add_argument("--redis-url", help="dialogue Redis (redis://, rediss://, unix://); default: REDIS_URL or embedded")
    p.add_argument("--data-dir", default=_default_data_dir(),
                   help="where the embedded Redis keeps its append-only file, so sessions survive a restart "
                        "(default: MEDIROUND_DATA_DIR, else $XDG_DATA_HOME/mediround, else ~/.local/share/mediround; "
                        "unused with a Redis URL)")
    p.add_argument("--serve-config", help="Ray Serve config YAML (default deploy/serve/cpu-tiny.yaml)")
    p.add_argument("--replicas", action="append", metavar="DEPLOYMENT=N", help="override replicas, e.g. Reasoner=2")
    p.add_argument("--metrics-port", type=int, help="expose the front's Prometheus metrics on this port (e.g. 9464)")
    p.add_argument("--metrics-address", default="127.0.0.1",
                   help="the address the front's metrics listen on (default 127.0.0.1; 0.0.0.0 in a pod)")
    p.add_argument("--ray-metrics-port", type=int,
                   help="the local Ray node's metrics export port, where the replicas' metrics are served "
                        "(default: Ray picks one; a Ray cluster sets its own with ray start --metrics-export-port)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--attach", action="store_true",
                   help="serve the applications already running on the Ray cluster (e.g. a KubeRay RayService) "
                        "instead of deploying them; stopping leaves them running")
    p.add_argument("--token", default=os.environ.get("MEDIROUND_TOKEN"),
                   help="require 'authorization: Bearer <token>' metadata: one tenant (default: MEDIROUND_TOKEN)")
    p.add_argument("--tokens-file", default=os.environ.get("MEDIROUND_TOKENS_FILE"),
                   help="tenants and the SHA-256 of their tokens, YAML, re-read when it changes (default: "
                        "MEDIROUND_TOKENS_FILE; see 'mediround token')")
    p.add_argument("--pacs-file", default=os.environ.get("MEDIROUND_PACS_FILE"),
                   help="the PACS (DICOMweb) the server may fetch DICOM from and store SEGs to, by name, YAML, "
                        "re-read when it changes (default: MEDIROUND_PACS_FILE; README: PACS)")
    p.add_argument("--audit-log", default="-",
                   help="append the audit log (a JSON line per call: tenant, method, session, status, latency) to "
                        "this file (default '-': stderr)")
    p.add_argument("--http", type=int, metavar="PORT",
                   help="also serve the teaching page and its HTTP/JSON API on this port, same host as --address "
                        "(a gateway onto the gRPC API; serving/http)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="let pages of this origin (https://host[:port]) call the HTTP API and frame the page; "
                        "repeatable (default: none, CORS off)")
    p.add_argument("--log-level", default=os.environ.get("MEDIROUND_LOG_LEVEL", "INFO"),
                   help="the service's own log lines from this level up: DEBUG, INFO, WARNING or ERROR (default: "
                        "MEDIROUND_LOG_LEVEL, else INFO); libraries' from WARNING; Ray's notices stay in its log "
                        "files, its errors show")
    p.add_argument("--log-format", default=os.environ.get("MEDIROUND_LOG_FORMAT", "text"),
                   help="text, or json (one object a line, for a log collector) (default: MEDIROUND_LOG_FORMAT, "
                        "else text)")
    p.add_argument("--tls-cert", help="PEM certificate chain (serve TLS; needs --tls-key)")
    p.add_argument("--tls-key", help="PEM private key")
    p.set_defaults(func=_serve)

    p = sub.add_parser("token", help="make a new bearer token for a tenant and print its tokens-file entry")
    p.add_argument("tenant", help="tenant name: lowercase letters, digits, '.', '_', '-'")
    p.add_argument("--max-sessions", type=int, default=0, help="live sessions at once (default: no limit)")
    p.add_argument("--max-rounds-in-flight", type=int, default=0, help="per front process (default: no limit)")
    p.add_argument("--pacs", action="append", metavar="NAME",
                   help="a configured PACS it may fetch DICOM from and export SEGs to (repeat; '*': all; default none)")
    p.set_defaults(func=_token)

    p = sub.add_parser("chat", help="an interactive dialogue with a running service", epilog=CHAT_EXIT_CODES)
    p.add_argument("image", help="PNG (8/16-bit), JPEG, TIFF or DICOM file")
    p.add_argument("--address", default="127.0.0.1:50051", help="service address (default 127.0.0.1:50051)")
    p.add_argument("--token", help="bearer token, if the service asks for one")
    p.add_argument("--window", help="DICOM: a window preset (ct-abdomen, ct-lung, ct-brain, ct-bone, ...) or "
                                    "CENTRE/WIDTH (default: the file's own window, else its full range)")
    p.add_argument("--frame", type=int, help="DICOM: the 1-based frame of a multi-frame file (default 1)")
    p.add_argument("--save-masks", help="write each round's mask PNG (and, for DICOM, the dialogue's DICOM SEG) "
                                        "into this folder")
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
    except OSError as e:  # a file named on the command line that is missing, a directory, or unreadable
        if e.filename is None and not isinstance(e, FileNotFoundError):
            raise
        reason = "no such file" if isinstance(e, FileNotFoundError) else (e.strerror or type(e).__name__).lower()
        print(f"mediround: error: {e.filename}: {reason}" if e.filename else f"mediround: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"mediround: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
