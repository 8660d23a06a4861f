"""Property tests of what the service accepts, with hypothesis: image decoding, session ids, and the whole
gRPC surface on a real server (loopback, real Redis, the in-process pipeline on the shipped tiny model).

- ``decode_image``: any bytes, mutated or truncated PNG/JPEG/TIFF of every kind, pictures of any size give a
  uint8 (H, W, 3) array or InvalidImage / ImageTooLarge with a message; pictures within the limits decode,
  sides under 16 px or over 8:1 are InvalidImage, sides over the limit ImageTooLarge.
- ``check_session_id`` accepts exactly 32 lowercase hexadecimal characters.
- Every method, sent arbitrary requests (ids, questions, indices, references, request ids, images, metadata,
  ttl), never answers INTERNAL or UNKNOWN; its error details hold no traceback, file path, Redis URL,
  host:port or pid; a refused call changes nothing in Redis, and no call changes a fixed pre-made session
  (its GetSession and ListRounds, and its keys and values in Redis).
- Raw bytes that are not a valid request (broken protobuf, invalid UTF-8 in a string field) are refused
  like any other bad request.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid

import grpc
import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.errors import ImageTooLarge, InvalidImage, InvalidSessionId
from serving.front.dialogue import Limits, check_session_id, decode_image
from tests.model.data.test_images_properties import encode, encoded_images, mutated, png_header_only

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- decode_image --------------------------------------------------------------------------------
def decoded_or_refused(data: bytes, limits: Limits | None = None):
    """The decoded picture, or the InvalidImage / ImageTooLarge it raised (with a message); nothing else."""
    try:
        picture = decode_image(data, limits or Limits())
    except (InvalidImage, ImageTooLarge) as e:
        assert str(e)
        return e
    assert picture.dtype.name == "uint8" and picture.ndim == 3 and picture.shape[2] == 3
    return picture


magic_numbers = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"\xff\xd8\xff", b"GIF89a",
                                 b"BM", b"RIFF", b"\x00\x00\x01\x00"])


@FAST
@given(st.builds(bytes.__add__, magic_numbers, st.binary(max_size=300)))
def test_any_bytes_decode_or_are_refused_with_a_message(data):
    decoded_or_refused(data)


@FAST
@given(encoded_images(max_side=48).flatmap(lambda image: mutated(image[0])))
def test_mutated_and_truncated_images_decode_or_are_refused_with_a_message(data):
    decoded_or_refused(data)


@FAST
@given(encoded_images(max_side=140))
@example(image=(encode("I;16", "TIFF", 16, 128, 0), "TIFF", "I;16", (16, 128)))
@example(image=(encode("LA", "PNG", 129, 16, 0), "PNG", "LA", (129, 16)))
def test_pictures_within_the_limits_decode_at_their_size_and_others_are_refused(image):
    data, _, _, (width, height) = image
    result = decoded_or_refused(data)
    if min(width, height) >= 16 and max(width, height) <= 8 * min(width, height):
        assert not isinstance(result, Exception), result
        assert result.shape == (height, width, 3)
    else:
        assert isinstance(result, InvalidImage) and "sides of at least 16 pixels" in str(result)


@settings(max_examples=60, deadline=None)
@given(st.integers(4097, 13_000), st.integers(16, 13_000))
@example(5000, 5000)
@example(16, 4097)
def test_sides_over_the_limit_are_too_large(width, height):
    """Pictures of up to PIL's decompression-bomb limit (2 x 89 M pixels); the next test goes past it."""
    result = decoded_or_refused(png_header_only(width, height))
    assert isinstance(result, ImageTooLarge) and "sides up to 4096 pixels" in str(result)


@settings(max_examples=20, deadline=None)
@given(st.integers(13_400, 2**31 - 1), st.integers(13_400, 2**31 - 1))
@example(100_000, 100_000)
@example(13_400, 2**31 - 1)
def test_sides_far_over_the_limit_are_too_large_too(width, height):
    result = decoded_or_refused(png_header_only(width, height))
    assert isinstance(result, ImageTooLarge) and "sides up to 4096 pixels" in str(result)


