"""The replicas' metrics, recorded through Ray's metrics API so that Ray's metrics agent exports them.

Each Ray node serves them in Prometheus format on its metrics export port (``ray start
--metrics-export-port``; the local service's ``ray_metrics_port``), named with Ray's ``ray_`` prefix:
``ray_mediround_batch_size``, ``ray_mediround_encoder_cache_total`` ... In ``LocalPipeline`` (no Ray) the
calls are accepted and go nowhere.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

BATCH_SIZE = Histogram("mediround_batch_size", "Items per batched model call", boundaries=[1, 2, 4, 8, 16, 32],
                       tag_keys=("stage",))
ENCODER_CACHE = Counter("mediround_encoder_cache_total", "Image encoding lookups by tier", tag_keys=("tier",))
ENCODER_COMPUTED = Counter("mediround_encoder_computed_total", "Images actually run through the encoders")
DIALOGUE_CACHE = Counter("mediround_dialogue_cache_total",
                         "Rounds by how the Reasoner got the dialogue's key/value cache", tag_keys=("outcome",))
JCM_CORRECTIONS = Counter("mediround_jcm_corrections_total", "[SEG] vectors replaced by the JCM correction")
