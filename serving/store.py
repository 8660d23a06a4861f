"""Dialogue state in Redis: sessions, their rounds and image bytes, so any replica can serve any round.

Schema (``mr`` is the key prefix; a session's keys share its expiry, which its rounds extend and reads
do not; an image and what is derived from it live exactly as long as the last session that uses it):

    mr:session:{id}            hash    image_sha256, image_key, width, height, created, expires, ttl, version, tenant,
                                       metadata (JSON), create_key (when its CreateSession had a request id);
                                       version = number of rounds appended
    mr:session:{id}:rounds     list    one JSON document per round, oldest first (number = position + 1):
                                       question, answer, answer_ids, reference_round (1-based or null),
                                       mask (PNG, base64), box, quality, corrected, has_mask,
                                       seg_vector (float32, base64: lets a later round re-judge it),
                                       request_id, timings, created, served_by
    mr:session:{id}:requests   hash    request_id -> round number (a retried request appends once)
    mr:session:{id}:lock       string  token of the worker computing this session's next round: a short
                                       lease, renewed while the round computes, so a lock whose holder is
                                       gone (or that a Redis restart brought back) frees itself within it
    mr:session:{id}:dicom      string  a DICOM source's header without its pixel data (Part-10 bytes; it names
                                       the patient), for the session's DICOM Segmentation; the hash's ``dicom``
                                       field (JSON) says what the source is and how its picture was rendered
    mr:image:{key}             string  the uploaded image bytes (for DICOM, the rendered picture as PNG),
                                       stored once per content and tenant: the key is the SHA-256 of the
                                       tenant and the image's (``content_key``), so one tenant cannot learn
                                       from a cache hit that another has the same image
    mr:image:{key}:sessions    set     ids of the sessions using the image (its reference count)
    mr:image:{key}:encodings   set     the encoding keys derived from the image
    mr:encoding:{model}:{key}  string  the image encoder's shared tier: one model's encoding of one image
                                       (``serving.replicas.steps.EncodedImage``); only for stored images
    mr:tenant:{name}:sessions  zset    session id -> expiry (unix time): the tenant's live sessions
    mr:tenant:{name}:create:{request_id}
                               string  id of the session that CreateSession request made (a retried request
                                       returns it, makes none); lives and leaves with that session

The image, its ``sessions`` set and its encodings expire with the longest-lived session using them, and
``DeleteSession`` of the last one deletes them at once. The scripts build the derived key names from
``mr:`` themselves, so the store needs one Redis, not a cluster.

Rounds of one session are serialised by the lock and appended by a script that checks the version
the round was computed from, so two rounds never interleave and none is lost. The front uses the
asyncio ``RedisSessionStore``; the model steps read what they lack (an image to encode, the rounds of
a dialogue to rebuild) through the blocking ``StoreReader``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import cast

import numpy as np
import redis
import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from serving.errors import RequestIdReused
from serving.messages import DicomSource, Round, RoundTimings, Session

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


class TooManySessions(RuntimeError):
    """The tenant already has as many live sessions as it may."""


def key(*parts: str) -> str:
    """The Redis key of ``parts`` under the schema's prefix."""
    return ":".join((PREFIX, *parts))


def content_key(image_sha256: str, tenant: str) -> str:
    """The name an image is stored and encoded under: its SHA-256 without tenants, else one per tenant."""
    return hashlib.sha256(f"{tenant}\0{image_sha256}".encode()).hexdigest() if tenant else image_sha256


def image_bytes_key(image_key: str) -> str:
    """The Redis key of the image bytes stored as ``image_key`` (its ``content_key``)."""
    return key("image", image_key)


def rounds_key(session_id: str) -> str:
    return key("session", session_id, "rounds")


def encoding_key(model: str, image_key: str) -> str:
    return key("encoding", model, image_key)


SESSION_PARTS = ("rounds", "requests", "lock", "dicom")


def session_keys(session_id: str) -> list[str]:
    """The session's hash, rounds, requests, lock and DICOM header keys, in that order."""
    return [key("session", session_id), *(key("session", session_id, part) for part in SESSION_PARTS)]


def image_keys(image_key: str) -> list[str]:
    """The image's bytes, sessions set and encodings set keys, in that order."""
    return [image_bytes_key(image_key), key("image", image_key, "sessions"), key("image", image_key, "encodings")]


def tenant_key(tenant: str) -> str:
    return key("tenant", tenant, "sessions")


def create_key(tenant: str, request_id: str) -> str:
    """The key that remembers which session a CreateSession ``request_id`` of ``tenant`` made."""
    return key("tenant", tenant, "create", request_id)


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


