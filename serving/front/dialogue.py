"""Sessions and rounds: validate, load the session, encode, reason, decode, append; the one owner of a
dialogue's stored state. The gRPC servicer calls it for sessions and rounds (and the DICOM edge,
``serving.dicom.edge``, for sessions opened on DICOM and for SEG export).

No Ray, no gRPC and no torch here (its errors are ``serving.errors``' domain errors, which the front maps to
status codes in ``serving.front.status``): the three model steps come through a ``Pipeline`` (the Ray Serve
handles in production, ``serving.replicas.steps.LocalPipeline`` in one process) and the state through the
``RedisSessionStore``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import re
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.data.images import to_uint8_rgb
from model.data.template import NOTHING_FOUND
from model.questions import (
    QuestionError,
    ReferenceRoundError,
    normalize_question,
    round_index,
    round_number,
    round_reference,
)
from serving.errors import (
    DeadlinePassed,
    ImageTooLarge,
    InvalidImage,
    InvalidMetadata,
    InvalidSessionId,
    InvalidTTL,
    RequestIdReused,
    StepUnavailable,
)
from serving.front.tenants import ANONYMOUS, Tenant
from serving.messages import (
    DecodedMask,
    DicomSource,
    Encoding,
    MaskRequest,
    ReasonedTurn,
    ReasonRequest,
    Round,
    RoundTimings,
    Session,
)
from serving.retries import Backoff, retry_async
from serving.store import RedisSessionStore, SessionNotFound, StoreUnavailable, content_key

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff"}
ACCEPTED_FORMATS = set(MEDIA_TYPES)
ACCEPTED_IMAGES = "PNG (8- or 16-bit), JPEG, TIFF or DICOM (a Part-10 file)"
"""What a client may send as an image, in its words (DICOM is rendered by ``serving.dicom.edge`` first)."""
SESSION_ID = re.compile(r"[0-9a-f]{32}")
"""What ``RedisSessionStore.create_session`` makes (a UUID4 in hex): nothing else names a session."""


def check_session_id(session_id: str) -> str:
    """``session_id`` if it is one the server could have made; refused otherwise, before the store sees it
    (an id is part of Redis key names, so a made-up one could name another key)."""
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidSessionId("that is not a session id: ids are the 32 lowercase hexadecimal characters "
                               "CreateSession returns")
    return session_id


@dataclass
class Limits:
    """What the service accepts (a DICOM instance's own limits are the edge's: ``serving.dicom.pixels.DicomLimits``,
    which takes ``min_image_side`` and ``max_aspect_ratio`` from here)."""

    max_image_bytes: int = 8 * 2**20
    max_image_side: int = 4096
    min_image_side: int = 16
    max_aspect_ratio: float = 8.0
    """Longest side over shortest: a sliver would shrink to nothing in the model's input."""
    max_question_chars: int = 1000
    max_metadata_entries: int = 64
    max_metadata_bytes: int = 16 * 2**10
    """Of all keys and values together (UTF-8): metadata names a study, it does not carry one."""
    max_ttl_s: int = 7 * 24 * 3600
    """The longest a session may live after its last round (``ttl_seconds``; 0 asks for the default)."""
    session_wait_s: float = 60.0
    """How long a round waits for the previous round of its session."""
    replica_retry_s: float = 10.0
    """How long a round waits for a replica to take each model step (Serve holds a step while its deployment
    has no replica) and retries steps whose replica was lost (on another, or the restarted one); then
    UNAVAILABLE."""
    model_timeout_s: float = 300.0
    """The longest a round's model steps may run once replicas hold them; then UNAVAILABLE. Minutes, not
    seconds: a burst of new images waits its turn at the encoder (0.4-1.3 s an image a replica on 2 cores)."""
    store_retry_s: float = 5.0
    """How long a round is retried while the dialogue store is unreachable (a Redis restart takes a second or
    two): safe, as a round is appended once per request id."""


async def _decode_and_hash(image: bytes, limits: Limits) -> tuple[np.ndarray, str]:
    """``decode_image`` and the bytes' SHA-256, off the event loop: a large image takes a while, and the
    loop renews the rounds' lock leases."""
    return await asyncio.to_thread(lambda: (decode_image(image, limits), hashlib.sha256(image).hexdigest()))


