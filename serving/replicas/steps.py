"""The model's three serving steps as plain classes (no Ray), and ``LocalPipeline``, which runs them in
one process. ``serving.replicas.deployments`` wraps the same classes as Ray Serve deployments.

- ``ImageEncoderStep``: both image encoders, content-addressed by the image's SHA-256 with a bounded
  in-process LRU and a shared tier in Redis, so an image is encoded once however many rounds and
  sessions use it; reads the image bytes from the store itself when a round needs one it lacks.
- ``ReasonerStep``: the LLaVA step: generates the answer and the [SEG] vector, the rounds of different
  dialogues together in one batch. Each dialogue's key/value cache stays here between rounds (a
  bounded LRU); when the stored rounds are not the ones it holds (another replica ran the last
  round, a round failed, the LRU evicted it) the dialogue is rebuilt from the store, bit-identically
  (``MultiRoundPredictor.restore``).
- ``SegmenterStep``: JCM judge/correct and SAM mask decoding of [SEG] vectors, each on its own image.

Round numbers in the messages are 1-based; the predictor's round indexes are 0-based: the steps
convert between them (``_index`` / ``_number``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.data.images import load_image, mask_box
from model.mediround import ImageEncoding
from model.predictor import MultiRoundPredictor, RoundResult, judge_and_decode, reason_together
from serving.messages import (
    DecodedMask,
    Encoding,
    MaskRequest,
    PriorTurn,
    ReasonedTurn,
    ReasonRequest,
    Round,
    decode_mask,
    encode_mask,
)
from serving.replicas import metrics
from serving.replicas.settings import EncoderSettings, ReasonerSettings, SegmenterSettings
from serving.store import Conflict, StoreReader


def model_id(checkpoint: str | Path) -> str:
    """Short content hash of a checkpoint's weights: cache keys never mix two models."""
    digest = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class EncodedImage:
    """What the encoder hands on: the uint8 (3, H, W) picture and its ``ImageEncoding``."""

    picture: torch.Tensor
    encoding: ImageEncoding

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


def _same(value):
    return value


class ImageEncoderStep:
    """Encode images once: in-process LRU -> shared Redis tier -> compute (batched)."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None,
                 settings: EncoderSettings | None = None):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.model_id = model_id(checkpoint)
        self.settings = settings or EncoderSettings()
        self.cache: OrderedDict[str, EncodedImage] = OrderedDict()
        self.store = StoreReader(redis_url) if redis_url else None
        self.computed = 0
        self.lock = threading.Lock()  # lookups (event loop) and computes (worker thread) share the LRU

    def lookup(self, sha: str) -> tuple[EncodedImage | None, str]:
        """(the encoding or None, the tier that had it: "replica", "shared" or "miss")."""
        with self.lock:
            if sha in self.cache:
                self.cache.move_to_end(sha)
                return self.cache[sha], "replica"
        if self.store is not None:
            data = self.store.encoding(self.model_id, sha)
            if data is not None:
                encoded = EncodedImage.from_bytes(data)
                self._remember(sha, encoded)
                return encoded, "shared"
        return None, "miss"

    def image_bytes(self, sha: str) -> bytes:
        """A session's image, read from the store (for a round whose image is not encoded here yet)."""
        if self.store is None:
            raise RuntimeError("the image is not encoded and this encoder has no store to read it from")
        return self.store.image(sha)

    def _remember(self, sha: str, encoded: EncodedImage) -> None:
        with self.lock:
            self.cache[sha] = encoded
            self.cache.move_to_end(sha)
            while len(self.cache) > self.settings.cache_size:
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
            if self.store is not None:
                self.store.put_encoding(self.model_id, sha, enc.to_bytes(), self.settings.shared_ttl_s)
            out.append(enc)
        self.computed += len(items)
        if items:  # Ray's counters take positive increments only
            metrics.ENCODER_COMPUTED.inc(len(items))
        return out


