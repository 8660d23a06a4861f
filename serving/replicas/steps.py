"""The model's three serving steps as plain classes (no Ray), and ``LocalPipeline``, which runs them in
one process. ``serving.replicas.deployments`` wraps the same classes as Ray Serve deployments.

- ``ImageEncoderStep``: both image encoders, content-addressed by the image's key (``serving.store.content_key``:
  its SHA-256, per tenant) with a bounded in-process LRU and a shared tier in Redis, so an image is encoded
  once however many rounds and sessions use it; reads the image bytes from the store itself when a round
  needs one it lacks.
- ``ReasonerStep``: the LLaVA step: generates the answer and the [SEG] vector, the rounds of different
  dialogues together in one batch. Each dialogue's key/value cache stays here between rounds (a
  bounded LRU); when the stored rounds are not the ones it holds (another replica ran the last
  round, a round failed, the LRU evicted it) the dialogue is rebuilt from the store, bit-identically
  (``MultiRoundPredictor.restore``).
- ``SegmenterStep``: JCM judge/correct and SAM mask decoding of [SEG] vectors, each on its own image.

Each cache is a ``BoundedLRU`` (entries and bytes) that ``sweep`` trims to what the store still holds, so a
deleted or expired session's picture, embedding and key/value cache do not outlive it in a replica.

Round numbers in the messages are 1-based; the predictor's round indexes are 0-based: the steps
convert between them with ``model.questions.round_index`` / ``round_number`` and nowhere else. The
dialogue sends its question normalised and its reference resolved; the Reasoner hands them to the
predictor as a ``Question`` that is not checked again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.data.images import load_image, mask_box
from model.mediround import ImageEncoding
from model.predictor import MultiRoundPredictor, RoundResult, judge_and_decode, reason_together
from model.questions import Question, round_index, round_number
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
from serving.replicas.caches import BoundedLRU, tensor_bytes
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
    """What the encoder hands on: the uint8 (3, H, W) picture and its ``ImageEncoding``; in a Ray replica,
    ``ref`` is the one copy of it put in the object store (``without_ref`` is what is put)."""

    picture: torch.Tensor
    encoding: ImageEncoding
    ref: object | None = field(default=None, compare=False, repr=False)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.picture, self.encoding.sam_embedding, self.encoding.image_features)

    def without_ref(self) -> EncodedImage:
        return replace(self, ref=None)

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
        self.cache: BoundedLRU[str, EncodedImage] = BoundedLRU(
            max_entries=self.settings.cache_size, max_bytes=self.settings.cache_bytes, size_of=lambda e: e.nbytes)
        self.store = StoreReader(redis_url) if redis_url else None
        self.computed = 0

    def lookup(self, image_key: str) -> tuple[EncodedImage | None, str]:
        """(the encoding or None, the tier that had it: "replica", "shared" or "miss")."""
        encoded = self.cache.get(image_key)
        if encoded is not None:
            return encoded, "replica"
        if self.store is not None:
            data = self.store.encoding(self.model_id, image_key)
            if data is not None:
                encoded = EncodedImage.from_bytes(data)
                self.cache.put(image_key, encoded)
                return encoded, "shared"
        return None, "miss"

    def sweep(self) -> int:
        """Drop the encodings of images no session uses any more; the number dropped."""
        return self.cache.retain(self.store.stored_images) if self.store is not None else 0

    def image_bytes(self, image_key: str) -> bytes:
        """A session's image, read from the store (for a round whose image is not encoded here yet)."""
        if self.store is None:
            raise RuntimeError("the image is not encoded and this encoder has no store to read it from")
        return self.store.image(image_key)


    @torch.inference_mode()
    def compute(self, items: list[tuple[str, bytes]]) -> list[EncodedImage]:
        """Encode a batch of (image key, image bytes) with one SAM forward and one CLIP forward."""
        pictures = [torch.from_numpy(load_image(data)).permute(2, 0, 1).contiguous() for _, data in items]
        embeddings, sizes = self.model.sam_embed(pictures)
        features = self.model.image_features(pictures, embeddings)  # from the SAM pass when the MLLM sees it
        out = []
        for k, (image_key, _) in enumerate(items):
            height, width = pictures[k].shape[-2:]
            enc = EncodedImage(pictures[k], ImageEncoding(embeddings[k:k + 1], features[k], sizes[k],
                                                          (int(height), int(width))))
            self.cache.put(image_key, enc)
            if self.store is not None:
                self.store.put_encoding(self.model_id, image_key, enc.to_bytes(), self.settings.shared_ttl_s)
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

    def nbytes(self) -> int:
        """What the slot holds of its own: the key/value cache, the picture and the rounds' masks (the image
        encoding is the encoder's, shared)."""
        p = self.predictor
        if p is None:
            return 0
        layers: list[Any] = list(p.state.cache.layers)  # transformers' typing allows layers without keys; ours have
        cache = [t for layer in layers for t in (layer.keys, layer.values)]
        masks = sum(r.mask.nbytes for r in p.rounds if r.mask is not None)
        return tensor_bytes(p._image, *cache) + masks


def _held_round(index: int, prior: PriorTurn) -> RoundResult:
    """An earlier round as the predictor holds it when only its tokens matter (its mask, when referenced,
    comes with the request that refers to it)."""
    return RoundResult(index=index, question=prior.question, answer="", mask=None, box=None, quality=None,
                       corrected=False, reference_index=round_index(prior.reference_round), has_mask=False,
                       answer_ids=list(prior.answer_ids))