def check_metadata(metadata: dict[str, str], limits: Limits) -> dict[str, str]:
    """``metadata`` if within the limits; refused otherwise, saying which."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if len(metadata) > limits.max_metadata_entries or size > limits.max_metadata_bytes:
        raise InvalidMetadata(f"metadata has {len(metadata)} entries and {size} bytes; at most "
                              f"{limits.max_metadata_entries} entries and {limits.max_metadata_bytes} bytes of keys "
                              "and values are accepted")
    if any(not k for k in metadata):
        raise InvalidMetadata("metadata keys must not be empty")
    return dict(metadata)


@dataclass(frozen=True)
class RenderedSource:
    """What a session's picture was made from, when it was not sent as a picture (``serving.dicom``)."""

    sha256: str
    """SHA-256 of the bytes the client sent or named."""
    size: tuple[int, int]
    """(height, width) of the picture."""
    picture_sha256: str
    """SHA-256 of the picture's bytes (what the store names it by)."""
    dicom: DicomSource | None = None
    dicom_header: bytes = b""
    """The DICOM header without pixel data (Part-10): it names the patient, so it lives and dies with the session."""


class Pipeline(Protocol):
    """The model's three steps, wherever they run.

    Each step raises ``StepUnavailable`` when no replica takes it in time or its replica is lost; a step a
    replica holds runs as long as it takes.
    """

    async def encode(self, image_key: str, image: bytes | None = None) -> Encoding:
        """The encoding of the image stored as ``image_key`` (``serving.store.content_key``), from a cache or
        computed; without ``image`` the step reads a missing image from the store itself."""

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        """The language step of the next round."""

    async def decode(self, request: MaskRequest) -> DecodedMask:
        """The mask of one [SEG] vector."""


def looks_like_dicom_without_preamble(data: bytes) -> bool:
    """Whether ``data`` starts as a DICOM data set does without its Part-10 header: 'DICM' at the very start, or
    a first element of group 0002 (file meta) or 0008 (identification), little endian, with an explicit VR."""
    if data[:4] == b"DICM":
        return True
    return data[:2] in (b"\x02\x00", b"\x08\x00") and data[4:6].isalpha() and data[4:6].isupper()


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """Image bytes -> uint8 (H, W, 3); refuses what the service does not accept, saying why."""
    if not data:
        raise InvalidImage(f"the image is empty; send {ACCEPTED_IMAGES}")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; at most {limits.max_image_bytes} are accepted")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        fmt = image.format
        if fmt not in ACCEPTED_FORMATS:
            raise InvalidImage(f"images must be {ACCEPTED_IMAGES}; got {fmt}")
        if max(image.size) > limits.max_image_side:
            raise ImageTooLarge(f"the image is {image.size[0]}x{image.size[1]}; sides up to "
                                f"{limits.max_image_side} pixels are accepted")
        if min(image.size) < limits.min_image_side or max(image.size) > limits.max_aspect_ratio * min(image.size):
            raise InvalidImage(f"the image is {image.size[0]}x{image.size[1]}; sides of at least "
                               f"{limits.min_image_side} pixels and at most {limits.max_aspect_ratio:g} times "
                               "longer than wide are accepted")
        image.load()
    except Image.DecompressionBombError as e:  # PIL's own pixel limit, met before our side check
        raise ImageTooLarge(f"the image is over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; sides up to "
                            f"{limits.max_image_side} pixels are accepted") from e
    except UnidentifiedImageError as e:
        if looks_like_dicom_without_preamble(data):
            raise InvalidImage("the bytes look like a DICOM data set without its Part-10 header (the 128-byte "
                               "preamble and 'DICM'); DICOM is accepted as a Part-10 file: send the file as a "
                               "PACS or pydicom's dcmwrite writes it") from e
        raise InvalidImage(f"the bytes are not an image of a known format; send {ACCEPTED_IMAGES}") from e
    except OSError as e:  # PIL's message names the damage, never a path or an object (we pass it bytes)
        raise InvalidImage(f"the image bytes could not be decoded ({e}); send {ACCEPTED_IMAGES}") from e
    if image.mode in ("LA", "La"):  # grey with alpha: the alpha is not part of the picture
        image = image.convert("L")
    return to_uint8_rgb(np.asarray(image.convert("RGB") if image.mode in ("P", "PA", "CMYK", "YCbCr") else image))