# KEYS: session, image, image sessions, tenant sessions, DICOM header, create request; ARGV: image bytes, session id,
# ttl, now, session fields (JSON), max sessions of the tenant (0: no limit), DICOM header ('' without one), request
# id ('' without one), image key. Returns {1, id} made, {2, id} the request made it before, {3, id} the request made
# it before on another image, {0, ''} the tenant has its most sessions.
_CREATE = """
if ARGV[8] ~= '' then
  local made = redis.call('GET', KEYS[6])
  if made then
    local named = redis.call('HGET', 'mr:session:' .. made, 'image_key')
    if named == ARGV[9] then return {2, made} end
    if named then return {3, made} end
  end
end
local ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if tonumber(ARGV[6]) > 0 and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then return {0, ''} end
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('SADD', KEYS[3], ARGV[2])
for _, k in ipairs({KEYS[2], KEYS[3]}) do
  local t = redis.call('TTL', k)
  if t < ttl then redis.call('EXPIRE', k, ttl) end
end
for field, value in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', KEYS[1], field, value) end
redis.call('EXPIRE', KEYS[1], ttl)
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7], 'EX', ttl) end
redis.call('ZADD', KEYS[4], now + ttl, ARGV[2])
if redis.call('TTL', KEYS[4]) < ttl then redis.call('EXPIRE', KEYS[4], ttl) end
if ARGV[8] ~= '' then redis.call('SET', KEYS[6], ARGV[2], 'EX', ttl) end
return {1, ARGV[2]}
"""

# KEYS: session, rounds, requests, DICOM header; ARGV: expected version, request_id, round JSON, ttl seconds, now
_APPEND = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {-1, 0} end
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[3], ARGV[2])
  if done then return {-2, tonumber(done)} end
end
if tonumber(version) ~= tonumber(ARGV[1]) then return {-3, tonumber(version)} end
local ttl, expires = tonumber(ARGV[4]), tonumber(ARGV[5]) + tonumber(ARGV[4])
local n = redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'version', n, 'expires', expires)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], n) end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
local sid = string.sub(KEYS[1], string.len('mr:session:') + 1)
local sha, tenant, named, made = unpack(redis.call('HMGET', KEYS[1], 'image_sha256', 'tenant', 'image_key',
                                                  'create_key'))
sha = named or sha
if made then redis.call('EXPIRE', made, ttl) end
for _, k in ipairs({'mr:image:' .. sha, 'mr:image:' .. sha .. ':sessions'}) do
  local t = redis.call('TTL', k)
  if t >= 0 and t < ttl then redis.call('EXPIRE', k, ttl) end
end
local tk = 'mr:tenant:' .. (tenant or '') .. ':sessions'
redis.call('ZADD', tk, 'XX', expires, sid)
if redis.call('TTL', tk) < ttl then redis.call('EXPIRE', tk, ttl) end
return {n, n}
"""

# KEYS: session, rounds, requests, lock, DICOM header; ARGV: session id. Deletes the session, and the image with its
# encodings when no live session uses it any more (else their expiry shrinks to the longest remaining).
_DELETE = """
local sha, tenant, named, made = unpack(redis.call('HMGET', KEYS[1], 'image_sha256', 'tenant', 'image_key',
                                                  'create_key'))
sha = named or sha
if made and redis.call('GET', made) == ARGV[1] then redis.call('DEL', made) end
local existed = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if not sha then return existed end
redis.call('ZREM', 'mr:tenant:' .. (tenant or '') .. ':sessions', ARGV[1])
local image, users, encs = 'mr:image:' .. sha, 'mr:image:' .. sha .. ':sessions', 'mr:image:' .. sha .. ':encodings'
redis.call('SREM', users, ARGV[1])
local longest = -1
for _, sid in ipairs(redis.call('SMEMBERS', users)) do
  local t = redis.call('PTTL', 'mr:session:' .. sid)
  if t < 0 then redis.call('SREM', users, sid) elseif t > longest then longest = t end
end
local derived = redis.call('SMEMBERS', encs)
table.insert(derived, image)
table.insert(derived, users)
table.insert(derived, encs)
for _, k in ipairs(derived) do
  if longest < 0 then redis.call('DEL', k)
  elseif redis.call('PTTL', k) > longest then redis.call('PEXPIRE', k, longest) end
