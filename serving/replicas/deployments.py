"""The three Ray Serve deployments: thin shells around ``serving.replicas.steps``.

What a shell adds is Ray's part only: batching across requests (``serve.batch``, or the Reasoner's
``DialogueBatcher``), encodings put once in the object store and passed on by reference, fetching
those references where they are used, the replica's id for routing and tracing, and a timer that sweeps
the step's caches (``serving.replicas.caches``). Options and defaults come from ``serving.replicas.settings``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import ray
import torch
from ray import serve

from serving.messages import (
    CachedData,
    DecodedMask,
    EncoderStats,
    Encoding,
    MaskRequest,
    ReasonedTurn,
    ReasonerStats,
    ReasonRequest,
)
from serving.replicas import metrics
from serving.replicas.batching import DialogueBatcher
from serving.replicas.settings import DeploymentSettings, EncoderSettings, ReasonerSettings, SegmenterSettings
from serving.replicas.steps import EncodedImage, ImageEncoderStep, ReasonerStep, SegmenterStep

ENCODER, REASONER, SEGMENTER = EncoderSettings(), ReasonerSettings(), SegmenterSettings()
log = logging.getLogger(__name__)


def _fetch(value) -> EncodedImage:
    """An ``EncodedImage`` passed by object reference is fetched where it is used (a worker thread)."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _set_batching(batched: Any, max_batch_size: int, batch_wait_timeout_s: float) -> None:
    """Resize a ``serve.batch`` method's batches (``serve.batch`` adds these setters; its typing does not say so)."""
    batched.set_max_batch_size(max_batch_size)
    batched.set_batch_wait_timeout_s(batch_wait_timeout_s)


class Sweeper:
    """Runs a step's ``sweep`` in a worker thread every ``interval_s`` on the replica's event loop, from the
    first request on (a replica's constructor runs outside its loop)."""

    def __init__(self, sweep: Callable[[], int], interval_s: float):
        self.sweep, self.interval_s = sweep, interval_s
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.sweep)
            except Exception as e:  # the store may be restarting: the next sweep catches up
                log.warning("cache sweep failed (%s); next in %.0f s", type(e).__name__, self.interval_s)


def _use_threads(settings: DeploymentSettings) -> None:
    """Torch's intra-op threads in this replica process, as its settings say (Ray set one)."""
    torch.set_num_threads(settings.torch_threads)


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


@serve.deployment(**ENCODER.deployment_options())
class ImageEncoder:
    def __init__(self, checkpoint: str, redis_url: str | None = None, settings: EncoderSettings = ENCODER):
        _use_threads(settings)
        self.step = ImageEncoderStep(checkpoint, redis_url=redis_url, settings=settings)
        self.computing: dict[str, asyncio.Future[EncodedImage]] = {}  # image key -> its encoding under way (once)
        self.sweeper = Sweeper(self.step.sweep, settings.sweep_interval_s)
        self.replica = _replica_id()

    async def encode(self, image_key: str, image: bytes | None = None) -> Encoding:
        """The encoding of the image stored as ``image_key``, by object reference, put once; without ``image`` a
        missing image is read from the store."""
        self.sweeper.start()
        # off the event loop: the shared tier is a Redis GET and a torch.load, and the loop serves every round
        encoded, tier = await asyncio.to_thread(self.step.lookup, image_key)
        if encoded is None:
            if image_key not in self.computing:  # concurrent rounds on a new image share one computation
                # read here, not in the batch: one expired image must not fail the others' rounds
                data = image if image is not None else await asyncio.to_thread(self.step.image_bytes, image_key)
                if image_key not in self.computing:  # another round may have started it during the read
                    self.computing[image_key] = asyncio.ensure_future(self._compute((image_key, data)))
                    self.computing[image_key].add_done_callback(lambda _: self.computing.pop(image_key, None))
            encoded = await asyncio.shield(self.computing[image_key])
        metrics.ENCODER_CACHE.inc(tags={"tier": tier})
        if encoded.ref is None:  # one copy in the object store, however many rounds pass it on
            encoded.ref = ray.put(encoded.without_ref())
        return Encoding(ref=encoded.ref, cache_hit=tier != "miss", image_key=image_key)

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        _set_batching(self._compute, settings.max_batch_size, settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=ENCODER.max_batch_size, batch_wait_timeout_s=ENCODER.batch_wait_timeout_s)
    async def _compute(self, items: list[tuple[str, bytes]]) -> list[EncodedImage]:
        metrics.BATCH_SIZE.observe(len(items), tags={"stage": "encode"})
        return await asyncio.to_thread(self.step.compute, items)

    def stats(self) -> EncoderStats:
        return EncoderStats(self.step.computed, len(self.step.cache))

    def holds(self, image_key: str, session_id: str) -> CachedData:
        """Whether this replica still holds the session's data (a deleted session's must leave within a sweep)."""
        return CachedData(self.replica, image_key in self.step.cache, False)


