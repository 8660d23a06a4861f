"""The three Ray Serve deployments: thin shells around ``serving.replicas.steps``.

What a shell adds is Ray's part only: batching across requests (``serve.batch``, or the Reasoner's
``DialogueBatcher``), encodings put once in the object store and passed on by reference, fetching
those references where they are used, and the replica's id for routing and tracing. Options and
defaults come from ``serving.replicas.settings``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import ray
from ray import serve

from serving.messages import (
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
from serving.replicas.settings import EncoderSettings, ReasonerSettings, SegmenterSettings
from serving.replicas.steps import EncodedImage, ImageEncoderStep, ReasonerStep, SegmenterStep

ENCODER, REASONER, SEGMENTER = EncoderSettings(), ReasonerSettings(), SegmenterSettings()


def _fetch(value) -> EncodedImage:
    """An ``EncodedImage`` passed by object reference is fetched where it is used (a worker thread)."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


@serve.deployment(**ENCODER.deployment_options())
class ImageEncoder:
    def __init__(self, checkpoint: str, redis_url: str | None = None, settings: EncoderSettings = ENCODER):
        self.step = ImageEncoderStep(checkpoint, redis_url=redis_url, settings=settings)
        self.refs: OrderedDict[str, ray.ObjectRef] = OrderedDict()  # sha -> the encoding in the object store
        self.computing: dict[str, asyncio.Future] = {}  # sha -> its encoding under way (computed once)

    async def encode(self, sha256: str, image: bytes | None = None) -> Encoding:
        """The image's encoding by object reference, put once; without ``image`` a missing image is read
        from the store."""
        if sha256 in self.refs:
            self.refs.move_to_end(sha256)
            metrics.ENCODER_CACHE.inc(tags={"tier": "replica"})
            return Encoding(self.refs[sha256], True)
        encoded, tier = self.step.lookup(sha256)
        if encoded is None:
            if image is None and sha256 not in self.computing:
                # read here, not in the batch: one expired image must not fail the others' rounds
                image = await asyncio.to_thread(self.step.image_bytes, sha256)
            if sha256 not in self.computing:  # concurrent rounds on a new image share one computation
                self.computing[sha256] = asyncio.ensure_future(self._compute((sha256, image)))
                self.computing[sha256].add_done_callback(lambda _: self.computing.pop(sha256, None))
            encoded = await asyncio.shield(self.computing[sha256])
        metrics.ENCODER_CACHE.inc(tags={"tier": tier})
        if sha256 not in self.refs:
            self.refs[sha256] = ray.put(encoded)
            while len(self.refs) > self.step.settings.cache_size:
                self.refs.popitem(last=False)
        return Encoding(self.refs[sha256], tier != "miss")

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        self._compute.set_max_batch_size(settings.max_batch_size)
        self._compute.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=ENCODER.max_batch_size, batch_wait_timeout_s=ENCODER.batch_wait_timeout_s)
    async def _compute(self, items: list[tuple[str, bytes]]) -> list[EncodedImage]:
        metrics.BATCH_SIZE.observe(len(items), tags={"stage": "encode"})
        return await asyncio.to_thread(self.step.compute, items)

    def stats(self) -> EncoderStats:
        return EncoderStats(self.step.computed, len(self.step.cache))


@serve.deployment(**REASONER.deployment_options(),
                  request_router_config={"request_router_class": "serving.replicas.routing:SessionAffinityRouter"})
class Reasoner:
    """Rounds wait for the dialogues that are due: see ``DialogueBatcher``."""

    def __init__(self, checkpoint: str, redis_url: str | None = None, settings: ReasonerSettings = REASONER):
        self.step = ReasonerStep(checkpoint, redis_url=redis_url, settings=settings, fetch=_fetch)
        self.batcher = DialogueBatcher(self.step.reason_batch, max_batch_size=settings.max_batch_size,
                                       max_wait_s=settings.max_wait_s)
        self.replica = serve.get_replica_context().replica_id.unique_id

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        self.batcher.max_batch_size, self.batcher.max_wait_s = settings.max_batch_size, settings.max_wait_s

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        result = await self.batcher.submit(request.session_id, request)
        if isinstance(result, Exception):
            raise result
        result.replica = self.replica
        return result

    def stats(self) -> ReasonerStats:
        return ReasonerStats(self.step.reused, self.step.rebuilt, len(self.step.dialogues), self.batcher.batches)


@serve.deployment(**SEGMENTER.deployment_options())
class Segmenter:
    """Encodings arrive by object reference; each is fetched once and kept (bounded LRU)."""

    def __init__(self, checkpoint: str, settings: SegmenterSettings = SEGMENTER):
        self.step = SegmenterStep(checkpoint, settings=settings)
        self.encodings: OrderedDict[str, EncodedImage] = OrderedDict()  # object ref -> fetched encoding

    def reconfigure(self, config: dict) -> None:
        settings = self.step.settings = self.step.settings.with_user_config(config)
        self.decode.set_max_batch_size(settings.max_batch_size)
        self.decode.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def _encoding(self, ref) -> EncodedImage:
        if not isinstance(ref, ray.ObjectRef):
            return ref
        key = ref.hex()
        if key not in self.encodings:
            self.encodings[key] = ray.get(ref)
            while len(self.encodings) > self.step.settings.encoding_cache_size:
                self.encodings.popitem(last=False)
        self.encodings.move_to_end(key)
        return self.encodings[key]

    @serve.batch(max_batch_size=SEGMENTER.max_batch_size, batch_wait_timeout_s=SEGMENTER.batch_wait_timeout_s)
    async def decode(self, requests: list[MaskRequest]) -> list[DecodedMask]:
        metrics.BATCH_SIZE.observe(len(requests), tags={"stage": "decode"})

        def run():
            return self.step.decode([(self._encoding(r.encoding.ref), r.seg_vector) for r in requests])

        return await asyncio.to_thread(run)
