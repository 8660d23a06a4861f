"""Tenants: the tokens file, isolation between tenants, their limits, reflection behind auth, the audit
log. Real gRPC over loopback, real Redis, the shipped model in-process (``LocalPipeline``)."""

import asyncio
import json
import logging
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.front.dialogue import Dialogue
from serving.front.server import ServerOptions, start_server
from serving.front.tenants import TenantRegistry, parse_tokens_file, token_hash
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore

IMAGE = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()
QUESTION = "Segment the liver of patient Jane Roe."


def _tokens_file(path, entries):
    lines = ["tenants:"]
    for name, token, extra in entries:
        lines += [f"  - name: {name}", f'    token_sha256: "{token_hash(token)}"']
        lines += [f"    {k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_tokens_file_holds_hashes_and_bad_files_are_refused_saying_where(tmp_path):
    path = _tokens_file(tmp_path / "tokens.yaml", [("clinic-a", "tok-a", {"max_sessions": 3}), ("lab-b", "tok-b", {})])
    registry = TenantRegistry.from_file(path)
    assert "tok-a" not in path.read_text()
    assert registry.authenticate("Bearer tok-a").name == "clinic-a"
    assert registry.authenticate("Bearer tok-a").max_sessions == 3
    assert registry.authenticate("Bearer tok-b").name == "lab-b"
    assert registry.authenticate("Bearer tok-c") is None
    assert registry.authenticate("tok-a") is None and registry.authenticate(None) is None
    rotating = parse_tokens_file(f"tenants:\n  - {{name: a, token_sha256: {token_hash('old')}}}\n"
                                 f"  - {{name: a, token_sha256: {token_hash('new')}}}")
    assert {t.name for t in rotating.values()} == {"a"} and len(rotating) == 2  # both tokens, mid-rotation
    for text, says in [("tenants: []", "must hold 'tenants:'"),
                       ("tenants:\n  - name: Bad Name\n    token_sha256: " + "a" * 64, "tenant 1: name must be"),
                       ("tenants:\n  - name: a\n    token_sha256: abc", "64 hex digits"),
                       ("tenants:\n  - name: a\n    token_sha256: " + "a" * 64 + "\n    max_sessions: -1", ">= 0"),
                       ("tenants:\n  - name: a\n    token_sha256: " + "a" * 64 + "\n    token: x", "accepted keys"),
                       ("tenants:\n  - {name: a, token_sha256: " + "a" * 64 + "}\n  - {name: b, token_sha256: "
                        + "a" * 64 + "}", "tenant 2: that token hash is already another entry's"),
                       ("tenants:\n  - {name: a, token_sha256: " + "a" * 64 + "}\n  - {name: a, token_sha256: "
                        + "b" * 64 + ", max_sessions: 3}", "tenant 2: 'a' has another entry with other limits"),
                       ("tenants:\n  - name: a\n    token_sha256: " + "1" * 64, "quoted")]:
        with pytest.raises(ValueError, match=says):
            parse_tokens_file(text, "tokens.yaml")


def test_a_rotated_tokens_file_takes_effect_without_a_restart(tmp_path, caplog):
    path = _tokens_file(tmp_path / "tokens.yaml", [("clinic-a", "old", {})])
    registry = TenantRegistry.from_file(path)
    assert registry.authenticate("Bearer old").name == "clinic-a"
    _tokens_file(path, [("clinic-a", "new", {})])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    time.sleep(2.1)  # the file is looked at every 2 s at most
    assert registry.authenticate("Bearer new").name == "clinic-a"
    assert registry.authenticate("Bearer old") is None
    path.write_text("tenants: [oops")  # a broken edit: refused, logged, and the tenants before it still apply
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    time.sleep(2.1)
    with caplog.at_level(logging.ERROR, logger="serving.front.tenants"):
        assert registry.authenticate("Bearer new").name == "clinic-a"
    assert "tokens file was refused" in caplog.text
    assert registry.authenticate("Bearer ") is None


@pytest.fixture(scope="module")
def pipeline(redis_url):
    return LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)


def _serve(tmp_path, redis_url, pipeline, scenario):
    """Run ``scenario(channel)`` against a server whose tenants are clinic-a-<tag> (token tok-a, at most 2
    sessions) and lab-b-<tag> (tok-b, 1 round in flight); the tag keeps each test's tenants its own in
    the shared Redis. Returns what the scenario returns and the tag."""
    tag = tmp_path.name[-12:].lower().replace("_", "-")
    tokens = _tokens_file(tmp_path / "tokens.yaml", [(f"clinic-a-{tag}", "tok-a", {"max_sessions": 2}),
                                                     (f"lab-b-{tag}", "tok-b", {"max_rounds_in_flight": 1})])

    async def run():
        store = RedisSessionStore(redis_url)
        server, port = await start_server(Dialogue(store, pipeline),
                                          ServerOptions(address="127.0.0.1:0", tokens_file=str(tokens)))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await scenario(channel)
        finally:
            await server.stop(grace=1)
            await store.close()

    return asyncio.run(run()), tag


A, B = [("authorization", "Bearer tok-a")], [("authorization", "Bearer tok-b")]


async def _code(call):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


