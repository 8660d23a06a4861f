"""The model's three serving steps, as plain classes and as Ray Serve deployments.

- ``ImageEncoder``: both image encoders, content-addressed by the image's SHA-256 with a bounded
  in-replica LRU and a shared tier in Redis, so an image is encoded once however many rounds and
  sessions use it; batches images across sessions.
- ``Reasoner``: the LLaVA step: generates the answer and the [SEG] vector, decoding the rounds of
  different sessions together in one batch. Each dialogue's key/value cache stays on its replica
  between rounds (a bounded LRU) and ``serving.routing`` sends the dialogue back there; a replica
  without it rebuilds the dialogue from its stored rounds (bit-exactly, see
  ``MultiRoundPredictor.restore``).
- ``MaskDecoder``: JCM judge/correct and the SAM mask decoder; batches [SEG] vectors across sessions.

``LocalPipeline`` runs the three in one process; ``ServePipeline`` calls the deployments' handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import statistics
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from ray import serve

from model.checkpoint import load_checkpoint
from model.data.images import load_image, mask_box
from model.mediround import ImageEncoding
from model.predictor import MultiRoundPredictor, judge_and_decode, reason_together
from serving import metrics
from serving.store import RoundRecord, encode_mask


def model_id(checkpoint: str | Path) -> str:
    """Short content hash of a checkpoint's weights: cache keys never mix two models."""
    digest = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class EncodedImage:
    """What the encoder hands on: the uint8 (3, H, W) picture and its ``ImageEncoding``."""

    def __init__(self, picture: torch.Tensor, encoding: ImageEncoding):
        self.picture, self.encoding = picture, encoding

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        e = self.encoding
        torch.save({"picture": self.picture, "sam": e.sam_embedding, "features": e.image_features,
                    "input_size": e.input_size, "original_size": e.original_size}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EncodedImage:
        d = torch.load(io.BytesIO(data), weights_only=True)
        return cls(d["picture"], ImageEncoding(d["sam"], d["features"], tuple(d["input_size"]),
                                               tuple(d["original_size"])))


class ImageEncoderCore:
    """Encode images once: replica LRU -> shared Redis tier -> compute (batched)."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None, cache_size: int = 64,
                 shared_ttl: int = 3600):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.model_id = model_id(checkpoint)
        self.cache: OrderedDict[str, EncodedImage] = OrderedDict()
        self.cache_size, self.shared_ttl = cache_size, shared_ttl
        self.redis = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.computed = 0
        self.lock = threading.Lock()  # lookups (event loop) and computes (worker thread) share the LRU

    def _shared_key(self, sha: str) -> str:
        return f"mr:encoding:{self.model_id}:{sha}"

    def lookup(self, sha: str) -> tuple[EncodedImage | None, str]:
        with self.lock:
            if sha in self.cache:
                self.cache.move_to_end(sha)
                return self.cache[sha], "replica"
        if self.redis is not None:
            data = self.redis.get(self._shared_key(sha))
            if data is not None:
                self._remember(sha, EncodedImage.from_bytes(data))
                return self.cache[sha], "shared"
        return None, "miss"

    def _remember(self, sha: str, encoded: EncodedImage) -> None:
        with self.lock:
            self.cache[sha] = encoded
            self.cache.move_to_end(sha)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    @torch.inference_mode()
    def compute(self, items: list[tuple[str, bytes]]) -> list[EncodedImage]:
        """Encode a batch of (sha, image bytes) with one SAM forward and one CLIP forward."""
        pictures = [torch.from_numpy(load_image(data)).permute(2, 0, 1).contiguous() for _, data in items]
        embeddings, sizes = self.model.sam_embed(pictures)
        features = self.model.image_features(pictures)
        out = []
        for k, (sha, _) in enumerate(items):
            enc = EncodedImage(pictures[k], ImageEncoding(embeddings[k:k + 1], features[k], sizes[k],
                                                          tuple(pictures[k].shape[-2:])))
            self._remember(sha, enc)
            if self.redis is not None:
                self.redis.set(self._shared_key(sha), enc.to_bytes(), ex=self.shared_ttl)
            out.append(enc)
        self.computed += len(items)
        metrics.ENCODER_COMPUTED.inc(len(items))
        return out


@dataclass
class DialogueSlot:
    """One dialogue's predictor on a Reasoner, with the rounds its key/value cache holds."""

    predictor: MultiRoundPredictor | None = None
    signature: list[tuple] = field(default_factory=list)  # (question, reference, answer ids) per cached round


def _signature(record: RoundRecord) -> tuple:
    return record.question, record.reference, tuple(record.answer_ids)


class ReasonerCore:
    """The language step of rounds of any dialogues, batched across dialogues.

    Each dialogue's key/value cache stays in a bounded LRU between rounds, so a round prefills
    only its own tokens. The cache is used only when the stored history is exactly the rounds it
    holds; otherwise (another replica ran the last round, a round failed, the LRU evicted it) the
    dialogue is rebuilt from that history with ``MultiRoundPredictor.restore``, bit-identically.
    """

    def __init__(self, checkpoint: str, *, cache_size: int = 256, **predictor_args):
        model, tokenizer, cfg = load_checkpoint(checkpoint)
        self._new_predictor = lambda: MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length,
                                                          **predictor_args)
        self.dialogues: OrderedDict[str, DialogueSlot] = OrderedDict()
        self.cache_size = cache_size
        self.reused = self.rebuilt = 0
        self.lock = threading.Lock()  # one batch at a time owns the predictors

    def reason(self, encoded: EncodedImage, history: list[RoundRecord], question: str,
               reference: int | None, dialogue: str | None = None) -> dict:
        result = self.reason_batch([(dialogue, encoded, history, question, reference)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def reason_batch(self, items: list[tuple[str | None, EncodedImage, list[RoundRecord], str, int | None]],
                     ) -> list[dict | Exception]:
        """(dialogue id or None, encoded image, stored rounds, question, reference) -> turn dicts or errors."""
        with self.lock:
            slots = [self._slot(dialogue) for dialogue, *_ in items]
            predictors = [self._ready(slot, encoded, history) for slot, (_, encoded, history, *_) in
                          zip(slots, items, strict=True)]
            turns = reason_together(predictors, [(question, reference) for *_, question, reference in items])
        out: list[dict | Exception] = []
        for slot, turn in zip(slots, turns, strict=True):
            if isinstance(turn, Exception):
                out.append(turn)
                continue
            slot.signature.append((turn.question, turn.reference, tuple(turn.answer_ids)))
            seg = None if turn.seg_vector is None else turn.seg_vector.float().cpu().numpy().tolist()
            out.append({"answer": turn.answer, "answer_ids": turn.answer_ids, "seg_vector": seg,
                        "reference": turn.reference})
        return out

    def _slot(self, dialogue: str | None) -> DialogueSlot:
        if dialogue is None:  # a stateless round: nothing to keep
            return DialogueSlot()
        slot = self.dialogues.get(dialogue)
        if slot is None:
            slot = self.dialogues[dialogue] = DialogueSlot()
            while len(self.dialogues) > self.cache_size:
                self.dialogues.popitem(last=False)
        self.dialogues.move_to_end(dialogue)
        return slot

    def _ready(self, slot: DialogueSlot, encoded: EncodedImage, history: list[RoundRecord]) -> MultiRoundPredictor:
        """The slot's predictor holding exactly ``history``: its kept cache when that matches, else rebuilt."""
        p = slot.predictor
        if p is not None and slot.signature == [_signature(r) for r in history]:
            p.rounds += [r.to_result() for r in history[len(p.rounds):]]  # masks of rounds it reasoned
            self.reused += 1
            metrics.DIALOGUE_CACHE.labels(outcome="reused").inc()
            return p
        p = slot.predictor = self._new_predictor()
        encoded = _materialize(encoded)  # only a rebuild needs the picture and its encoding
        p.set_image(encoded.picture, encoding=encoded.encoding)
        p.restore([r.to_result() for r in history])
        slot.signature = [_signature(r) for r in history]
        self.rebuilt += 1
        metrics.DIALOGUE_CACHE.labels(outcome="rebuilt" if history else "new").inc()
        return p


class MaskDecoderCore:
    """JCM + SAM decoding of [SEG] vectors, each on its own image; an encoding passed by object
    reference is fetched once and kept (bounded LRU)."""

    def __init__(self, checkpoint: str, *, use_jcm: bool = True, cache_size: int = 64):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.use_jcm = use_jcm
        self.encodings: OrderedDict[str, EncodedImage] = OrderedDict()  # object ref -> fetched encoding
        self.cache_size = cache_size

    def _encoding(self, encoded) -> EncodedImage:
        if not isinstance(encoded, ray.ObjectRef):
            return encoded
        key = encoded.hex()
        if key not in self.encodings:
            self.encodings[key] = _materialize(encoded)
            while len(self.encodings) > self.cache_size:
                self.encodings.popitem(last=False)
        self.encodings.move_to_end(key)
        return self.encodings[key]

    @torch.inference_mode()
    def decode(self, items: list[tuple[EncodedImage | ray.ObjectRef, list[float]]]) -> list[dict]:
        out = []
        for ref, vector in items:
            encoded = self._encoding(ref)
            prompt = torch.tensor([vector], dtype=self.model.dtype)
            masks, q, corrected = judge_and_decode(self.model, encoded.encoding, prompt, self.use_jcm,
                                                  encoded.picture)
            metrics.JCM_CORRECTIONS.inc(int(corrected.sum()))
            out.append({"mask_png": encode_mask(masks[0]), "box": mask_box(masks[0]), "quality": float(q[0]),
                        "corrected": bool(corrected[0])})
        return out


class LocalPipeline:
    """All three steps in this process (the ``Pipeline`` of ``serving.dialogue``)."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None):
        self.encoder = ImageEncoderCore(checkpoint, redis_url=redis_url)
        self.reasoner = ReasonerCore(checkpoint)
        self.decoder = MaskDecoderCore(checkpoint)

    async def encode(self, sha256: str, image: bytes | None):
        encoded, tier = self.encoder.lookup(sha256)
        if encoded is None and image is not None:
            encoded = (await asyncio.to_thread(self.encoder.compute, [(sha256, image)]))[0]
        return encoded, tier != "miss"

    async def reason(self, encoding, history, question, reference, dialogue=None):
        return await asyncio.to_thread(self.reasoner.reason, encoding, history, question, reference, dialogue)

    async def decode(self, encoding, seg_vector):
        return (await asyncio.to_thread(self.decoder.decode, [(encoding, seg_vector)]))[0]


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ImageEncoder:
    def __init__(self, checkpoint: str, redis_url: str | None = None, cache_size: int = 64):
        self.core = ImageEncoderCore(checkpoint, redis_url=redis_url, cache_size=cache_size)
        self.refs: OrderedDict[str, ray.ObjectRef] = OrderedDict()  # sha -> the encoding in the object store
        self.computing: dict[str, asyncio.Future] = {}  # sha -> its encoding under way (computed once)

    async def encode(self, sha256: str, image: bytes | None) -> tuple[ray.ObjectRef | None, bool]:
        """(ObjectRef of the EncodedImage, cache hit?): the embedding travels by reference, put once.
        Without ``image`` only the caches are asked; (None, False) when the image is not encoded yet."""
        if sha256 in self.refs:
            self.refs.move_to_end(sha256)
            metrics.ENCODER_CACHE.labels(tier="replica").inc()
            return self.refs[sha256], True
        encoded, tier = self.core.lookup(sha256)
        if encoded is None:
            if image is None:
                return None, False
            if sha256 not in self.computing:  # concurrent rounds on a new image share one computation
                self.computing[sha256] = asyncio.ensure_future(self._compute((sha256, image)))
                self.computing[sha256].add_done_callback(lambda _: self.computing.pop(sha256, None))
            encoded = await asyncio.shield(self.computing[sha256])
        metrics.ENCODER_CACHE.labels(tier=tier).inc()
        if sha256 not in self.refs:
            self.refs[sha256] = ray.put(encoded)
            while len(self.refs) > self.core.cache_size:
                self.refs.popitem(last=False)
        return self.refs[sha256], tier != "miss"

    def reconfigure(self, config: dict) -> None:
        """Batch size and wait from the Serve config's ``user_config``."""
        self._compute.set_max_batch_size(config.get("max_batch_size", 8))
        self._compute.set_batch_wait_timeout_s(config.get("batch_wait_timeout_s", 0.005))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _compute(self, items: list[tuple[str, bytes]]) -> list[EncodedImage]:
        metrics.BATCH_SIZE.labels(stage="encode").observe(len(items))
        return await asyncio.to_thread(self.core.compute, items)

    def stats(self) -> dict:
        return {"computed": self.core.computed, "cached": len(self.core.cache)}


@serve.deployment(ray_actor_options={"num_cpus": 0.25},
                  request_router_config={"request_router_class": "serving.routing:SessionAffinityRouter"})
class Reasoner:
    """Rounds wait for the dialogues that are due: see ``DialogueBatcher``."""

    def __init__(self, checkpoint: str, dialogue_cache_size: int = 256):
        self.core = ReasonerCore(checkpoint, cache_size=dialogue_cache_size)
        self.batcher = DialogueBatcher(self.core.reason_batch)

    def reconfigure(self, config: dict) -> None:
        self.batcher.max_batch_size = config.get("max_batch_size", 32)
        self.batcher.max_wait_s = config.get("max_wait_s", 0.1)

    async def reason(self, encoded: ray.ObjectRef, history: list[RoundRecord], question: str,
                     reference: int | None, dialogue: str | None = None) -> dict:
        result = await self.batcher.submit(dialogue, (dialogue, encoded, history, question, reference))
        if isinstance(result, Exception):
            raise result
        result["replica"] = ray.serve.get_replica_context().replica_id.unique_id
        return result

    def stats(self) -> dict:
        return {"reused": self.core.reused, "rebuilt": self.core.rebuilt, "dialogues": len(self.core.dialogues),
                "batches": self.batcher.batches}


class DialogueBatcher:
    """Batches rounds of different dialogues for lockstep decoding, one batch at a time.

    A generation step costs about the same for one dialogue as for thirty, so a batch should hold
    every dialogue that is about to send its next round. ``serve.batch`` waits a fixed time after
    the first request; here a batch waits only for dialogues that are due: those whose last round
    came back within the recent turnaround (the time dialogues take to send their next round,
    90th percentile, times 1.5; ``max_wait_s`` until 8 turnarounds are known), and never past
    ``max_wait_s``. A lone dialogue never waits, and
    dialogues in step decode together instead of in fragments.
    """

    def __init__(self, run, *, max_batch_size: int = 32, max_wait_s: float = 0.1):
        self.run = run  # list of items -> list of results, called in a worker thread
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.queue: list[tuple[str | None, object, asyncio.Future]] = []
        self.returned: dict[str, float] = {}  # dialogue -> when its last round came back
        self.turnarounds: deque[float] = deque(maxlen=64)
        self.worker: asyncio.Task | None = None
        self.arrived = asyncio.Event()
        self.batches = 0

    async def submit(self, dialogue: str | None, item) -> object:
        loop = asyncio.get_running_loop()
        if dialogue in self.returned:
            self.turnarounds.append(loop.time() - self.returned.pop(dialogue))
        future = loop.create_future()
        self.queue.append((dialogue, item, future))
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._work())
        return await future

    def _expected_until(self, now: float) -> float | None:
        """Until when a due dialogue may still send its round; None when none is due."""
        if not self.returned:
            return None
        horizon = self.max_wait_s  # until the turnaround is known from a few rounds
        if len(self.turnarounds) >= 8:
            horizon = 1.5 * statistics.quantiles(self.turnarounds, n=10)[-1]
        for dialogue, t in list(self.returned.items()):
            if now - t > min(horizon, self.max_wait_s):
                del self.returned[dialogue]  # not coming soon: a person reading, or the dialogue ended
        return max((t + horizon for t in self.returned.values()), default=None)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queue:
            first = loop.time()
            while len(self.queue) < self.max_batch_size:
                until = self._expected_until(loop.time())
                if until is None or loop.time() >= min(until, first + self.max_wait_s):
                    break
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), min(until, first + self.max_wait_s) - loop.time())
            batch, self.queue = self.queue[:self.max_batch_size], self.queue[self.max_batch_size:]
            metrics.BATCH_SIZE.labels(stage="reason").observe(len(batch))
            self.batches += 1
            try:
                results = await asyncio.to_thread(self.run, [item for _, item, _ in batch])
            except Exception as e:  # the batch failed as a whole: every round in it gets the error
                results = [e] * len(batch)
            done = loop.time()
            for (dialogue, _, future), result in zip(batch, results, strict=True):
                if dialogue is not None:
                    self.returned[dialogue] = done
                if not future.done():
                    future.set_result(result)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class MaskDecoder:
    def __init__(self, checkpoint: str, use_jcm: bool = True):
        self.core = MaskDecoderCore(checkpoint, use_jcm=use_jcm)

    def reconfigure(self, config: dict) -> None:
        self.decode.set_max_batch_size(config.get("max_batch_size", 16))
        self.decode.set_batch_wait_timeout_s(config.get("batch_wait_timeout_s", 0.005))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def decode(self, items: list[tuple[EncodedImage, list[float]]]) -> list[dict]:
        metrics.BATCH_SIZE.labels(stage="decode").observe(len(items))
        return await asyncio.to_thread(self.core.decode, items)


def _materialize(value) -> EncodedImage:
    """An ``EncodedImage`` passed by object reference is fetched where it is used (a worker thread)."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class ServePipeline:
    """The ``Pipeline`` over the three deployments' handles (embeddings pass by object reference)."""

    def __init__(self, encoder, reasoner, decoder):
        self.encoder, self.reasoner, self.decoder = encoder, reasoner, decoder

    async def encode(self, sha256: str, image: bytes):
        return await self.encoder.encode.remote(sha256, image)

    async def reason(self, encoding, history, question, reference, dialogue=None):
        # The session id as multiplexed model id: what ``SessionAffinityRouter`` routes on.
        handle = self.reasoner if dialogue is None else self.reasoner.options(multiplexed_model_id=dialogue)
        return await handle.reason.remote(encoding, history, question, reference, dialogue)

    async def decode(self, encoding, seg_vector):
        return await self.decoder.decode.remote((encoding, seg_vector))  # one batch item

