"""One round's orchestration: validate, load the session, encode, reason, decode, append.

No Ray and no gRPC here: the three model steps come through a ``Pipeline`` (the Ray Serve handles
in production, ``serving.deployments.LocalPipeline`` in one process) and the state through the
``RedisSessionStore``.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.data.images import to_uint8_rgb
from model.predictor import QuestionError
from model.reference import ReferenceRoundError, resolve_reference
from serving.errors import ImageTooLarge, InvalidImage, SessionBusy
from serving.store import RedisSessionStore, RoundRecord, SessionRecord

ACCEPTED_FORMATS = {"PNG", "JPEG", "TIFF"}


@dataclass
class Limits:
    """What the service accepts."""

    max_image_bytes: int = 8 * 2**20
    max_image_side: int = 4096
    max_question_chars: int = 1000
    session_wait_s: float = 60.0
    """How long a round waits for the previous round of its session."""


class Pipeline(Protocol):
    """The model's three steps, wherever they run."""

    async def encode(self, sha256: str, image: bytes | None) -> tuple[object | None, bool]:
        """An image encoding (opaque to the dialogue) and whether it came from a cache; without
        ``image`` only a cached encoding is looked up ((None, False) when there is none)."""

    async def reason(self, encoding, history: list[RoundRecord], question: str, reference: int | None,
                     dialogue: str | None = None) -> dict:
        """{"answer", "answer_ids", "seg_vector" (list or None), "reference"} for the next round.

        ``dialogue`` (the session id; None for a stateless round) lets the step keep the dialogue's
        state between rounds."""

    async def decode(self, encoding, seg_vector: list[float]) -> dict:
        """{"mask_png", "box", "quality", "corrected"} for one [SEG] vector."""


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """Image bytes -> uint8 (H, W, 3); refuses what the service does not accept, saying why."""
    if not data:
        raise InvalidImage("the image is empty; send PNG (8- or 16-bit), JPEG or TIFF bytes")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; at most {limits.max_image_bytes} are accepted")
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format
        if fmt not in ACCEPTED_FORMATS:
            raise InvalidImage(f"images must be PNG (8- or 16-bit), JPEG or TIFF; got {fmt}")
        if max(image.size) > limits.max_image_side:
            raise ImageTooLarge(f"the image is {image.size[0]}x{image.size[1]}; sides up to "
                                f"{limits.max_image_side} pixels are accepted")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InvalidImage(f"the image bytes could not be decoded ({e}); send PNG (8- or 16-bit), JPEG or "
                           "TIFF") from e
    return to_uint8_rgb(np.asarray(image.convert("RGB") if image.mode in ("P", "PA", "CMYK", "YCbCr") else image))


class Dialogue:
    """Sessions and rounds over a store and a pipeline."""

    def __init__(self, store: RedisSessionStore, pipeline: Pipeline, limits: Limits | None = None):
        self.store, self.pipeline, self.limits = store, pipeline, limits or Limits()

    async def create_session(self, image: bytes, metadata: dict[str, str] | None = None,
                             ttl: int = 0) -> SessionRecord:
        picture = decode_image(image, self.limits)
        sha = hashlib.sha256(image).hexdigest()
        return await self.store.create_session(image, sha, picture.shape[:2], metadata=metadata, ttl=ttl)

    def _check_question(self, question: str) -> str:
        question = " ".join(question.split())
        if not question:
            raise QuestionError("the question is empty; ask for a structure, e.g. 'Segment the liver.'")
        if len(question) > self.limits.max_question_chars:
            raise QuestionError(f"the question is {len(question)} characters; at most "
                                f"{self.limits.max_question_chars} are accepted")
        return question

    async def run_round(self, session_id: str, question: str, reference_round: int = 0, request_id: str = "",
                        on_answer=None) -> RoundRecord:
        """Compute and append the session's next round. ``reference_round`` is 1-based (0: resolve
        from the question); ``on_answer(text)`` is awaited once the answer text exists."""
        question = self._check_question(question)
        done = await self.store.find_request(session_id, request_id)
        if done is not None:
            return done
        try:
            lock = self.store.lock(session_id, wait=self.limits.session_wait_s)
            async with lock:
                done = await self.store.find_request(session_id, request_id)
                if done is not None:
                    return done
                session = await self.store.get_session(session_id)
                history = await self.store.rounds(session_id)
                reference = self._reference(question, reference_round, len(history))
                record = await self._compute(session.image_sha256, None, history, question, reference, on_answer,
                                             dialogue=session.id)
                record.request_id = request_id
                return await self.store.append_round(session, record)
        except TimeoutError as e:
            raise SessionBusy(str(e)) from e

    async def segment(self, image: bytes, question: str) -> RoundRecord:
        """A single stateless round on ``image``."""
        question = self._check_question(question)
        decode_image(image, self.limits)
        reference = self._reference(question, 0, 0)
        record = await self._compute(hashlib.sha256(image).hexdigest(), image, [], question, reference, None)
        record.index = 1
        return record

    @staticmethod
    def _reference(question: str, reference_round: int, rounds_so_far: int) -> int | None:
        if reference_round:
            if not 1 <= reference_round <= rounds_so_far:
                have = f"rounds 1..{rounds_so_far}" if rounds_so_far else "no rounds yet"
                raise ReferenceRoundError(f"reference_round {reference_round} does not exist; the session has {have}")
            return reference_round - 1
        return resolve_reference(question, rounds_so_far)

    async def _compute(self, sha: str, image: bytes | None, history: list[RoundRecord], question: str,
                       reference: int | None, on_answer, *, dialogue: str | None = None) -> RoundRecord:
        """One round on the image ``sha`` (its bytes are read from the store only when not yet encoded)."""
        start = time.perf_counter()
        encoding, hit = await self.pipeline.encode(sha, image)
        if encoding is None:
            encoding, hit = await self.pipeline.encode(sha, await self.store.image(sha))
        encoded = time.perf_counter()
        turn = await self.pipeline.reason(encoding, history, question, reference, dialogue)
        reasoned = time.perf_counter()
        if on_answer is not None:
            await on_answer(turn["answer"])
        if turn["seg_vector"] is None:
            mask = {"mask_png": b"", "box": None, "quality": None, "corrected": False}
        else:
            mask = await self.pipeline.decode(encoding, turn["seg_vector"])
        end = time.perf_counter()
        timings = {"encode_ms": 1e3 * (encoded - start), "reason_ms": 1e3 * (reasoned - encoded),
                   "decode_ms": 1e3 * (end - reasoned), "total_ms": 1e3 * (end - start), "encoder_cache_hit": hit}
        return RoundRecord(index=len(history) + 1, question=question, answer=turn["answer"],
                           answer_ids=turn["answer_ids"], reference=turn["reference"], mask_png=mask["mask_png"],
                           box=mask["box"], quality=mask["quality"], corrected=mask["corrected"],
                           has_seg=turn["seg_vector"] is not None, seg_vector=turn["seg_vector"], timings=timings,
                           created=time.time(), served_by={"reasoner": turn.get("replica", "local")})

