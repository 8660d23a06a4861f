"""Dialogue state in Redis: sessions, their rounds and image bytes, so any replica can serve any round.

Schema (every key carries the session's expiry, refreshed on use; ``mr`` is the key prefix):

    mr:image:{sha256}          string  the uploaded image bytes, stored once per content
    mr:session:{id}            hash    image_sha256, width, height, created, expires, ttl, version,
                                       metadata (JSON); version = number of rounds appended
    mr:session:{id}:rounds     list    one JSON document per round, oldest first (index = position + 1):
                                       question, answer, answer_ids, reference (0-based or null),
                                       mask (PNG, base64), box, quality, corrected, has_seg,
                                       seg_vector (float32, base64: lets a later round re-judge it),
                                       request_id, timings, created, served_by
    mr:session:{id}:requests   hash    request_id -> round index (a retried request appends once)
    mr:session:{id}:lock       string  token of the worker computing this session's next round

Rounds of one session are serialised by the lock and appended by a script that checks the version
the round was computed from, so two rounds never interleave and none is lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import redis.asyncio as redis
from PIL import Image

from model.predictor import RoundResult

PREFIX = "mr"
DEFAULT_TTL = 3600


class SessionNotFound(LookupError):
    """No such session, or it expired."""


class RoundNotFound(LookupError):
    """The session has no round with that index."""


class StoreUnavailable(ConnectionError):
    """Redis cannot be reached."""


class Conflict(RuntimeError):
    """The session changed while a round was being computed from it."""


@dataclass
class SessionRecord:
    id: str
    image_sha256: str
    width: int
    height: int
    created: float
    expires: float
    ttl: int
    version: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class RoundRecord:
    """One stored round; ``index`` is 1-based, ``reference`` 0-based (None: no reference)."""

    index: int
    question: str
    answer: str
    answer_ids: list[int]
    reference: int | None
    mask_png: bytes
    box: tuple[int, int, int, int] | None
    quality: float | None
    corrected: bool
    has_seg: bool
    seg_vector: list[float] | None
    request_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    created: float = 0.0
    served_by: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["mask_png"] = base64.b64encode(self.mask_png).decode()
        if self.seg_vector is not None:
            d["seg_vector"] = base64.b64encode(np.asarray(self.seg_vector, np.float32).tobytes()).decode()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str | bytes) -> RoundRecord:
        d = json.loads(text)
        d["mask_png"] = base64.b64decode(d["mask_png"])
        if d["seg_vector"] is not None:
            d["seg_vector"] = np.frombuffer(base64.b64decode(d["seg_vector"]), np.float32).tolist()
        d["box"] = tuple(d["box"]) if d["box"] is not None else None
        return cls(**d)

    @property
    def mask(self) -> np.ndarray | None:
        """(H, W) bool; None for a round whose answer had no [SEG]."""
        return np.asarray(Image.open(io.BytesIO(self.mask_png))) > 0 if self.mask_png else None

    def to_result(self) -> RoundResult:
        """Back to the predictor's form (for ``MultiRoundPredictor.restore``)."""
        seg = None if self.seg_vector is None else np.asarray(self.seg_vector, np.float32)
        return RoundResult(self.index - 1, self.question, self.answer, self.mask, self.box, self.quality,
                           self.corrected, self.reference, self.has_seg, seg, list(self.answer_ids))


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) bool -> single-channel 8-bit PNG, foreground 255."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# KEYS: session, rounds, requests; ARGV: expected version, request_id, round JSON, ttl seconds, now
_APPEND = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {-1, 0} end
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[3], ARGV[2])
  if done then return {-2, tonumber(done)} end