# -- session ids ---------------------------------------------------------------------------------
HEX = "0123456789abcdef"
session_ids = st.one_of(
    st.text(),
    st.text(st.sampled_from(HEX), min_size=30, max_size=34),
    st.text(st.sampled_from(HEX + "ABCDEF"), min_size=32, max_size=32),
    st.builds(lambda h, c, at: h[:at] + c + h[at + 1:], st.uuids().map(lambda u: u.hex), st.characters(),
              st.integers(0, 31)),
    st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: u.hex + "\n"), st.uuids().map(str))


@settings(max_examples=1000, deadline=None)
@given(session_ids)
@example("0" * 32)
@example("\u0660" * 32)  # Arabic-Indic zeros are digits, not hexadecimal
@example("ａ" * 32)  # fullwidth a
def test_session_ids_are_exactly_32_lowercase_hex_characters(text):
    valid = len(text) == 32 and all(c in HEX for c in text)
    try:
        assert check_session_id(text) == text and valid
    except InvalidSessionId as e:
        assert not valid and "32 lowercase hexadecimal" in str(e)


# -- the gRPC surface ----------------------------------------------------------------------------
SERVICE = "/mediround.v1.MediRound/"
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
LEAKS = {
    "a traceback": re.compile(r"Traceback|File \"|line \d+, in "),
    "a file path": re.compile(r"(?:/[\w.-]+){2,}|\w\.py\b|[A-Za-z]:\\"),
    "a Redis URL": re.compile(r"rediss?://|unix://", re.IGNORECASE),
    "a host:port": re.compile(r"\b(?:localhost|(?:\d{1,3}\.){3}\d{1,3}|\[[0-9a-f:]+\]):\d+\b", re.IGNORECASE),
    "a pid": re.compile(r"\bpid\b", re.IGNORECASE),
}
LIVE_QUESTIONS = ["Segment the liver.", "Segment its lesion.", "Segment the lesion inside the output of round 1.",
                  "Where is the spleen? Please segment it."]
SCRATCH_ROUNDS = 8
"""At most this many rounds are run on the scratch session (each runs the model)."""