@dataclass
class DialogueSlot:
    """One dialogue's predictor on a Reasoner, with the rounds its key/value cache holds."""

    predictor: MultiRoundPredictor | None = None
    history: list[PriorTurn] = field(default_factory=list)


def _index(number: int | None) -> int | None:
    """1-based round number -> 0-based round index."""
    return None if number is None else number - 1


def _number(index: int | None) -> int | None:
    return None if index is None else index + 1


def _held_round(index: int, prior: PriorTurn) -> RoundResult:
    """An earlier round as the predictor holds it when only its tokens matter (its mask, when referenced,
    comes with the request that refers to it)."""
    return RoundResult(index, prior.question, "", None, None, None, False, _index(prior.reference_round), False,
                       None, list(prior.answer_ids))


def _stored_round(record: Round) -> RoundResult:
    seg = None if record.seg_vector is None else np.asarray(record.seg_vector, np.float32)
    return RoundResult(record.number - 1, record.question, record.answer, record.mask, record.box, record.quality,
                       record.corrected, _index(record.reference_round), record.has_mask, seg,
                       list(record.answer_ids))


class ReasonerStep:
    """The language step of rounds of any dialogues, batched across dialogues.

    ``fetch`` turns an ``Encoding.ref`` into the ``EncodedImage`` (identity in one process; ``ray.get``
    in a deployment); it is called only to rebuild a dialogue, which needs the picture.
    """

    def __init__(self, checkpoint: str, *, redis_url: str | None = None,
                 settings: ReasonerSettings | None = None, fetch: Callable[[object], EncodedImage] = _same,
                 **predictor_args):
        model, tokenizer, cfg = load_checkpoint(checkpoint)
        self._new_predictor = lambda: MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length,
                                                          **predictor_args)
        self.store = StoreReader(redis_url) if redis_url else None
        self.settings, self.fetch = settings or ReasonerSettings(), fetch
        self.dialogues: OrderedDict[str, DialogueSlot] = OrderedDict()
        self.reused = self.rebuilt = 0
        self.lock = threading.Lock()  # one batch at a time owns the predictors

    def reason(self, request: ReasonRequest) -> ReasonedTurn:
        result = self.reason_batch([request])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def reason_batch(self, requests: list[ReasonRequest]) -> list[ReasonedTurn | Exception]:
        """The next round of each request's dialogue; a request that fails gets its error, in its place."""
        out: list[ReasonedTurn | Exception | None] = [None] * len(requests)
        with self.lock:
            slots: dict[int, DialogueSlot] = {}
            ready: list[MultiRoundPredictor] = []
            for k, request in enumerate(requests):
                slot = self._slot(request.session_id)
                if any(s is slot for s in slots.values()):  # the session lock keeps this from happening
                    out[k] = Conflict(f"session '{request.session_id}' already has a round being reasoned")
                    continue
                try:
                    ready.append(self._ready(slot, request))
                    slots[k] = slot
                except Exception as e:  # one dialogue that cannot be made ready fails alone
                    out[k] = e
            try:
                turns = reason_together(ready, [(requests[k].question, _index(requests[k].reference_round))
                                                for k in slots]) if slots else []
            except BaseException:
                for slot in slots.values():  # a forward pass that failed halfway leaves a cache no one may reuse
                    slot.predictor = None
                raise
            for (k, slot), turn in zip(slots.items(), turns, strict=True):
                if isinstance(turn, Exception):
                    out[k] = turn
                    continue
                slot.history.append(PriorTurn(turn.question, _number(turn.reference), tuple(turn.answer_ids)))
                seg = None if turn.seg_vector is None else turn.seg_vector.float().cpu().numpy().tolist()
                out[k] = ReasonedTurn(turn.answer, turn.answer_ids, seg, _number(turn.reference))
        return out

    def _slot(self, session_id: str | None) -> DialogueSlot:
        if session_id is None:  # a stateless round: nothing to keep
            return DialogueSlot()
        slot = self.dialogues.get(session_id)
        if slot is None:
            slot = self.dialogues[session_id] = DialogueSlot()
            while len(self.dialogues) > self.settings.dialogue_cache_size:
                self.dialogues.popitem(last=False)
        self.dialogues.move_to_end(session_id)
        return slot

    def _ready(self, slot: DialogueSlot, request: ReasonRequest) -> MultiRoundPredictor:
        """The slot's predictor holding exactly the request's history: its kept cache when that matches,
        else rebuilt from the stored rounds; the referenced round's mask from the request."""
        p = slot.predictor
        if p is not None and slot.history == request.history:
            p.rounds += [_held_round(k, prior) for k, prior in enumerate(request.history) if k >= len(p.rounds)]
            self.reused += 1
            metrics.DIALOGUE_CACHE.inc(tags={"outcome": "reused"})
        else:
            p = slot.predictor = self._rebuilt(request)
            slot.history = list(request.history)
            self.rebuilt += 1
            metrics.DIALOGUE_CACHE.inc(tags={"outcome": "rebuilt" if request.history else "new"})
        if request.reference_round is not None:
            referenced = p.rounds[request.reference_round - 1]
            referenced.mask = decode_mask(request.reference_mask_png) if request.reference_mask_png else None
        return p

    def _rebuilt(self, request: ReasonRequest) -> MultiRoundPredictor:
        stored: list[Round] = []
        if request.history:
            if request.session_id is None:
                raise ValueError("a stateless round has no earlier rounds; send it without history")
            if self.store is None:
                raise RuntimeError("rebuilding a dialogue needs the store; this reasoner has none")
            stored = self.store.rounds(request.session_id)
            if [r.prior() for r in stored] != request.history:
                raise Conflict(f"session '{request.session_id}' changed while its round was being reasoned")
        encoded = self.fetch(request.encoding.ref)
        p = self._new_predictor()
        p.set_image(encoded.picture, encoding=encoded.encoding)
        p.restore([_stored_round(r) for r in stored])
        return p


