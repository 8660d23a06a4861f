"""Each Ray Serve deployment's settings, in one dataclass per deployment: the one home of their defaults.

The deployment decorators take their options from here, ``reconfigure`` reads ``user_config`` into
them, the application builders take their arguments from them, and a test checks that the shipped
Serve config (``deploy/serve/cpu-tiny.yaml``) says the same. A field is one of three kinds, by the
part of a Serve config it lives in: ``ARGS`` (the application's ``args``, fixed at start),
``USER_CONFIG`` (the deployment's ``user_config``, changeable while it runs) or a deployment option.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Self


@dataclass(frozen=True)
class DeploymentSettings:
    """What every deployment has: how many requests a replica takes at once and its CPU share."""

    NAME: ClassVar[str]
    ARGS: ClassVar[tuple[str, ...]] = ()
    USER_CONFIG: ClassVar[tuple[str, ...]] = ()

    max_ongoing_requests: int = 32
    num_cpus: float = 0.25
    """A fraction of a CPU: on a small machine whole CPUs per replica leave Serve waiting for resources."""
    sweep_interval_s: float = 5.0
    """How often a replica drops from its caches what belongs to sessions deleted or expired: the longest
    a session's picture, embedding or key/value cache outlives it in a replica."""
    torch_threads: int = 2
    """Torch's intra-op threads in a replica. Ray gives a replica of a fractional CPU one (OMP_NUM_THREADS=1);
    on the 2-core machine here two take LiteMedSAM's encoder from 2.9 to 1.3 s an image and a round's
    reasoning and decoding from 158 to 100 ms."""

    def __post_init__(self):
        if self.torch_threads < 1:
            raise ValueError(f"{self.NAME} torch_threads must be at least 1, got {self.torch_threads}")

    def deployment_options(self) -> dict:
        """Keyword arguments of ``serve.deployment``."""
        return {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": {"num_cpus": self.num_cpus}}

    def user_config(self) -> dict:
        return {name: getattr(self, name) for name in self.USER_CONFIG}

    def args(self) -> dict:
        return {name: getattr(self, name) for name in self.ARGS}

    def with_user_config(self, config: dict) -> Self:
        """These settings with a Serve ``user_config`` applied; an unknown key is an error naming the known ones."""
        unknown = set(config) - set(self.USER_CONFIG)
        if unknown:
            raise ValueError(f"{self.NAME} user_config has unknown keys {sorted(unknown)}; it takes "
                             f"{list(self.USER_CONFIG)}")
        return replace(self, **config)

    @classmethod
    def from_args(cls, args: dict) -> Self:
        """Settings from an application's ``args`` (``checkpoint`` and ``redis_url`` are not settings);
        an unknown argument is an error naming the known ones."""
        settings = {k: v for k, v in args.items() if k not in ("checkpoint", "redis_url")}
        unknown = set(settings) - set(cls.ARGS)
        if unknown:
            raise ValueError(f"{cls.NAME} args have unknown keys {sorted(unknown)}; it takes "
                             f"['checkpoint', 'redis_url', {', '.join(map(repr, cls.ARGS))}]")
        return cls(**settings)


@dataclass(frozen=True)
class EncoderSettings(DeploymentSettings):
    """The ``ImageEncoder``: both image encoders, cached per image."""

    NAME: ClassVar[str] = "ImageEncoder"
    ARGS: ClassVar[tuple[str, ...]] = ("cache_size", "cache_bytes", "shared_ttl_s", "sweep_interval_s",
                                       "torch_threads")
    USER_CONFIG: ClassVar[tuple[str, ...]] = ("max_batch_size", "batch_wait_timeout_s")

    cache_size: int = 64
    """Encodings kept in each replica (LRU)."""
    cache_bytes: int = 512 << 20
    """... and at most this many bytes of them (pictures, SAM embeddings, CLIP features)."""
    shared_ttl_s: int = 3600
    """The longest an encoding stays in the shared Redis tier (never beyond its image, which leaves with its
    last session)."""
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.001
    """How long a new image waits for others to encode with it."""


@dataclass(frozen=True)
class ReasonerSettings(DeploymentSettings):
    """The ``Reasoner``: the language step, batched across dialogues (``serving.replicas.batching``)."""

    NAME: ClassVar[str] = "Reasoner"
    ARGS: ClassVar[tuple[str, ...]] = ("dialogue_cache_size", "dialogue_cache_bytes", "sweep_interval_s",
                                       "torch_threads")
    USER_CONFIG: ClassVar[tuple[str, ...]] = ("max_batch_size", "max_wait_s")

    dialogue_cache_size: int = 256
    """Dialogues whose key/value caches each replica keeps (LRU)."""
    dialogue_cache_bytes: int = 512 << 20
    """... and at most this many bytes of them (key/value caches, pictures, masks)."""
    max_batch_size: int = 32
    max_wait_s: float = 0.1
    """The longest a round waits for other dialogues that are due."""


@dataclass(frozen=True)
class SegmenterSettings(DeploymentSettings):
    """The ``Segmenter``: JCM judge/correct and SAM mask decoding of [SEG] vectors."""

    NAME: ClassVar[str] = "Segmenter"
    ARGS: ClassVar[tuple[str, ...]] = ("use_jcm", "encoding_cache_size", "encoding_cache_bytes", "sweep_interval_s",
                                       "torch_threads")
    USER_CONFIG: ClassVar[tuple[str, ...]] = ("max_batch_size", "batch_wait_timeout_s")

    use_jcm: bool = True
    encoding_cache_size: int = 64
    """Image encodings each replica keeps after fetching them (LRU)."""
    encoding_cache_bytes: int = 512 << 20
    """... and at most this many bytes of them."""
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.001


SETTINGS: dict[str, type[DeploymentSettings]] = {
    "encoder": EncoderSettings, "reasoner": ReasonerSettings, "segmenter": SegmenterSettings}
"""Application name -> its deployment's settings."""