class Service:
    """A gRPC server over loopback on the shared Redis, its event loop on a thread; blocking stubs for the tests."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, port = self.run(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.MediRoundStub(self.channel)
        self.redis = redis.Redis.from_url(redis_url)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _start(self):
        from model.config import SHIPPED_TINY
        from serving.front.dialogue import Dialogue
        from serving.front.server import ServerOptions, start_server
        from serving.replicas.steps import LocalPipeline
        from serving.store import RedisSessionStore

        self.store = RedisSessionStore(self.redis_url)
        pipeline = LocalPipeline(str(SHIPPED_TINY), redis_url=self.redis_url)
        return await start_server(Dialogue(self.store, pipeline), ServerOptions(address="127.0.0.1:0"))

    def close(self):
        self.channel.close()
        self.run(self.server.stop(grace=1))
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.redis.close()

    # -- what is stored ------------------------------------------------------------------------
    def value(self, name: bytes):
        kind = self.redis.type(name).decode()
        read = {"string": self.redis.get, "hash": self.redis.hgetall, "set": self.redis.smembers,
                "list": lambda k: self.redis.lrange(k, 0, -1),
                "zset": lambda k: self.redis.zrange(k, 0, -1, withscores=True)}
        return kind, read[kind](name) if kind in read else None

    def snapshot(self, pattern: str = "mr:*") -> dict:
        """Every key under ``pattern`` with its type and value (not its expiry), except ``ignored`` keys."""
        names = [k for k in self.redis.scan_iter(pattern, count=1000) if k not in self.ignored]
        return {k: self.value(k) for k in names}

    def view(self, session_id: str) -> tuple:
        """What the API shows of a session: GetSession and ListRounds with masks."""
        session = self.stub.GetSession(pb.GetSessionRequest(session_id=session_id))
        rounds = self.stub.ListRounds(pb.ListRoundsRequest(session_id=session_id, include_masks=True))
        return session.SerializeToString(deterministic=True), rounds.SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def service(redis_url):
    from model.data.mrmedseg import load
    from model.data.real import REAL_DIALOGUES, REAL_SLICES

    s = Service(redis_url)
    s.ignored = set()
    s.ignored = set(s.snapshot())  # keys other tests left in the shared Redis are not ours to watch
    s.image = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()
    fixed = s.stub.CreateSession(pb.CreateSessionRequest(image=s.image, metadata={"study": "1.2.3"}))
    s.stub.CreateRound(pb.CreateRoundRequest(session_id=fixed.id, question="Segment the liver.",
                                             request_id="fixed-round-1"))
    s.fixed = fixed.id
    s.scratch = s.stub.CreateSession(pb.CreateSessionRequest(image=s.image)).id
    s.scratch_rounds = 0
    s.fixed_view, s.fixed_keys = s.view(s.fixed), s.snapshot(f"*{s.fixed}*")
    yield s
    s.close()


def call(service: Service, method: str, request) -> tuple[grpc.StatusCode, str, object]:
    """Call ``method`` (a stream is read to its end); its status code, details and response."""
    try:
        response = getattr(service.stub, method)(request, timeout=60)
        if method == "StreamRound":
            response = list(response)
        return grpc.StatusCode.OK, "", response
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def check_details(details: str, *echoed: str) -> None:
    for text in echoed:  # what the caller sent may come back in the message; it is not a leak
        if text:
            details = details.replace(text, "<sent>")
    for what, pattern in LEAKS.items():
        assert not pattern.search(details), f"the details hold {what}: {details!r}"


def check_call(service: Service, method: str, request, *, echoed: tuple[str, ...] = (),
               changes: str | None = None) -> tuple[grpc.StatusCode, object]:
    """Call; check the status, the details, and that nothing changed in Redis but what an accepted call may
    change (keys matching ``changes``, a regular expression); the fixed session never changes."""
    before = service.snapshot()
    code, details, response = call(service, method, request)
    event(f"{method}: {code.name}")
    assert code not in NEVER, f"{method} answered {code.name}: {details!r}"
    check_details(details, *echoed)
    after = service.snapshot()
    if code is not grpc.StatusCode.OK or changes is None:
        assert after == before, f"{method} ({code.name}: {details!r}) changed what is stored"
    else:
        allowed = re.compile(changes)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert all(allowed.search(k.decode()) for k in changed), f"{method} changed {sorted(changed)}"
    assert service.snapshot(f"*{service.fixed}*") == service.fixed_keys
    assert service.view(service.fixed) == service.fixed_view
    return code, response


# Strategies of request fields.
def ids_of(service: Service, *real: str):
    """Session ids: arbitrary text, near misses of the real ones, unknown well-formed ids, and the ``real``
    ids given (the fixed session for calls that only read it, the scratch one for calls that may change it)."""
    near = st.sampled_from([service.fixed, service.scratch]).flatmap(lambda sid: st.sampled_from(
        [sid.upper(), sid + "\n", sid[:-1], sid + "0", " " + sid, sid + ":rounds", f"{sid[:8]}-{sid[8:]}", "mr:*"]))
    some = [st.sampled_from(real)] * 2 if real else []
    return st.one_of(session_ids, near, st.uuids().map(lambda u: u.hex), *some)


questions = st.one_of(st.text(max_size=60), st.sampled_from(LIVE_QUESTIONS + ["", " \n\t ", "round 99", "it"]),
                      st.text(min_size=990, max_size=1100), st.sampled_from(["x" * 1001, "Segment " * 60]))
request_ids = st.one_of(st.just(""), st.text(max_size=20), st.sampled_from(["fixed-round-1", "r1", "r2"]))
int32 = st.integers(-(2**31), 2**31 - 1)
small_or_any = st.one_of(st.integers(-2, 4), int32)
images = st.one_of(st.binary(max_size=64), encoded_images(max_side=48).flatmap(lambda image: mutated(image[0])),
                   encoded_images(min_side=16, max_side=48).map(lambda image: image[0]))
metadata = st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
                     st.dictionaries(st.text(min_size=1, max_size=4), st.just("v" * 300), min_size=60, max_size=70))
ttls = st.one_of(int32, st.sampled_from([0, 1, 3600, 7 * 24 * 3600, 7 * 24 * 3600 + 1, -1]))
GRPC = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@GRPC
@given(data=st.data())
def test_reading_and_deleting_never_fail_internally_nor_change_anything(service, data):
    sid = data.draw(ids_of(service, service.fixed))
    method, request = data.draw(st.sampled_from([
        ("GetSession", pb.GetSessionRequest(session_id=sid)),
        ("ListRounds", pb.ListRoundsRequest(session_id=sid, include_masks=data.draw(st.booleans()))),
        ("GetRound", pb.GetRoundRequest(session_id=sid, number=data.draw(small_or_any))),
        ("DeleteSession", pb.DeleteSessionRequest(session_id=sid if sid != service.fixed else sid.upper())),
    ]))
    check_call(service, method, request)


@settings(GRPC, max_examples=60)
@given(image=images, meta=metadata, ttl=ttls)
@example(image=b"", meta={}, ttl=0)
@example(image=png_header_only(100_000, 100_000), meta={}, ttl=0)
@example(image=encode("L", "PNG", 64, 64, 0), meta={"": "empty key"}, ttl=0)
@example(image=encode("L", "PNG", 64, 64, 0), meta={}, ttl=-1)
def test_create_session_refuses_cleanly_and_stores_only_a_new_session(service, image, meta, ttl):
    request = pb.CreateSessionRequest(image=image, metadata=meta, ttl_seconds=ttl)
    code, session = check_call(service, "CreateSession", request, changes=r"^mr:(image|session|tenant)")
    if code is grpc.StatusCode.OK:  # gone before its ttl (as short as 1 s) can expire it under a later check
        assert service.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session.id)).deleted


@settings(GRPC, max_examples=40)
@given(data=st.data())
def test_rounds_refused_on_the_fixed_session_change_nothing(service, data):
    """Any question with a reference past its one round, or with its round's request id: always refused,
    or (the same request again) answered with the stored round."""
    reference = data.draw(st.one_of(st.integers(2, 2**31 - 1), st.integers(-(2**31), -1)))
    request = pb.CreateRoundRequest(session_id=service.fixed, question=data.draw(questions),
                                    reference_round=reference, request_id=data.draw(request_ids))
    method = data.draw(st.sampled_from(["CreateRound", "StreamRound"]))
    check_call(service, method, request, echoed=(request.request_id,))


@settings(GRPC, max_examples=40)
@given(data=st.data())
def test_rounds_with_arbitrary_fields_never_fail_internally(service, data):
    """Arbitrary ids, questions, references and request ids; on the scratch session a valid round runs the
    model (only a few do: past SCRATCH_ROUNDS the scratch session is no longer drawn)."""
    live = service.scratch_rounds < SCRATCH_ROUNDS and data.draw(st.booleans())
    sid = service.scratch if live else data.draw(ids_of(service))
    request = pb.CreateRoundRequest(session_id=sid, question=data.draw(questions),
                                    reference_round=data.draw(small_or_any), request_id=data.draw(request_ids))
    method = data.draw(st.sampled_from(["CreateRound", "StreamRound"]))
    code, _ = check_call(service, method, request, echoed=(request.request_id,),
                         changes=rf"^mr:(session:{service.scratch}|encoding:|tenant:)")
    if code is grpc.StatusCode.OK and sid == service.scratch:
        service.scratch_rounds += 1


@settings(GRPC, max_examples=6)
@given(data=st.data())
def test_rounds_on_a_live_session_append_one_round_or_change_nothing(service, data):
    """Questions that mostly make a round (each runs the model), with arbitrary request ids and references."""
    request = pb.CreateRoundRequest(session_id=service.scratch,
                                    question=data.draw(st.sampled_from(LIVE_QUESTIONS) | st.text(max_size=30)),
                                    reference_round=data.draw(st.integers(-1, 3)), request_id=data.draw(request_ids))
    before = len(service.stub.ListRounds(pb.ListRoundsRequest(session_id=service.scratch)).rounds)
    method = data.draw(st.sampled_from(["CreateRound", "StreamRound"]))
    code, response = check_call(service, method, request, echoed=(request.request_id,),
                                changes=rf"^mr:(session:{service.scratch}|encoding:|tenant:)")
    after = service.stub.ListRounds(pb.ListRoundsRequest(session_id=service.scratch)).rounds
    if code is grpc.StatusCode.OK:
        made = response if method == "CreateRound" else response[-1].round
        assert len(after) in (before, before + 1)  # a request id seen before returns its round, appends none
        assert after[made.number - 1].question == made.question
    else:
        assert len(after) == before


@settings(GRPC, max_examples=25)
@given(image=images, question=questions)
@example(image=encode("RGB", "JPEG", 32, 32, 1), question="Segment the liver.")
@example(image=encode("RGB", "JPEG", 32, 32, 1), question="Segment its lesion.")
@example(image=encode("RGB", "JPEG", 32, 32, 1), question="Segment " * 60)
def test_segment_never_fails_internally_and_stores_no_session(service, image, question):
    check_call(service, "Segment", pb.SegmentRequest(image=image, question=question), changes=r"^mr:encoding:")


# Raw requests: field 1 (a string in every request but CreateSession's and Segment's image) as invalid
# UTF-8, broken varints and lengths, bytes of every kind.
def length_delimited(field: int, payload: bytes) -> bytes:
    return bytes([field << 3 | 2, len(payload)]) + payload


raw_requests = st.one_of(
    st.binary(max_size=40),
    st.builds(length_delimited, st.integers(1, 4), st.binary(max_size=20)),
    st.sampled_from([length_delimited(1, b"\xff\xfe"), length_delimited(2, b"\xc3\x28"), b"\x0a\x05ab", b"\x08",
                     b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\xff\xff\xff\xff\x0f"]))
METHODS = ["CreateSession", "GetSession", "DeleteSession", "CreateRound", "StreamRound", "GetRound", "ListRounds",
           "Segment"]


@settings(GRPC, max_examples=60)
@given(method=st.sampled_from(METHODS), raw=raw_requests)
@example(method="CreateRound", raw=length_delimited(1, b"\xff\xfe"))
def test_raw_bytes_that_are_not_a_request_are_refused_cleanly(service, method, raw):
    if method == "StreamRound":
        rpc = service.channel.unary_stream(SERVICE + method)
    else:
        rpc = service.channel.unary_unary(SERVICE + method)
    before = service.snapshot()
    try:
        response = rpc(raw, timeout=60)
        if method == "StreamRound":
            list(response)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    event(f"{method}: {code.name}")
    assert code not in NEVER, f"{method} answered {code.name} to {raw!r}: {details!r}"
    check_details(details)
    assert service.snapshot() == before
    assert service.view(service.fixed) == service.fixed_view


def test_the_fixed_session_is_still_there_as_it_was(service):
    """The checks above compare against the fixed session's first view: it is a real one, with its round."""
    session, rounds = service.view(service.fixed)
    assert pb.Session.FromString(session).round_count == 1
    assert [r.question for r in pb.ListRoundsResponse.FromString(rounds).rounds] == ["Segment the liver."]
    assert uuid.UUID(hex=service.fixed)