end
if tonumber(version) ~= tonumber(ARGV[1]) then return {-3, tonumber(version)} end
local n = redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'version', n, 'expires', tonumber(ARGV[5]) + tonumber(ARGV[4]))
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], n) end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return {n, n}
"""

# KEYS: image; ARGV: ttl. Extend, never shorten: the image outlives every session using it.
_TOUCH_IMAGE = """
local t = redis.call('TTL', KEYS[1])
if t >= 0 and t < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return t
"""

# KEYS: lock; ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _guard(method):
    """Turn Redis connection failures into ``StoreUnavailable`` with a clear message."""

    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"the dialogue store (Redis at {self.url}) is unreachable: {e}") from e

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class RedisSessionStore:
    """Sessions and rounds in Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""

    def __init__(self, url: str, *, default_ttl: int = DEFAULT_TTL, lock_timeout: float = 120.0):
        self.url, self.default_ttl, self.lock_timeout = url, default_ttl, lock_timeout
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                          retry_on_timeout=False)
        self._append = self.redis.register_script(_APPEND)
        self._release = self.redis.register_script(_RELEASE)
        self._touch_image = self.redis.register_script(_TOUCH_IMAGE)

    async def close(self) -> None:
        await self.redis.aclose()

    @staticmethod
    def _key(*parts: str) -> str:
        return ":".join((PREFIX, *parts))

    # -- images and sessions -------------------------------------------------------------------
    @_guard
    async def create_session(self, image: bytes, sha256: str, size: tuple[int, int], *,
                             metadata: dict[str, str] | None = None, ttl: int = 0) -> SessionRecord:
        ttl = ttl or self.default_ttl
        now = time.time()
        record = SessionRecord(uuid.uuid4().hex, sha256, size[1], size[0], now, now + ttl, ttl, 0,
                               dict(metadata or {}))
        image_key = self._key("image", sha256)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(image_key, image, ex=ttl, nx=True)
            await self._touch_image(keys=[image_key], args=[ttl], client=pipe)
            pipe.hset(self._key("session", record.id), mapping={
                "image_sha256": sha256, "width": record.width, "height": record.height, "created": now,
                "expires": record.expires, "ttl": ttl, "version": 0, "metadata": json.dumps(record.metadata)})
            pipe.expire(self._key("session", record.id), ttl)
            await pipe.execute()
        return record

    @_guard
    async def get_session(self, session_id: str) -> SessionRecord:
        h = await self.redis.hgetall(self._key("session", session_id))
        if not h:
            raise SessionNotFound(f"session '{session_id}' does not exist or has expired; create a new one")
        h = {k.decode(): v.decode() for k, v in h.items()}
        return SessionRecord(session_id, h["image_sha256"], int(h["width"]), int(h["height"]), float(h["created"]),
                             float(h["expires"]), int(h["ttl"]), int(h["version"]), json.loads(h["metadata"]))

    @_guard
    async def image(self, sha256: str) -> bytes:
        data = await self.redis.get(self._key("image", sha256))
        if data is None:
            raise SessionNotFound(f"the session's image ({sha256[:12]}...) has expired; create a new session")
        return data

    @_guard
    async def delete_session(self, session_id: str) -> bool:
        keys = [self._key("session", session_id, part) for part in ("rounds", "requests", "lock")]
        return bool(await self.redis.delete(self._key("session", session_id), *keys))

    # -- rounds --------------------------------------------------------------------------------
    @_guard
    async def rounds(self, session_id: str) -> list[RoundRecord]:
        return [RoundRecord.from_json(r) for r in await self.redis.lrange(self._key("session", session_id, "rounds"),
                                                                         0, -1)]

    @_guard
    async def round(self, session_id: str, index: int) -> RoundRecord:
        if index >= 1:
            raw = await self.redis.lindex(self._key("session", session_id, "rounds"), index - 1)
            if raw is not None:
                return RoundRecord.from_json(raw)
        session = await self.get_session(session_id)
        raise RoundNotFound(f"session '{session_id}' has rounds 1..{session.version}; there is no round {index}")

    @_guard
    async def find_request(self, session_id: str, request_id: str) -> RoundRecord | None:
        """The round a request id already produced, if any."""
        if not request_id:
            return None
        index = await self.redis.hget(self._key("session", session_id, "requests"), request_id)
        return None if index is None else await self.round(session_id, int(index))

    @_guard
    async def append_round(self, session: SessionRecord, record: RoundRecord) -> RoundRecord:
        """Append ``record`` if the session is still at ``session.version``; a repeated request id
        returns the round it produced first. Raises ``Conflict`` if another round got in between."""
        record.index = session.version + 1
        keys = [self._key("session", session.id), self._key("session", session.id, "rounds"),
                self._key("session", session.id, "requests")]
        status, value = await self._append(keys=keys, args=[session.version, record.request_id, record.to_json(),
                                                            session.ttl, time.time()])
        if status == -1:
            raise SessionNotFound(f"session '{session.id}' was deleted or expired while the round was computed")
        if status == -2:
            return await self.round(session.id, int(value))
        if status == -3:
            raise Conflict(f"session '{session.id}' moved from version {session.version} to {value}")
        await self._touch_image(keys=[self._key("image", session.image_sha256)], args=[session.ttl])
        return record

    # -- serialising a session's rounds --------------------------------------------------------
    @asynccontextmanager
    async def lock(self, session_id: str, *, wait: float | None = None):
        """Hold the session's round lock (waiting up to ``wait`` seconds for it)."""
        key, token = self._key("session", session_id, "lock"), secrets.token_hex(8)
        deadline = time.monotonic() + (self.lock_timeout if wait is None else wait)
        try:
            while not await self.redis.set(key, token, nx=True, px=int(self.lock_timeout * 1000)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"session '{session_id}' is busy with another round; retry later")
                await asyncio.sleep(0.01)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"the dialogue store (Redis at {self.url}) is unreachable: {e}") from e
        try:
            yield
        finally:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, OSError):
                await self._release(keys=[key], args=[token])  # if Redis is gone, the lock expires on its own
