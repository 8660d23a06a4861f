"""Round routes: ask the next question (a JSON answer, or server-sent events), list the rounds, one round, its mask.

    POST /api/v1/sessions/{id}/rounds              CreateRound; with ``Accept: text/event-stream``, StreamRound
    GET  /api/v1/sessions/{id}/rounds              ListRounds (without masks: each round has its mask_url)
    GET  /api/v1/sessions/{id}/rounds/{n}          GetRound
    GET  /api/v1/sessions/{id}/rounds/{n}/mask.png the round's mask PNG, the bytes GetRound carries

The body of a question is ``{"question": ..., "reference_round": 0, "request_id": ...}`` (CreateRoundRequest's JSON;
the same ``request_id`` twice appends once). The event stream is ``answer`` (``{"answer": text}``) as soon as the
reasoning step has it, then ``round`` (the round's JSON); a failure after the stream began is an ``error`` event
with the usual error body. A failure before any event is a plain HTTP error, like the JSON route's.
"""

from __future__ import annotations

import json

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mediround.v1 import mediround_pb2 as pb
from serving.http.bodies import read_json
from serving.http.convert import round_json, round_request
from serving.http.errors import GatewayError, error_body

ROUND_BODY_BYTES = 64 * 2**10
"""A question is at most a few thousand characters (the server's limit); the body's bound is well above it."""


def sse(event: str, data: dict) -> bytes:
    """One server-sent event; ``json.dumps`` writes no newline, so one ``data:`` line holds it."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def ask(request: Request) -> Response:
    upstream = request.app.state.upstream
    question = round_request(request.path_params["session_id"], await read_json(request, ROUND_BODY_BYTES))
    call_kwargs = upstream.kwargs(request, round_=True)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return JSONResponse(round_json(await upstream.stub.CreateRound(question, **call_kwargs)))
    call = upstream.stub.StreamRound(question, **call_kwargs)
    first = await call.read()  # a refusal before any event (an unknown session...) is an HTTP status, not an event
    return StreamingResponse(_events(call, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(call, event):
    finished = False
    try:
        while event is not grpc.aio.EOF:
            if event.HasField("round"):
                finished = True
                yield sse("round", round_json(event.round))
            else:
                yield sse("answer", {"answer": event.answer})
            event = await call.read()
        if not finished:
            yield sse("error", error_body(grpc.StatusCode.INTERNAL, "the stream ended without its round"))
    except grpc.aio.AioRpcError as e:
        yield sse("error", error_body(e.code(), e.details() or e.code().name))
    finally:
        call.cancel()  # a page that went away stops waiting; a no-op once the call has ended


async def list_rounds(request: Request) -> JSONResponse:
    upstream = request.app.state.upstream
    response = await upstream.stub.ListRounds(pb.ListRoundsRequest(session_id=request.path_params["session_id"]),
                                              **upstream.kwargs(request))
    return JSONResponse({"rounds": [round_json(r) for r in response.rounds]})


async def _round(request: Request) -> pb.Round:
    upstream = request.app.state.upstream
    if request.path_params["number"] > 2**31 - 1:  # beyond int32: no round, and not a GetRoundRequest
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "a round number is 1 to 2147483647")
    return await upstream.stub.GetRound(pb.GetRoundRequest(session_id=request.path_params["session_id"],
                                                           number=request.path_params["number"]),
                                        **upstream.kwargs(request))


async def get_round(request: Request) -> JSONResponse:
    return JSONResponse(round_json(await _round(request)))


async def round_mask(request: Request) -> Response:
    r = await _round(request)
    if not r.has_mask:
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"round {r.number}'s answer has no mask")
    return Response(r.mask_png, media_type="image/png", headers={"Cache-Control": "private, no-store"})


routes = [
    Route("/api/v1/sessions/{session_id}/rounds", ask, methods=["POST"]),
    Route("/api/v1/sessions/{session_id}/rounds", list_rounds, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}/rounds/{number:int}", get_round, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}/rounds/{number:int}/mask.png", round_mask, methods=["GET"]),
]
