"""The front's Prometheus metrics, served at ``http://<metrics address>:<metrics port>/metrics`` (default 9464).

What the front sees of every round: calls, errors, round numbers, and each stage's latency as the replicas
reported it in the round's timings. What only a replica sees (batch sizes, caches, JCM corrections) is
recorded in ``serving.replicas.metrics`` and exported by Ray's metrics agent on each Ray node.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

STAGE_SECONDS = Histogram("mediround_stage_seconds", "Time per round stage", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ROUNDS = Counter("mediround_rounds_total", "Rounds appended")
ROUND_INDEX = Histogram("mediround_round_index", "Number (1-based) of each appended round (rounds per session)",
                        buckets=(1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32))
ERRORS = Counter("mediround_errors_total", "Failed calls by gRPC status", ["method", "code"])


def serve_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Expose the front's metrics over HTTP on ``address:port``."""
    start_http_server(port, addr=address)
