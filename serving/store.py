"""Dialogue state in Redis: sessions, their rounds and image bytes, so any replica can serve any round.

Schema (``mr`` is the key prefix; session keys carry the session's expiry, refreshed on use):

    mr:image:{sha256}          string  the uploaded image bytes, stored once per content; its expiry is
                                       extended, never shortened, by every session that uses it
    mr:session:{id}            hash    image_sha256, width, height, created, expires, ttl, version,
                                       metadata (JSON); version = number of rounds appended
    mr:session:{id}:rounds     list    one JSON document per round, oldest first (number = position + 1):
                                       question, answer, answer_ids, reference_round (1-based or null),
                                       mask (PNG, base64), box, quality, corrected, has_mask,
                                       seg_vector (float32, base64: lets a later round re-judge it),
                                       request_id, timings, created, served_by
    mr:session:{id}:requests   hash    request_id -> round number (a retried request appends once)
    mr:session:{id}:lock       string  token of the worker computing this session's next round
    mr:encoding:{model}:{sha}  string  the image encoder's shared tier: one model's encoding of one image
                                       (``serving.steps.EncodedImage``), with its own expiry

Rounds of one session are serialised by the lock and appended by a script that checks the version
the round was computed from, so two rounds never interleave and none is lost. The front uses the
asyncio ``RedisSessionStore``; the model steps read what they lack (an image to encode, the rounds of
a dialogue to rebuild) through the blocking ``StoreReader``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
import redis
import redis.asyncio as aioredis

from serving.messages import Round, RoundTimings, Session

log = logging.getLogger(__name__)

PREFIX = "mr"
DEFAULT_TTL = 3600


class SessionNotFound(LookupError):
    """No such session, or it expired."""


class RoundNotFound(LookupError):
    """The session has no round with that number."""


class StoreUnavailable(ConnectionError):
    """Redis cannot be reached."""


class Conflict(RuntimeError):
    """The session changed while a round was being computed from it."""


class SessionBusy(RuntimeError):
    """Another round of the same session held the session's lock for longer than a round may wait."""


def key(*parts: str) -> str:
    """The Redis key of ``parts`` under the schema's prefix."""
    return ":".join((PREFIX, *parts))


def image_key(sha256: str) -> str:
    return key("image", sha256)


def rounds_key(session_id: str) -> str:
    return key("session", session_id, "rounds")


def encoding_key(model: str, sha256: str) -> str:
    return key("encoding", model, sha256)


def round_to_json(record: Round) -> str:
    d = asdict(record)
    d["mask_png"] = base64.b64encode(record.mask_png).decode()
    if record.seg_vector is not None:
        d["seg_vector"] = base64.b64encode(np.asarray(record.seg_vector, np.float32).tobytes()).decode()
    return json.dumps(d)


def round_from_json(text: str | bytes) -> Round:
    d = json.loads(text)
    if "index" in d:  # a round stored before rounds were numbered by name (index 1-based, reference 0-based)
        d["number"], d["has_mask"] = d.pop("index"), d.pop("has_seg")
        reference = d.pop("reference")
        d["reference_round"] = None if reference is None else reference + 1
    d["mask_png"] = base64.b64decode(d["mask_png"])
    if d["seg_vector"] is not None:
        d["seg_vector"] = np.frombuffer(base64.b64decode(d["seg_vector"]), np.float32).tolist()
    d["box"] = tuple(d["box"]) if d["box"] is not None else None
    d["timings"] = RoundTimings(**d["timings"])
    return Round(**d)


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


def _unavailable(cause: BaseException) -> StoreUnavailable:
    """The error for a Redis that cannot be reached. Its message goes to clients, so it names no host,
    port or credentials (a Redis URL can hold a password); the log gets the kind of failure."""
    log.warning("the dialogue store is unreachable (%s)", type(cause).__name__)
    return StoreUnavailable("the dialogue store is unreachable; nothing was changed, retry shortly")


