"""Redis goes away: rounds fail with UNAVAILABLE and a clear message; when it returns, serving resumes
with the stored dialogue intact. Real Redis (stopped and restarted), real gRPC, the in-process pipeline."""

import asyncio
import socket

import grpc
import pytest

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.front.dialogue import Dialogue
from serving.front.server import ServerOptions, start_server
from serving.replicas.steps import LocalPipeline
from serving.runtime.embedded_redis import EmbeddedRedis
from serving.store import RedisSessionStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_is_unavailable_and_the_server_recovers(tmp_path):
    port = _free_port()
    image = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()

    async def scenario():
        redis_server = EmbeddedRedis(tmp_path, port=port)
        store = RedisSessionStore(redis_server.url)
        pipeline = LocalPipeline(str(SHIPPED_TINY), redis_url=redis_server.url)
        server, bound = await start_server(Dialogue(store, pipeline), ServerOptions(address="127.0.0.1:0"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bound}") as channel:
                stub = pb_grpc.MediRoundStub(channel)
                session = await stub.CreateSession(pb.CreateSessionRequest(image=image))
                await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question="Segment the left lung."))
                redis_server.close()  # saves its data and stops
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question="Segment its lesion."))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "dialogue store" in info.value.details() and "unreachable" in info.value.details()
                restarted = EmbeddedRedis(tmp_path, port=port)
                try:
                    second = await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id,
                                                                          question="Segment the spleen."))
                    assert second.number == 2  # round 1 survived the outage
                finally:
                    restarted.close()
        finally:
            await server.stop(grace=1)
            await store.close()

    asyncio.run(scenario())


def test_a_round_asked_while_redis_restarts_waits_for_it_and_is_appended_once(tmp_path):
    port = _free_port()
    image = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()

    async def scenario():
        redis_server = EmbeddedRedis(tmp_path, port=port)
        store = RedisSessionStore(redis_server.url)
        pipeline = LocalPipeline(str(SHIPPED_TINY), redis_url=redis_server.url)
        server, bound = await start_server(Dialogue(store, pipeline), ServerOptions(address="127.0.0.1:0"))
        restarted = None
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{bound}") as channel:
                stub = pb_grpc.MediRoundStub(channel)
                session = await stub.CreateSession(pb.CreateSessionRequest(image=image))
                await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question="Segment the left lung."))
                redis_server.close()
                asked = asyncio.ensure_future(stub.CreateRound(pb.CreateRoundRequest(
                    session_id=session.id, question="Segment its lesion.", request_id="during-the-restart")))
                await asyncio.sleep(1.0)  # the round meets the outage (within Limits.store_retry_s)
                assert not asked.done()
                restarted = EmbeddedRedis(tmp_path, port=port)
                second = await asked
                listed = await stub.ListRounds(pb.ListRoundsRequest(session_id=session.id))
                assert second.number == 2 and [r.number for r in listed.rounds] == [1, 2]
        finally:
            await server.stop(grace=1)
            await store.close()
            if restarted is not None:
                restarted.close()

    asyncio.run(scenario())
