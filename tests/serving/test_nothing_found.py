"""A round whose [SEG] decodes to an empty mask is served as a round without a mask that says so, and a later
round cannot refer to it. Real gRPC over loopback, real Redis, the shipped model in-process with its mask decoder
made to find nothing."""

import asyncio

import grpc
import pytest

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from model.data.template import NOTHING_FOUND
from serving.front.dialogue import Dialogue
from serving.front.server import ServerOptions, start_server
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore

IMAGE = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()


def test_an_empty_mask_is_no_mask_with_an_answer_saying_so_and_cannot_be_referred_to(redis_url):
    pipeline = LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)

    async def scenario():
        store = RedisSessionStore(redis_url)
        server, port = await start_server(Dialogue(store, pipeline), ServerOptions(address="127.0.0.1:0"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.MediRoundStub(channel)
                session = await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE))
                found = await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id,
                                                                     question="Segment the left lung."))
                assert found.has_mask and found.mask_png and found.answer != NOTHING_FOUND
                decoder = pipeline.segmenter.model.sam.mask_decoder
                hook = decoder.register_forward_hook(lambda module, args, out: (out[0] - 1e4, *out[1:]))
                try:
                    empty = await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id,
                                                                         question="Segment the right lung."))
                finally:
                    hook.remove()
                assert not empty.has_mask and empty.answer == NOTHING_FOUND
                assert empty.mask_png == b"" and not empty.HasField("box") and empty.quality == 0.0
                for question, reference in (("Segment the lesion inside round 2.", 0), ("Segment its lesion.", 0),
                                            ("Segment the lesion.", 2)):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id, question=question,
                                                                     reference_round=reference))
                    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert "round 2 has no mask" in info.value.details()
                third = await stub.CreateRound(pb.CreateRoundRequest(session_id=session.id,
                                                                     question="Segment the lesion inside round 1."))
                stored = (await stub.ListRounds(pb.ListRoundsRequest(session_id=session.id))).rounds
                assert third.number == 3 and [r.has_mask for r in stored][:2] == [True, False]
                assert stored[1].answer == NOTHING_FOUND
        finally:
            await server.stop(grace=1)
            await store.close()

    asyncio.run(scenario())