class Dialogue:
    """Sessions and rounds over a store and a pipeline."""

    def __init__(self, store: RedisSessionStore, pipeline: Pipeline, limits: Limits | None = None):
        self.store, self.pipeline, self.limits = store, pipeline, limits or Limits()

    # -- sessions ------------------------------------------------------------------------------
    async def create_session(self, image: bytes, metadata: dict[str, str] | None = None, ttl: int = 0, *,
                             tenant: Tenant = ANONYMOUS, source: RenderedSource | None = None,
                             request_id: str = "") -> Session:
        """A new session on ``image`` (PNG, JPEG or TIFF bytes); ``source`` when an edge adapter rendered
        ``image`` from what the client sent (a DICOM instance), kept with the session.

        With a ``request_id``, a retry returns the session the first request made (the same id with another
        image is refused), and an unreachable store is retried for up to ``store_retry_s``."""
        if not 0 <= ttl <= self.limits.max_ttl_s:
            raise InvalidTTL(f"ttl_seconds is {ttl}; it must be 0 (the default) to {self.limits.max_ttl_s}")
        metadata = check_metadata(metadata or {}, self.limits)
        if source is None:
            picture, sha = await _decode_and_hash(image, self.limits)
            create = functools.partial(self.store.create_session, image, sha, picture.shape[:2])
        else:  # the edge made ``image`` and checked what it made it from against its own limits
            create = functools.partial(self.store.create_session, image, source.picture_sha256, source.size,
                                       source_sha256=source.sha256, dicom=source.dicom,
                                       dicom_header=source.dicom_header)
        attempt = functools.partial(create, metadata=metadata, ttl=ttl, tenant=tenant.name,
                                    max_sessions=tenant.max_sessions, request_id=request_id)
        if not request_id:
            return await attempt()
        return await _retrying(attempt, StoreUnavailable, self.limits.store_retry_s, None, longest_pause=0.2)

    async def get_session(self, session_id: str, *, tenant: Tenant = ANONYMOUS) -> Session:
        """The session, if it exists and belongs to ``tenant`` (another tenant's session is not found)."""
        session = await self.store.get_session(check_session_id(session_id))
        if session.tenant != tenant.name:
            raise SessionNotFound(f"session '{session_id}' does not exist or has expired; create a new one")
        return session

    async def session_image(self, session_id: str, *, tenant: Tenant = ANONYMOUS) -> tuple[bytes, str]:
        """The session's image as stored and its media type (for DICOM, the picture rendered from it)."""
        data = await self.store.image(await self.get_session(session_id, tenant=tenant))
        return data, MEDIA_TYPES[str(Image.open(io.BytesIO(data)).format)]  # stored images are PNG, JPEG or TIFF

    async def delete_session(self, session_id: str, *, tenant: Tenant = ANONYMOUS) -> bool:
        """Delete the session, its rounds, and its image and encodings unless another session uses them."""
        try:
            await self.get_session(session_id, tenant=tenant)
        except SessionNotFound:
            return False
        return await self.store.delete_session(session_id)

    # -- reading rounds (reads do not extend a session's life: only a new round does) ---------------
    async def get_round(self, session_id: str, number: int, *, tenant: Tenant = ANONYMOUS) -> Round:
        """Round ``number`` (1-based) of the session."""
        await self.get_session(session_id, tenant=tenant)
        return await self.store.round(session_id, number)

    async def list_rounds(self, session_id: str, *, tenant: Tenant = ANONYMOUS) -> list[Round]:
        await self.get_session(session_id, tenant=tenant)  # an unknown session is an error, not an empty list
        return await self.store.rounds(session_id)

    # -- a new round ---------------------------------------------------------------------------
    def _check_question(self, question: str) -> str:
        question = normalize_question(question)
        if len(question) > self.limits.max_question_chars:
            raise QuestionError(f"the question is {len(question)} characters; at most "
                                f"{self.limits.max_question_chars} are accepted")
        return question

    async def run_round(self, session_id: str, question: str, reference_round: int = 0, request_id: str = "",
                        on_answer=None, deadline: float | None = None, *, tenant: Tenant = ANONYMOUS) -> Round:
        """Compute and append the session's next round. ``reference_round`` is a 1-based round number
        (0: resolve from the question); ``on_answer(text)`` is awaited once the answer text exists; a
        round finished after ``deadline`` (``time.monotonic()``) is not appended: its caller has gone.

        With a ``request_id``, a round that met an unreachable store is run again for up to
        ``store_retry_s`` (never past ``deadline``): if its append did land, the retry finds it."""
        on_answer = _once(on_answer)  # a retried round streams its answer once
        attempt = functools.partial(self._run_round, session_id, question, reference_round, request_id, on_answer,
                                    deadline, tenant)
        if not request_id:
            return await attempt()
        # short pauses: Redis is back within a second or two, and the round should follow it at once
        return await _retrying(attempt, StoreUnavailable, self.limits.store_retry_s, deadline, longest_pause=0.2)

    async def _run_round(self, session_id: str, question: str, reference_round: int, request_id: str, on_answer,
                         deadline: float | None, tenant: Tenant) -> Round:
        await self.get_session(session_id, tenant=tenant)  # before find_request: it would show another's round
        question = self._check_question(question)
        done = await self.store.find_request(session_id, request_id)
        if done is not None:
            return _same_request(done, question, reference_round)
        async with self.store.lock(session_id, wait=self.limits.session_wait_s):
            done = await self.store.find_request(session_id, request_id)
            if done is not None:
                return _same_request(done, question, reference_round)
            session = await self.get_session(session_id, tenant=tenant)
            history = await self.store.rounds(session_id)
            reference = _reference_round(question, reference_round, len(history))
            _check_has_mask(history, reference)
            record = await self._retrying(deadline, lambda: self._compute(
                session.image_key, None, history, question, reference, on_answer, session_id=session_id))
            record.request_id = request_id
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlinePassed("the deadline passed before the round finished; nothing was appended")
            return await self.store.append_round(session, record)

    async def segment(self, image: bytes, question: str, *, tenant: Tenant = ANONYMOUS,
                      rendered: tuple[str, tuple[int, int]] | None = None) -> Round:
        """A single stateless round on ``image``; ``rendered`` (its SHA-256 and size) when an edge adapter made
        ``image`` and checked what it made it from."""
        question = self._check_question(question)
        sha = rendered[0] if rendered else (await _decode_and_hash(image, self.limits))[1]
        reference = _reference_round(question, 0, 0)
        image_key = content_key(sha, tenant.name)
        record = await self._retrying(None, lambda: self._compute(image_key, image, [], question, reference, None))
        record.number = 1
        return record

    async def _retrying(self, deadline: float | None, compute):
        """``await compute()``, again while a model step is unavailable (its replica lost, or none took it in
        time; nothing is applied before the append, so a retry is safe), for up to ``replica_retry_s`` after the
        first loss and never past ``deadline``. A round the steps' replicas hold runs until it ends, however
        long the queue before it, for up to ``model_timeout_s``; past that the round is UNAVAILABLE, which a
        client retries."""
        give_up = time.monotonic() + self.limits.model_timeout_s

        async def attempt():
            try:
                async with asyncio.timeout_at(give_up) as waited:  # the loop's clock is time.monotonic
                    return await compute()
            except TimeoutError:
                if waited.expired():
                    raise StepUnavailable(f"the model's steps ran past {self.limits.model_timeout_s:.0f} s") \
                        from None
                raise

        try:
            try:
                return await attempt()
            except StepUnavailable:  # the retry budget starts at the loss: the try before may have queued long
                return await _retrying(attempt, StepUnavailable, self.limits.replica_retry_s, deadline)
        except StepUnavailable as e:
            raise StepUnavailable(f"{e}; nothing was appended: retry with the same request_id") from None

    async def _compute(self, image_key: str, image: bytes | None, history: list[Round], question: str,
                       reference_round: int | None, on_answer, *, session_id: str | None = None) -> Round:
        """One round on the image stored as ``image_key`` (without ``image``, the encoder reads it from the store
        if it must)."""
        start = time.perf_counter()
        encoding = await self.pipeline.encode(image_key, image)
        encoded = time.perf_counter()
        referenced = b"" if reference_round is None else history[round_index(reference_round)].mask_png
        turn = await self.pipeline.reason(ReasonRequest(
            session_id=session_id, encoding=encoding, question=question, reference_round=reference_round,
            history=[r.prior() for r in history], reference_mask_png=referenced))
        reasoned = time.perf_counter()
        if on_answer is not None:
            await on_answer(turn.answer)
        mask, answer = None, turn.answer
        if turn.seg_vector is not None:
            mask = await self.pipeline.decode(MaskRequest(encoding=encoding, seg_vector=turn.seg_vector))
            if mask.box is None:  # an empty mask: the round found nothing, and says so
                mask, answer = None, NOTHING_FOUND
        end = time.perf_counter()
        timings = RoundTimings(encode_ms=1e3 * (encoded - start), reason_ms=1e3 * (reasoned - encoded),
                               decode_ms=1e3 * (end - reasoned), total_ms=1e3 * (end - start),
                               encoder_cache_hit=encoding.cache_hit)
        return Round(number=len(history) + 1, question=question, answer=answer, answer_ids=turn.answer_ids,
                     reference_round=turn.reference_round, mask_png=mask.mask_png if mask else b"",
                     box=mask.box if mask else None, quality=mask.quality if mask else None,
                     corrected=mask.corrected if mask else False, has_mask=mask is not None,
                     seg_vector=turn.seg_vector, timings=timings, created=time.time(),
                     served_by={"reasoner": turn.replica})