@serve.deployment(**REASONER.deployment_options(),
                  request_router_config={"request_router_class": "serving.replicas.routing:SessionAffinityRouter"})
class Reasoner:
    """Rounds wait for the dialogues that are due: see ``DialogueBatcher``."""

    def __init__(self, checkpoint: str, redis_url: str | None = None, settings: ReasonerSettings = REASONER):
        _use_threads(settings)
        self.step = ReasonerStep(checkpoint, redis_url=redis_url, settings=settings, fetch=_fetch)
        self.batcher = DialogueBatcher(self.step.reason_batch, max_batch_size=settings.max_batch_size,
                                       max_wait_s=settings.max_wait_s)
        self.sweeper = Sweeper(self.step.sweep, settings.sweep_interval_s)
        self.replica = _replica_id()

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        self.batcher.max_batch_size, self.batcher.max_wait_s = settings.max_batch_size, settings.max_wait_s

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        self.sweeper.start()
        result = await self.batcher.submit(request.session_id, request)
        if isinstance(result, Exception):
            raise result
        turn = cast(ReasonedTurn, result)  # what ReasonerStep.reason_batch returns for it
        turn.replica = self.replica
        return turn

    def stats(self) -> ReasonerStats:
        return ReasonerStats(self.step.reused, self.step.rebuilt, len(self.step.dialogues), self.batcher.batches)

    def holds(self, image_key: str, session_id: str) -> CachedData:
        """Whether this replica still holds the session's data (a deleted session's must leave within a sweep)."""
        return CachedData(self.replica, False, session_id in self.step.dialogues)


@serve.deployment(**SEGMENTER.deployment_options())
class Segmenter:
    """Encodings arrive by object reference; each is fetched once and kept (``SegmenterStep.encodings``)."""

    def __init__(self, checkpoint: str, redis_url: str | None = None, settings: SegmenterSettings = SEGMENTER):
        _use_threads(settings)
        self.step = SegmenterStep(checkpoint, redis_url=redis_url, settings=settings, fetch=_fetch)
        self.sweeper = Sweeper(self.step.sweep, settings.sweep_interval_s)
        self.replica = _replica_id()

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        _set_batching(self.decode, settings.max_batch_size, settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=SEGMENTER.max_batch_size, batch_wait_timeout_s=SEGMENTER.batch_wait_timeout_s)
    async def decode(self, requests: list[MaskRequest]) -> list[DecodedMask]:
        self.sweeper.start()
        metrics.BATCH_SIZE.observe(len(requests), tags={"stage": "decode"})
        return await asyncio.to_thread(self.step.decode, requests)

    def holds(self, image_key: str, session_id: str) -> CachedData:
        """Whether this replica still holds the session's data (a deleted session's must leave within a sweep)."""
        return CachedData(self.replica, image_key in self.step.encodings, False)
