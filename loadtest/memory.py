"""Memory over many sessions: does any process grow with the number of sessions it has served?

    .venv/bin/python loadtest/memory.py --sessions 1000 --out out/memory

Starts the whole service (throwaway embedded Redis, local Ray, the three Serve applications, the gRPC
front), then opens sessions one after another, each on an image of its own (a real CT slice with a
little noise, so every session is a new encoding) with two rounds, and deletes each one after its
rounds, as a teaching platform or a PACS does. At every checkpoint it records the private memory
(USS) of the front process and of every Serve replica, and Redis's ``used_memory`` and key count.
Prints a table and writes ``memory.json``. Bounded caches (the encoder's LRU, the Reasoner's dialogue
LRU) fill first, so "flat" means flat once they are full: the table shows where they fill.

``--trace N`` also traces the front's Python allocations (tracemalloc) from the first checkpoint after
warm-up to the end and prints the N places whose live memory grew most, with the growth per session.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tracemalloc
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import redis
from PIL import Image

from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.client import MediRoundClient
from serving.front.server import ServerOptions
from serving.runtime.service import BackgroundService, ServiceOptions

QUESTIONS = ("Segment the liver.", "Now segment the lesion inside the output of round 1.")


@dataclass
class Checkpoint:
    sessions: int
    front_uss_mib: float
    replica_uss_mib: dict[str, float]
    redis_used_mib: float
    redis_keys: int


def _uss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_full_info().uss / 2**20


def _replica_pids() -> dict[str, int]:
    """Serve replica name (``Deployment#n``) -> pid: this process's descendants that Ray titled
    ``ray::ServeReplica:<app>:<Deployment>``."""
    replicas: dict[str, int] = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            title = child.cmdline()[0]
            if title.startswith("ray::ServeReplica:"):
                deployment = title.split()[0].rsplit(":", 1)[1]
                replicas[f"{deployment}#{sum(k.startswith(deployment + '#') for k in replicas)}"] = child.pid
    return dict(sorted(replicas.items()))


def _image(k: int, base: np.ndarray) -> bytes:
    rng = np.random.default_rng(k)
    noisy = np.clip(base.astype(np.int16) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG")
    return buf.getvalue()


def _growth(start: tracemalloc.Snapshot, sessions: int, top: int) -> str:
    """The ``top`` allocation sites (3 frames) whose live memory grew most since ``start``, per session."""
    diff = tracemalloc.take_snapshot().compare_to(start, "traceback")
    lines = [f"front allocations that grew over {sessions} traced sessions (tracemalloc):"]
    for stat in diff[:top]:
        where = " <- ".join(f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}" for f in stat.traceback[:3])
        lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB ({stat.size_diff / sessions:+7.0f} B/session, "
                     f"{stat.count_diff:+d} blocks)  {where}")
    return "\n".join(lines)


def run(sessions: int, every: int, out: Path, trace: int = 0) -> list[Checkpoint]:
    base = np.asarray(Image.open(REAL_SLICES / load(REAL_DIALOGUES)[0].image).convert("L"))
    options = ServiceOptions(server=ServerOptions(address="127.0.0.1:0"))
    with BackgroundService(options) as service, MediRoundClient(service.address) as client:
        store = redis.Redis.from_url(service.store.url)
        replicas = _replica_pids()

        def checkpoint(n: int) -> Checkpoint:
            info = store.info("memory")
            point = Checkpoint(n, _uss_mib(os.getpid()), {name: _uss_mib(pid) for name, pid in replicas.items()},
                               info["used_memory"] / 2**20, store.dbsize())
            print(f"{n:5d} sessions: front {point.front_uss_mib:.0f} MiB, "
                  + ", ".join(f"{k} {v:.0f}" for k, v in point.replica_uss_mib.items())
                  + f", Redis {point.redis_used_mib:.1f} MiB / {point.redis_keys} keys", flush=True)
            return point

        points, traced = [checkpoint(0)], None
        for k in range(1, sessions + 1):
            session = client.create_session(_image(k, base), metadata={"course": "anatomy-101"})
            for question in QUESTIONS:
                client.ask(session.id, question, request_id=uuid.uuid4().hex)
            client.delete(session.id)
            if k % every == 0:
                points.append(checkpoint(k))
                if trace and traced is None:  # after warm-up: caches and pools have their size
                    tracemalloc.start(3)
                    traced = (k, tracemalloc.take_snapshot())
        if traced is not None:
            print(_growth(traced[1], sessions - traced[0], trace), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps([asdict(p) for p in points], indent=2))
    return points


def markdown(points: list[Checkpoint]) -> str:
    names = list(points[0].replica_uss_mib)
    lines = ["| sessions | front | " + " | ".join(names) + " | Redis used | Redis keys |",
             "|---" * (len(names) + 4) + "|"]
    for p in points:
        lines.append(f"| {p.sessions} | {p.front_uss_mib:.0f} | "
                     + " | ".join(f"{p.replica_uss_mib[n]:.0f}" for n in names)
                     + f" | {p.redis_used_mib:.1f} | {p.redis_keys} |")
    return "\n".join(lines) + "\n\n(private memory, USS, in MiB; Redis used_memory in MiB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="sessions between checkpoints")
    parser.add_argument("--out", default="out/memory")
    parser.add_argument("--trace", type=int, default=0, metavar="N",
                        help="trace the front's allocations after the first checkpoint; print the N that grew most")
    args = parser.parse_args()
    print(markdown(run(args.sessions, args.every, Path(args.out), args.trace)))


if __name__ == "__main__":
    main()