def test_another_tenants_session_does_not_exist_for_it(tmp_path, redis_url, pipeline):
    async def scenario(channel):
        stub = pb_grpc.MediRoundStub(channel)
        session = await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=A)
        await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question=QUESTION), metadata=A)
        sid = session.id
        for call in (stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=B),
                     stub.GetRound(pb.GetRoundRequest(session_id=sid, number=1), metadata=B),
                     stub.ListRounds(pb.ListRoundsRequest(session_id=sid), metadata=B),
                     stub.GetSessionImage(pb.GetSessionImageRequest(session_id=sid), metadata=B),
                     stub.CreateRound(pb.CreateRoundRequest(session_id=sid, question=QUESTION), metadata=B)):
            code, details = await _code(call)
            assert code == grpc.StatusCode.NOT_FOUND and "does not exist or has expired" in details
        deleted = await stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), metadata=B)
        assert not deleted.deleted
        mine = await stub.ListRounds(pb.ListRoundsRequest(session_id=sid), metadata=A)
        assert len(mine.rounds) == 1  # untouched by the other tenant
        image = await stub.GetSessionImage(pb.GetSessionImageRequest(session_id=sid), metadata=A)
        assert image.image == IMAGE and image.media_type == "image/png"
        code, _ = await _code(stub.GetSession(pb.GetSessionRequest(session_id=sid)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = await _code(stub.GetSession(pb.GetSessionRequest(session_id=sid),
                                              metadata=[("authorization", "Bearer tok-c")]))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), metadata=A)).deleted

    _serve(tmp_path, redis_url, pipeline, scenario)


def test_tenant_limits_on_sessions_and_rounds_in_flight(tmp_path, redis_url, pipeline):
    async def scenario(channel):
        stub = pb_grpc.MediRoundStub(channel)
        first = await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=A)
        await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=A)
        code, details = await _code(stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=A))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 live sessions" in details
        await stub.DeleteSession(pb.DeleteSessionRequest(session_id=first.id), metadata=A)
        await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=A)  # room again

        sessions = [await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE), metadata=B) for _ in range(3)]
        results = await asyncio.gather(*(stub.CreateRound(pb.CreateRoundRequest(session_id=s.id, question=QUESTION),
                                                          metadata=B) for s in sessions), return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert refused and len(refused) < 3
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "this tenant" in r.details() for r in refused)

    _serve(tmp_path, redis_url, pipeline, scenario)


def test_health_is_open_and_reflection_needs_a_token(tmp_path, redis_url, pipeline):
    async def scenario(channel):
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.ServerReflectionInfo(iter([ask])):
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = [a async for a in stub.ServerReflectionInfo(iter([ask]), metadata=A)]
        assert "mediround.v1.MediRound" in {s.name for s in answers[0].list_services_response.service}

    _serve(tmp_path, redis_url, pipeline, scenario)


def test_the_audit_log_says_who_did_what_and_nothing_of_the_patient(tmp_path, redis_url, pipeline, caplog):
    async def scenario(channel):
        stub = pb_grpc.MediRoundStub(channel)
        session = await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE, metadata={"patient": "Jane Roe"}),
                                           metadata=A)
        await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question=QUESTION), metadata=A)
        await _code(stub.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=B))
        await _code(stub.GetSession(pb.GetSessionRequest(session_id="Jane Roe's scan")))  # no token
        await _code(stub.GetSession(pb.GetSessionRequest(session_id="Jane Roe's scan"), metadata=B))
        return session.id

    with caplog.at_level(logging.INFO, logger="mediround.audit"):
        sid, tag = _serve(tmp_path, redis_url, pipeline, scenario)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mediround.audit"]
    assert [(e["tenant"], e["method"].rsplit("/", 1)[1], e["session"], e["status"]) for e in lines] == [
        (f"clinic-a-{tag}", "CreateSession", sid, "OK"), (f"clinic-a-{tag}", "CreateRound", sid, "OK"),
        (f"lab-b-{tag}", "GetSession", sid, "NOT_FOUND"), (None, "GetSession", "", "UNAUTHENTICATED"),
        (f"lab-b-{tag}", "GetSession", "(not a session id)", "INVALID_ARGUMENT")]
    assert all(e["ms"] >= 0 for e in lines)
    assert "Jane" not in caplog.text and "liver" not in caplog.text


def test_a_tenant_may_use_the_pacs_its_entry_names_and_none_by_default(tmp_path):
    path = _tokens_file(tmp_path / "tokens.yaml", [("radiology", "tok-r", {"pacs": "[st-marys, lab]"}),
                                                   ("school", "tok-s", {}), ("ops", "tok-o", {"pacs": '["*"]'})])
    registry = TenantRegistry.from_file(path)
    radiology, school, ops = (registry.authenticate(f"Bearer {t}") for t in ("tok-r", "tok-s", "tok-o"))
    assert radiology.may_use_pacs("st-marys") and not radiology.may_use_pacs("elsewhere")
    assert not school.may_use_pacs("st-marys") and ops.may_use_pacs("anything")
    assert TenantRegistry.single("tok").authenticate("Bearer tok").may_use_pacs("st-marys")  # one trust domain
    with pytest.raises(ValueError, match="pacs is a list"):
        _tokens_file(tmp_path / "bad.yaml", [("radiology", "tok-r", {"pacs": "st-marys"})])
        TenantRegistry.from_file(tmp_path / "bad.yaml")
