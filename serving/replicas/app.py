"""The Ray Serve applications' builders: what each application's ``import_path`` in a Serve config
names (``serving.replicas.app:encoder_app`` ...). They run where Serve builds the applications, never in the
gRPC front (which deploys and reaches the applications through ``serving.pipeline``).

Each builder reads its application's ``args``: ``checkpoint``, ``redis_url`` where the step reads
the dialogue store (else the replica's ``REDIS_URL``, how a cluster passes a secret) and the
settings fields of ``serving.replicas.settings``.
"""

from __future__ import annotations

import os

from serving.replicas.deployments import ImageEncoder, Reasoner, Segmenter
from serving.replicas.settings import EncoderSettings, ReasonerSettings, SegmenterSettings


def _redis_url(args: dict) -> str | None:
    return args.get("redis_url") or os.environ.get("REDIS_URL")


def encoder_app(args: dict):
    return ImageEncoder.bind(args["checkpoint"], _redis_url(args), EncoderSettings.from_args(args))


def reasoner_app(args: dict):
    return Reasoner.bind(args["checkpoint"], _redis_url(args), ReasonerSettings.from_args(args))


def segmenter_app(args: dict):
    return Segmenter.bind(args["checkpoint"], SegmenterSettings.from_args(args))