async def _retrying(attempt, kind: type[Exception], budget_s: float, deadline: float | None, *,
                    longest_pause: float = 1.0):
    """``await attempt()``, again with backoff (0.1 s, doubling to ``longest_pause``) while it raises ``kind``, for
    up to ``budget_s`` and never past ``deadline`` (``time.monotonic()``); then the last ``kind`` error."""
    return await retry_async(attempt, lambda e: isinstance(e, kind),
                             Backoff(first_s=0.1, longest_s=longest_pause, budget_s=budget_s), deadline=deadline)


def _once(callback):
    """``callback`` that runs on its first call only (None stays None)."""
    if callback is None:
        return None
    called = False

    async def once(*args):
        nonlocal called
        if not called:
            called = True
            await callback(*args)

    return once


def _same_request(done: Round, question: str, reference_round: int) -> Round:
    """The round a retried request made, if the retry asks the same; a request id reused for another
    question (or another explicit reference) is refused, as payment APIs refuse reused idempotency keys."""
    if done.question != question or (reference_round and reference_round != done.reference_round):
        raise RequestIdReused(f"request_id '{done.request_id}' already made round {done.number} from a different "
                              "request; send a new request_id for a new round")
    return done


def _reference_round(question: str, reference_round: int, rounds_so_far: int) -> int | None:
    """The 1-based round a new round refers to: ``reference_round`` when given (checked), else what the
    (normalised) question says; None when it refers to none. The one place a round's reference is resolved:
    the model steps take it as it is."""
    given = round_index(reference_round) if reference_round else None
    return round_number(round_reference(question, rounds_so_far, given))


def _check_has_mask(history: list[Round], reference: int | None) -> None:
    """A round can only refer to an earlier round that has a mask (its crop and box are the reference)."""
    referred = None if reference is None else history[round_index(reference)]
    if referred is not None and (not referred.has_mask or referred.box is None):  # None: an empty mask stored
        raise ReferenceRoundError(f"round {reference} has no mask (it found nothing in the image), so a later round "
                                  "cannot refer to it; refer to a round with a mask by its number")
