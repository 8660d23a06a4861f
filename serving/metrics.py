"""Prometheus metrics of the service (scraped at ``http://<host>:<metrics port>/metrics``, default 9464).

Every process that serves (the gRPC front and each Ray Serve replica) records into its own registry;
Ray Serve replicas' metrics are exported by Ray's own metrics agent alongside.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

STAGE_SECONDS = Histogram("mediround_stage_seconds", "Time per round stage", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("mediround_batch_size", "Items per batched model call", ["stage"],
                       buckets=(1, 2, 4, 8, 16, 32))
ENCODER_CACHE = Counter("mediround_encoder_cache_total", "Image encoding lookups by tier", ["tier"])
ENCODER_COMPUTED = Counter("mediround_encoder_computed_total", "Images actually run through the encoders")
DIALOGUE_CACHE = Counter("mediround_dialogue_cache_total",
                         "Rounds by how the Reasoner got the dialogue's key/value cache", ["outcome"])
JCM_CORRECTIONS = Counter("mediround_jcm_corrections_total", "[SEG] vectors replaced by the JCM correction")
ROUNDS = Counter("mediround_rounds_total", "Rounds appended")
ROUND_INDEX = Histogram("mediround_round_index", "Number (1-based) of each appended round (rounds per session)",
                        buckets=(1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32))
ERRORS = Counter("mediround_errors_total", "Failed calls by gRPC status", ["method", "code"])


def serve_metrics(port: int) -> None:
    """Expose this process's metrics over HTTP."""
    start_http_server(port)
