"""Session routes: open a dialogue on uploaded bytes, read it back, its image (as stored, and rendered for a canvas),
its DICOM Segmentation, delete it. Each calls one gRPC method; errors map in ``serving.http.errors``.

    POST   /api/v1/sessions                              CreateSession (body: the image, or a form; see bodies.py)
    GET    /api/v1/sessions/{id}                         GetSession (with its DicomSource when opened on DICOM)
    DELETE /api/v1/sessions/{id}                         DeleteSession
    GET    /api/v1/sessions/{id}/image                   GetSessionImage, as its media type
    GET    /api/v1/sessions/{id}/image/levels            bit depth and value range (render.py)
    GET    /api/v1/sessions/{id}/image/rendered?center=&width=   an 8-bit PNG, windowed by the server
    GET    /api/v1/sessions/{id}/segmentation            GetSegmentation: the DICOM SEG, application/dicom
"""

from __future__ import annotations

import asyncio

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mediround.v1 import mediround_pb2 as pb
from serving.http.bodies import number, parse_form, read_body, session_request
from serving.http.convert import session_json
from serving.http.errors import GatewayError
from serving.http.render import levels, render


def _stub(request: Request):
    return request.app.state.upstream.stub


def _call(request: Request) -> dict:
    return request.app.state.upstream.kwargs(request)


async def create_session(request: Request) -> JSONResponse:
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        image, fields = parse_form(content_type, body)
        if image is None:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "the form has no file field named 'image'")
        fields = {**request.query_params, **fields}
    else:
        image, fields = body, dict(request.query_params)
    session = await _stub(request).CreateSession(session_request(image, fields), **_call(request))
    made = session_json(session)
    return JSONResponse(made, status_code=201, headers={"Location": made["url"]})


async def get_session(request: Request) -> JSONResponse:
    session = await _stub(request).GetSession(pb.GetSessionRequest(session_id=request.path_params["session_id"]),
                                              **_call(request))
    return JSONResponse(session_json(session))


async def delete_session(request: Request) -> JSONResponse:
    response = await _stub(request).DeleteSession(
        pb.DeleteSessionRequest(session_id=request.path_params["session_id"]), **_call(request))
    return JSONResponse({"deleted": response.deleted})


async def _image(request: Request) -> pb.SessionImage:
    return await _stub(request).GetSessionImage(
        pb.GetSessionImageRequest(session_id=request.path_params["session_id"]), **_call(request))


async def session_image(request: Request) -> Response:
    image = await _image(request)
    return Response(image.image, media_type=image.media_type, headers={"Cache-Control": "private, no-store"})


async def image_levels(request: Request) -> JSONResponse:
    image = await _image(request)
    return JSONResponse((await asyncio.to_thread(levels, image.image)).to_json())


async def rendered_image(request: Request) -> Response:
    query = request.query_params
    unknown = set(query) - {"center", "width"}
    if unknown:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown query parameter {sorted(unknown)[0]!r}; "
                           "the window is center and width")
    center = number("window_center", query["center"]) if "center" in query else None
    width = number("window_width", query["width"]) if "width" in query else None
    image = await _image(request)
    png = await asyncio.to_thread(render, image.image, center, width)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})


async def segmentation(request: Request) -> Response:
    seg = await _stub(request).GetSegmentation(
        pb.GetSegmentationRequest(session_id=request.path_params["session_id"]), **_call(request))
    name = f"seg-{request.path_params['session_id']}.dcm"
    return Response(seg.dicom, media_type="application/dicom",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "private, no-store",
                             "X-Rounds": ",".join(map(str, seg.rounds)),
                             "X-Skipped-Rounds": ",".join(map(str, seg.skipped_rounds))})


routes = [
    Route("/api/v1/sessions", create_session, methods=["POST"]),
    Route("/api/v1/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/api/v1/sessions/{session_id}/image", session_image, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}/image/levels", image_levels, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}/image/rendered", rendered_image, methods=["GET"]),
    Route("/api/v1/sessions/{session_id}/segmentation", segmentation, methods=["GET"]),
]
