"""Cold start, per-round latency at concurrency 1 and 8, and memory of the served tiny model.

    .venv/bin/python loadtest/serve_latency.py [--data data/phantoms] [--dialogues 16]

Starts the embedded service (as ``mediround serve`` does), holds the phantom ``test_hard``
dialogues over gRPC (6-8 rounds each, every round referring back) one at a time and then 8 at
once, and prints the figures. The side-by-side benchmark arrives with ``mediround bench``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from model.data.mrmedseg import load
from serving.client import MediRoundClient
from serving.server import ServerOptions
from serving.service import BackgroundService, ServiceOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/phantoms", help="phantom dataset root (make data)")
    parser.add_argument("--dialogues", type=int, default=16, help="dialogues per concurrency level")
    args = parser.parse_args()
    root = Path(args.data)
    dialogues = load(root / "test_hard.json")[: args.dialogues]

    started = time.perf_counter()
    with BackgroundService(ServiceOptions(server=ServerOptions(address="127.0.0.1:0"))) as service:
        print(f"cold start: {time.perf_counter() - started:.1f} s")

        def hold(conv) -> list[float]:
            with MediRoundClient(service.address) as client:
                session = client.create_session(root / conv.image)
                seconds = []
                for r in conv.rounds:
                    t = time.perf_counter()
                    client.ask(session.id, r.question)
                    seconds.append(time.perf_counter() - t)
                return seconds

        hold(dialogues[0])  # warm every replica
        for concurrency in (1, 8):
            t = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                latencies = [s for d in pool.map(hold, dialogues) for s in d]
            wall = time.perf_counter() - t
            p95 = statistics.quantiles(latencies, n=20)[18]
            p50 = statistics.median(latencies)
            print(f"concurrency {concurrency}: {len(latencies)} rounds, p50 {1e3 * p50:.0f} ms, "
                  f"p95 {1e3 * p95:.0f} ms, {len(latencies) / wall:.1f} rounds/s")
        me = psutil.Process()
        rss = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
        print(f"memory: {rss / 2**30:.2f} GiB RSS (this process, Ray and its workers, Redis)")


if __name__ == "__main__":
    main()