def _stored_round(record: Round) -> RoundResult:
    """A stored round as the predictor replays it in a rebuild."""
    seg = None if record.seg_vector is None else np.asarray(record.seg_vector, np.float32)
    return RoundResult(index=round_index(record.number), question=record.question, answer=record.answer,
                       mask=record.mask, box=record.box, quality=record.quality, corrected=record.corrected,
                       reference_index=round_index(record.reference_round), has_mask=record.has_mask,
                       seg_vector=seg, answer_ids=list(record.answer_ids))


def _question(request: ReasonRequest) -> Question:
    """The request's question as the dialogue normalised and resolved it, for the predictor as it is."""
    return Question(text=request.question, reference_index=round_index(request.reference_round))


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
        self.dialogues: BoundedLRU[str, DialogueSlot] = BoundedLRU(
            max_entries=self.settings.dialogue_cache_size, max_bytes=self.settings.dialogue_cache_bytes,
            size_of=DialogueSlot.nbytes)
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
                turns = reason_together(ready, [_question(requests[k]) for k in slots]) if slots else []
            except BaseException:
                for slot in slots.values():  # a forward pass that failed halfway leaves a cache no one may reuse
                    slot.predictor = None
                raise
            for (k, slot), turn in zip(slots.items(), turns, strict=True):
                if isinstance(turn, Exception):
                    out[k] = turn
                    continue
                reference_round = round_number(turn.reference_index)
                slot.history.append(PriorTurn(question=turn.question, reference_round=reference_round,
                                              answer_ids=tuple(turn.answer_ids)))
                session_id = requests[k].session_id
                if session_id is not None:
                    self.dialogues.put(session_id, slot)  # counts its grown cache again
                seg = None if turn.seg_vector is None else turn.seg_vector.float().cpu().numpy().tolist()
                out[k] = ReasonedTurn(answer=turn.answer, answer_ids=turn.answer_ids, seg_vector=seg,
                                      reference_round=reference_round)
        return cast(list[ReasonedTurn | Exception], out)  # every request got its turn or its error

    def _slot(self, session_id: str | None) -> DialogueSlot:
        if session_id is None:  # a stateless round: nothing to keep
            return DialogueSlot()
        slot = self.dialogues.get(session_id)
        if slot is None:
            slot = DialogueSlot()
            self.dialogues.put(session_id, slot)
        return slot

    def sweep(self) -> int:
        """Drop the dialogues of sessions deleted or expired; the number dropped."""
        return self.dialogues.retain(self.store.live_sessions) if self.store is not None else 0

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
            referenced = p.rounds[round_index(request.reference_round)]
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
    """JCM + SAM decoding of [SEG] vectors, each on its own image. ``fetch`` turns an ``Encoding.ref`` into the
    ``EncodedImage`` (identity in one process; ``ray.get`` in a deployment, kept here in a bounded LRU by image)."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None, settings: SegmenterSettings | None = None,
                 fetch: Callable[[object], EncodedImage] = _same):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.settings, self.fetch = settings or SegmenterSettings(), fetch
        self.store = StoreReader(redis_url) if redis_url else None
        self.encodings: BoundedLRU[str, EncodedImage] = BoundedLRU(
            max_entries=self.settings.encoding_cache_size, max_bytes=self.settings.encoding_cache_bytes,
            size_of=lambda e: e.nbytes)

    def encoded(self, encoding: Encoding) -> EncodedImage:
        if isinstance(encoding.ref, EncodedImage):
            return encoding.ref
        encoded = self.encodings.get(encoding.image_key)
        if encoded is None:
            encoded = self.fetch(encoding.ref)
            self.encodings.put(encoding.image_key, encoded)
        return encoded

    @torch.inference_mode()
    def decode(self, requests: list[MaskRequest]) -> list[DecodedMask]:
        out = []
        for request in requests:
            encoded = self.encoded(request.encoding)
            prompt = torch.tensor([request.seg_vector], dtype=self.model.dtype)
            masks, q, corrected = judge_and_decode(self.model, encoded.encoding, prompt, self.settings.use_jcm,
                                                  encoded.picture)
            if corrected.any():
                metrics.JCM_CORRECTIONS.inc(int(corrected.sum()))
            out.append(DecodedMask(mask_png=encode_mask(masks[0]), box=mask_box(masks[0]), quality=float(q[0]),
                                   corrected=bool(corrected[0])))
        return out

    def sweep(self) -> int:
        """Drop the encodings of images no session uses any more; the number dropped."""
        return self.encodings.retain(self.store.stored_images) if self.store is not None else 0


class LocalPipeline:
    """All three steps in this process (the ``Pipeline`` of ``serving.front.dialogue``); ``redis_url`` is
    the dialogue store, which the steps read images and stored rounds from."""

    def __init__(self, checkpoint: str, *, redis_url: str | None = None):
        self.encoder = ImageEncoderStep(checkpoint, redis_url=redis_url)
        self.reasoner = ReasonerStep(checkpoint, redis_url=redis_url)
        self.segmenter = SegmenterStep(checkpoint, redis_url=redis_url)

    async def encode(self, image_key: str, image: bytes | None = None) -> Encoding:
        encoded, tier = await asyncio.to_thread(self.encoder.lookup, image_key)
        if encoded is None:
            if image is None:
                image = await asyncio.to_thread(self.encoder.image_bytes, image_key)
            encoded = (await asyncio.to_thread(self.encoder.compute, [(image_key, image)]))[0]
        return Encoding(ref=encoded, cache_hit=tier != "miss", image_key=image_key)

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        return await asyncio.to_thread(self.reasoner.reason, request)

    async def decode(self, request: MaskRequest) -> DecodedMask:
        return (await asyncio.to_thread(self.segmenter.decode, [request]))[0]

    def sweep(self) -> int:
        """Every step's ``sweep`` (the deployments run theirs on a timer); the number of entries dropped."""
        return self.encoder.sweep() + self.reasoner.sweep() + self.segmenter.sweep()