end
return existed
"""

# KEYS: image, image encodings, encoding; ARGV: encoding bytes, longest ttl. Stored only for a stored
# image, and never beyond it: an encoding holds the picture.
_PUT_ENCODING = """
local t = math.min(redis.call('PTTL', KEYS[1]), tonumber(ARGV[2]) * 1000)
if t <= 0 then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', t)
redis.call('SADD', KEYS[2], KEYS[3])
if redis.call('PTTL', KEYS[2]) < t then redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1])) end
return 1
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
    """Sessions and rounds in Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    ``lock_lease`` is how long a round's lock lives unless renewed (the holder renews it every third of
    that): the longest a session stays locked after its holder vanished or Redis restarted.
    """

    def __init__(self, url: str, *, default_ttl: int = DEFAULT_TTL, lock_lease: float = 2.0):
        self.url, self.default_ttl, self.lock_lease = url, default_ttl, lock_lease
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                             retry_on_timeout=False)
        self._create = self.redis.register_script(_CREATE)
        self._append = self.redis.register_script(_APPEND)
        self._delete = self.redis.register_script(_DELETE)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- images and sessions -------------------------------------------------------------------
    @_guard
    async def create_session(self, image: bytes, sha256: str, size: tuple[int, int], *,
                             metadata: dict[str, str] | None = None, ttl: int = 0, tenant: str = "",
                             max_sessions: int = 0, source_sha256: str = "", dicom: DicomSource | None = None,
                             dicom_header: bytes = b"", request_id: str = "") -> Session:
        """A new session of ``tenant`` on ``image`` (stored once per content, ``sha256`` its SHA-256);
        ``TooManySessions`` when the tenant already has ``max_sessions`` live ones (0: no limit).
        ``source_sha256`` is what the client sent when ``image`` was made from it (a DICOM instance, with
        its ``dicom`` description and header).

        With a ``request_id``, the same id again (a retry after a lost reply) returns the session it made
        while that session lives, and makes none; the id sent again with another image is ``RequestIdReused``."""
        ttl = ttl or self.default_ttl
        now = time.time()
        record = Session(session_id=uuid.uuid4().hex, image_sha256=source_sha256 or sha256, width=size[1],
                         height=size[0], created=now, expires=now + ttl, ttl=ttl, round_count=0,
                         metadata=dict(metadata or {}), tenant=tenant, image_key=content_key(sha256, tenant),
                         dicom=dicom)
        made_by = create_key(tenant, request_id)
        fields = {"image_sha256": record.image_sha256, "image_key": record.image_key, "width": record.width,
                  "height": record.height, "created": now, "expires": record.expires, "ttl": ttl, "version": 0,
                  "tenant": tenant, "metadata": json.dumps(record.metadata)}
        if dicom is not None:
            fields["dicom"] = json.dumps(asdict(dicom))
        if request_id:
            fields["create_key"] = made_by
        encoded = json.dumps({k: str(v) for k, v in fields.items()})  # as Python writes them, not Lua
        sid = record.session_id
        status, made = await self._create(
            keys=[key("session", sid), *image_keys(record.image_key)[:2], tenant_key(tenant), session_keys(sid)[4],
                  made_by],
            args=[image, sid, ttl, now, encoded, max_sessions, dicom_header, request_id, record.image_key])
        if status == 0:
            raise TooManySessions(f"this tenant already has {max_sessions} live sessions, the most it may have; "
                                  "delete sessions it no longer needs")
        if status == 2:
            return await self.get_session(made.decode())
        if status == 3:
            raise RequestIdReused(f"request_id '{request_id}' already made session {made.decode()} on another "
                                  "image; send a new request_id for a new session")
        return record

    @_guard
    async def get_session(self, session_id: str) -> Session:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(key("session", session_id)))  # no decode_responses
        if not raw:
            raise SessionNotFound(f"session '{session_id}' does not exist or has expired; create a new one")
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return Session(session_id=session_id, image_sha256=h["image_sha256"], width=int(h["width"]),
                       height=int(h["height"]), created=float(h["created"]), expires=float(h["expires"]),
                       ttl=int(h["ttl"]), round_count=int(h["version"]), metadata=json.loads(h["metadata"]),
                       tenant=h.get("tenant", ""), image_key=h.get("image_key", h["image_sha256"]),
                       dicom=DicomSource(**json.loads(h["dicom"])) if "dicom" in h else None)

    @_guard
    async def dicom_header(self, session_id: str) -> bytes:
        """The session's DICOM header (Part-10 bytes without pixel data); ``SessionNotFound`` without one."""
        header = cast(bytes | None, await self.redis.get(session_keys(session_id)[4]))
        if header is None:
            raise SessionNotFound(f"session '{session_id}' has no DICOM source, or has expired")
        return header

    @_guard
    async def image(self, session: Session) -> bytes:
        """The session's image bytes (a reader's copy: reading does not extend its life)."""
        data = cast(bytes | None, await self.redis.get(image_bytes_key(session.image_key)))
        if data is None:
            raise SessionNotFound(f"session '{session.session_id}' has expired; create a new one")
        return data

    @_guard
    async def delete_session(self, session_id: str) -> bool:
        """Delete the session with its rounds; its image and encodings too when no other session uses them."""
        return bool(await self._delete(keys=session_keys(session_id), args=[session_id]))

    @_guard
    async def tenant_sessions(self, tenant: str) -> int:
        """How many live sessions ``tenant`` has."""
        return await self.redis.zcount(tenant_key(tenant), f"({time.time()}", "+inf")

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
        ``session`` was read (else ``Conflict``); a repeated request id returns the round it produced first.
        The session, its image and the tenant's count of it then live ``session.ttl`` from now."""
        record.number = session.round_count + 1
        sid = session.session_id
        status, value = await self._append(keys=[session_keys(sid)[i] for i in (0, 1, 2, 4)], args=[
            session.round_count, record.request_id, round_to_json(record), session.ttl, time.time()])
        if status == -1:
            raise SessionNotFound(f"session '{sid}' was deleted or expired while the round was computed")
        if status == -2:
            return await self.round(sid, int(value))
        if status == -3:
            raise Conflict(f"session '{sid}' moved from {session.round_count} rounds to {value}")
        return record

    # -- serialising a session's rounds --------------------------------------------------------
    @asynccontextmanager
    async def lock(self, session_id: str, *, wait: float = 60.0):
        """Hold the session's round lock, waiting up to ``wait`` seconds for it (then ``SessionBusy``).

        The lock is redis-py's ``Lock`` (a token set with NX and an expiry; released and extended only by its
        holder): a lease of ``lock_lease`` seconds renewed in the background while the body runs, so it cannot
        outlive its holder: not a crash, not a Redis restart that brings it back from the append-only file.
        Should a renewal come too late, the append's version check still keeps the rounds whole (the later
        round is a ``Conflict``)."""
        lock = self.redis.lock(session_keys(session_id)[3], timeout=self.lock_lease, sleep=0.01,
                               blocking_timeout=wait, thread_local=False)
        try:
            if not await lock.acquire():
                raise SessionBusy(f"session '{session_id}' is busy with another round; retry later")
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
            raise _unavailable(e) from e
        renewing = asyncio.ensure_future(self._keep_lease(lock))
        try:
            yield
        finally:
            renewing.cancel()
            # shielded: a round cancelled twice (its deadline, then gRPC's own) must still free the session,
            # or the next round waits out the lease; if Redis is gone, or the lease lapsed, it runs out on its own
            with contextlib.suppress(LockError, aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                await asyncio.shield(lock.release())

    async def _keep_lease(self, lock: Lock) -> None:
        while True:
            await asyncio.sleep(self.lock_lease / 3)
            try:
                await lock.extend(self.lock_lease, replace_ttl=True)
            except LockError:
                return  # lost (it lapsed, or Redis restarted without it): the version check guards the append
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                pass  # Redis is restarting: the next renewal may still be in time


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
        self._put_encoding = self.redis.register_script(_PUT_ENCODING)

    @_guard_blocking
    def image(self, image_key: str) -> bytes:
        data = cast(bytes | None, self.redis.get(image_bytes_key(image_key)))
        if data is None:
            raise SessionNotFound(f"the session's image ({image_key[:12]}...) has expired; create a new session")
        return data

    @_guard_blocking
    def stored_images(self, keys: list[str]) -> list[str]:
        """Those of the image ``keys`` whose image is still stored (some session still uses it)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.exists(image_bytes_key(k))
            return [k for k, found in zip(keys, pipe.execute(), strict=True) if found]

    @_guard_blocking
    def live_sessions(self, session_ids: list[str]) -> list[str]:
        """Those of ``session_ids`` not deleted or expired."""
        with self.redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.exists(key("session", session_id))
            return [s for s, found in zip(session_ids, pipe.execute(), strict=True) if found]

    @_guard_blocking
    def rounds(self, session_id: str) -> list[Round]:
        return [round_from_json(r) for r in self.redis.lrange(rounds_key(session_id), 0, -1)]

    @_guard_blocking
    def encoding(self, model: str, image_key: str) -> bytes | None:
        return cast(bytes | None, self.redis.get(encoding_key(model, image_key)))

    @_guard_blocking
    def put_encoding(self, model: str, image_key: str, data: bytes, ttl: int) -> None:
        """Share an encoding for at most ``ttl`` seconds, and only while its image is stored (the encoding
        holds the picture, so it must not outlive the image's last session; a stateless image is not shared)."""
        image, _, encodings = image_keys(image_key)
        self._put_encoding(keys=[image, encodings, encoding_key(model, image_key)], args=[data, ttl])
