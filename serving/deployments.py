"""The model's three serving steps, as plain classes and as Ray Serve deployments.

- ``ImageEncoder``: both image encoders, content-addressed by the image's SHA-256 with a bounded
  in-replica LRU and a shared tier in Redis, so an image is encoded once however many rounds and
  sessions use it; batches images across sessions.
- ``Reasoner``: the LLaVA step: rebuilds the dialogue from its stored rounds (bit-exactly, see
  ``MultiRoundPredictor.restore``), generates the answer and the [SEG] vector. One dialogue at a
  time per replica (not batched across sessions, which would break bit-exactness with the
  in-process predictor); scale with replicas.
- ``MaskDecoder``: JCM judge/correct and the SAM mask decoder; batches [SEG] vectors across sessions.

``LocalPipeline`` runs the three in one process; ``ServePipeline`` calls the deployments' handles.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from ray import serve

from model.checkpoint import load_checkpoint
from model.data.images import load_image, mask_box
from model.mediround import ImageEncoding
from model.predictor import MultiRoundPredictor, judge_and_decode
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


class ReasonerCore:
    """The language step of a round, for any dialogue: restore its history, then reason."""

    def __init__(self, checkpoint: str, **predictor_args):
        model, tokenizer, cfg = load_checkpoint(checkpoint)
        self.predictor = MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length, **predictor_args)
        self.lock = threading.Lock()  # the predictor holds one dialogue's state at a time

    def reason(self, encoded: EncodedImage, history: list[RoundRecord], question: str,
               reference: int | None) -> dict:
        p = self.predictor
        with self.lock:
            p.set_image(encoded.picture, encoding=encoded.encoding)
            p.restore([r.to_result() for r in history])
            turn = p.reason(question, reference)
        seg = None if turn.seg_vector is None else turn.seg_vector.float().cpu().numpy().tolist()
        return {"answer": turn.answer, "answer_ids": turn.answer_ids, "seg_vector": seg, "reference": turn.reference}


class MaskDecoderCore:
    """JCM + SAM decoding of [SEG] vectors; one JCM pass for a whole batch."""

    def __init__(self, checkpoint: str, *, use_jcm: bool = True):
        self.model, _, _ = load_checkpoint(checkpoint)
        self.use_jcm = use_jcm

    @torch.inference_mode()
    def decode(self, items: list[tuple[EncodedImage, list[float]]]) -> list[dict]:
        out = []
        for encoded, vector in items:
            prompt = torch.tensor([vector], dtype=self.model.dtype)
            masks, q, corrected = judge_and_decode(self.model, encoded.encoding, prompt, self.use_jcm)
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

    async def encode(self, sha256: str, image: bytes):
        encoded, tier = self.encoder.lookup(sha256)
        if encoded is None:
            encoded = (await asyncio.to_thread(self.encoder.compute, [(sha256, image)]))[0]
        return encoded, tier != "miss"

    async def reason(self, encoding, history, question, reference):
        return await asyncio.to_thread(self.reasoner.reason, encoding, history, question, reference)

    async def decode(self, encoding, seg_vector):
        return (await asyncio.to_thread(self.decoder.decode, [(encoding, seg_vector)]))[0]


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class ImageEncoder:
    def __init__(self, checkpoint: str, redis_url: str | None = None, cache_size: int = 64):
        self.core = ImageEncoderCore(checkpoint, redis_url=redis_url, cache_size=cache_size)

    async def encode(self, sha256: str, image: bytes) -> tuple[object, bool]:
        """(ObjectRef of the EncodedImage, cache hit?) so the embedding travels by reference."""
        import ray

        encoded, tier = self.core.lookup(sha256)
        metrics.ENCODER_CACHE.labels(tier=tier).inc()
        if encoded is None:
            encoded = await self._compute((sha256, image))
        return ray.put(encoded), tier != "miss"

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


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Reasoner:
    def __init__(self, checkpoint: str):
        self.core = ReasonerCore(checkpoint)

    async def reason(self, encoded: EncodedImage, history: list[RoundRecord], question: str,
                     reference: int | None) -> dict:
        import ray

        encoded = await _resolve(encoded)
        result = await asyncio.to_thread(self.core.reason, encoded, history, question, reference)
        result["replica"] = ray.serve.get_replica_context().replica_id.unique_id
        return result


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
        items = [(await _resolve(encoded), vector) for encoded, vector in items]
        return await asyncio.to_thread(self.core.decode, items)


async def _resolve(value):
    """An ``EncodedImage`` passed by object reference is fetched here, in the replica that uses it."""
    import ray

    return await value if isinstance(value, ray.ObjectRef) else value


class ServePipeline:
    """The ``Pipeline`` over the three deployments' handles (embeddings pass by object reference)."""

    def __init__(self, encoder, reasoner, decoder):
        self.encoder, self.reasoner, self.decoder = encoder, reasoner, decoder

    async def encode(self, sha256: str, image: bytes):
        return await self.encoder.encode.remote(sha256, image)

    async def reason(self, encoding, history, question, reference):
        return await self.reasoner.reason.remote(encoding, history, question, reference)

    async def decode(self, encoding, seg_vector):
        return await self.decoder.decode.remote((encoding, seg_vector))  # one batch item