def _guard(method):
    """Turn Redis connection failures into ``StoreUnavailable`` with a clear message."""

    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
            raise _unavailable(e) from e

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class RedisSessionStore:
    """Sessions and rounds in Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""

    def __init__(self, url: str, *, default_ttl: int = DEFAULT_TTL, lock_timeout: float = 120.0):
        self.url, self.default_ttl, self.lock_timeout = url, default_ttl, lock_timeout
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                          retry_on_timeout=False)
        self._append = self.redis.register_script(_APPEND)
        self._release = self.redis.register_script(_RELEASE)
        self._touch_image = self.redis.register_script(_TOUCH_IMAGE)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- images and sessions -------------------------------------------------------------------
    @_guard
    async def create_session(self, image: bytes, sha256: str, size: tuple[int, int], *,
                             metadata: dict[str, str] | None = None, ttl: int = 0) -> Session:
        ttl = ttl or self.default_ttl
        now = time.time()
        record = Session(uuid.uuid4().hex, sha256, size[1], size[0], now, now + ttl, ttl, 0,
                               dict(metadata or {}))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(image_key(sha256), image, ex=ttl, nx=True)
            await self._touch_image(keys=[image_key(sha256)], args=[ttl], client=pipe)
            pipe.hset(key("session", record.session_id), mapping={
                "image_sha256": sha256, "width": record.width, "height": record.height, "created": now,
                "expires": record.expires, "ttl": ttl, "version": 0, "metadata": json.dumps(record.metadata)})
            pipe.expire(key("session", record.session_id), ttl)
            await pipe.execute()
        return record

    @_guard
    async def get_session(self, session_id: str) -> Session:
        h = await self.redis.hgetall(key("session", session_id))
        if not h:
            raise SessionNotFound(f"session '{session_id}' does not exist or has expired; create a new one")
        h = {k.decode(): v.decode() for k, v in h.items()}
        return Session(session_id, h["image_sha256"], int(h["width"]), int(h["height"]), float(h["created"]),
                             float(h["expires"]), int(h["ttl"]), int(h["version"]), json.loads(h["metadata"]))

    @_guard
    async def delete_session(self, session_id: str) -> bool:
        keys = [key("session", session_id, part) for part in ("rounds", "requests", "lock")]
        return bool(await self.redis.delete(key("session", session_id), *keys))

    # -- rounds --------------------------------------------------------------------------------
    @_guard
    async def rounds(self, session_id: str) -> list[Round]:
        return [round_from_json(r) for r in await self.redis.lrange(rounds_key(session_id), 0, -1)]

    @_guard
    async def round(self, session_id: str, number: int) -> Round:
        """The session's round ``number`` (1-based)."""
        if number >= 1:
            raw = await self.redis.lindex(rounds_key(session_id), number - 1)
            if raw is not None:
                return round_from_json(raw)
        session = await self.get_session(session_id)
        have = f"rounds 1..{session.round_count}" if session.round_count else "no rounds yet"
        raise RoundNotFound(f"session '{session_id}' has {have}; there is no round {number}")

    @_guard
    async def find_request(self, session_id: str, request_id: str) -> Round | None:
        """The round a request id already produced, if any."""
        if not request_id:
            return None
        index = await self.redis.hget(key("session", session_id, "requests"), request_id)
        return None if index is None else await self.round(session_id, int(index))

    @_guard
    async def append_round(self, session: Session, record: Round) -> Round:
        """Append ``record`` as round ``session.round_count + 1`` if no other round got in since
        ``session`` was read (else ``Conflict``); a repeated request id returns the round it produced first."""
        record.number = session.round_count + 1
        sid = session.session_id
        keys = [key("session", sid), rounds_key(sid), key("session", sid, "requests")]
        status, value = await self._append(keys=keys, args=[session.round_count, record.request_id,
                                                            round_to_json(record), session.ttl, time.time()])
        if status == -1:
            raise SessionNotFound(f"session '{sid}' was deleted or expired while the round was computed")
        if status == -2:
            return await self.round(sid, int(value))
        if status == -3:
            raise Conflict(f"session '{sid}' moved from {session.round_count} rounds to {value}")
        await self._touch_image(keys=[image_key(session.image_sha256)], args=[session.ttl])
        return record

    # -- serialising a session's rounds --------------------------------------------------------
    @asynccontextmanager
    async def lock(self, session_id: str, *, wait: float | None = None):
        """Hold the session's round lock, waiting up to ``wait`` seconds for it (then ``SessionBusy``)."""
        lock, token = key("session", session_id, "lock"), secrets.token_hex(8)
        deadline = time.monotonic() + (self.lock_timeout if wait is None else wait)
        try:
            while not await self.redis.set(lock, token, nx=True, px=int(self.lock_timeout * 1000)):
                if time.monotonic() > deadline:
                    raise SessionBusy(f"session '{session_id}' is busy with another round; retry later")
                await asyncio.sleep(0.01)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
            raise _unavailable(e) from e
        try:
            yield
        finally:
            # shielded: a round cancelled twice (its deadline, then gRPC's own) must still free the session,
            # or the next round waits out the lock's expiry; if Redis is gone, the lock expires on its own
            with contextlib.suppress(aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                await asyncio.shield(self._release(keys=[lock], args=[token]))


def _guard_blocking(method):
    """``_guard`` for the blocking client."""

    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise _unavailable(e) from e

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class StoreReader:
    """Blocking reads (and the encoding tier's writes) for the model steps, which run in worker threads."""

    def __init__(self, url: str):
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    @_guard_blocking
    def image(self, sha256: str) -> bytes:
        data = self.redis.get(image_key(sha256))
        if data is None:
            raise SessionNotFound(f"the session's image ({sha256[:12]}...) has expired; create a new session")
        return data

    @_guard_blocking
    def rounds(self, session_id: str) -> list[Round]:
        return [round_from_json(r) for r in self.redis.lrange(rounds_key(session_id), 0, -1)]

    @_guard_blocking
    def encoding(self, model: str, sha256: str) -> bytes | None:
        return self.redis.get(encoding_key(model, sha256))

    @_guard_blocking
    def put_encoding(self, model: str, sha256: str, data: bytes, ttl: int) -> None:
        self.redis.set(encoding_key(model, sha256), data, ex=ttl)