class SegmenterStep:
    """JCM + SAM decoding of [SEG] vectors, each on its own image."""

    def __init__(self, checkpoint: str, *, settings: SegmenterSettings | None = None):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.settings = settings or SegmenterSettings()

    @torch.inference_mode()
    def decode(self, items: list[tuple[EncodedImage, list[float]]]) -> list[DecodedMask]:
        out = []
        for encoded, vector in items:
            prompt = torch.tensor([vector], dtype=self.model.dtype)
            masks, q, corrected = judge_and_decode(self.model, encoded.encoding, prompt, self.settings.use_jcm,
                                                  encoded.picture)
            if corrected.any():
                metrics.JCM_CORRECTIONS.inc(int(corrected.sum()))
            out.append(DecodedMask(encode_mask(masks[0]), mask_box(masks[0]), float(q[0]), bool(corrected[0])))
        return out


class LocalPipeline:
    """All three steps in this process (the ``Pipeline`` of ``serving.front.dialogue``); ``redis_url`` is
    the dialogue store, which the steps read images and stored rounds from."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None):
        self.encoder = ImageEncoderStep(checkpoint, redis_url=redis_url)
        self.reasoner = ReasonerStep(checkpoint, redis_url=redis_url)
        self.segmenter = SegmenterStep(checkpoint)

    async def encode(self, sha256: str, image: bytes | None = None) -> Encoding:
        encoded, tier = self.encoder.lookup(sha256)
        if encoded is None:
            if image is None:
                image = await asyncio.to_thread(self.encoder.image_bytes, sha256)
            encoded = (await asyncio.to_thread(self.encoder.compute, [(sha256, image)]))[0]
        return Encoding(encoded, tier != "miss")

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        return await asyncio.to_thread(self.reasoner.reason, request)

    async def decode(self, request: MaskRequest) -> DecodedMask:
        return (await asyncio.to_thread(self.segmenter.decode, [(request.encoding.ref, request.seg_vector)]))[0]
