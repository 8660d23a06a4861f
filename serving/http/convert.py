"""Proto messages <-> the gateway's JSON, using protobuf's own JSON mapping (``json_format``).

Field names stay as in the proto (``reference_round``, not ``referenceRound``), every field is present even at its
default, and a message field appears only when set (a session's ``dicom`` only for DICOM sessions). Bytes never go
into JSON: a round carries ``mask_url`` instead of ``mask_png``.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from mediround.v1 import mediround_pb2 as pb
from serving.http.errors import GatewayError


def to_json(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def session_json(session: pb.Session) -> dict:
    return to_json(session) | {"url": f"/api/v1/sessions/{session.id}"}


def round_json(r: pb.Round) -> dict:
    r = pb.Round.FromString(r.SerializeToString())  # a copy: the caller's message keeps its mask
    r.ClearField("mask_png")
    body = to_json(r)
    body.pop("mask_png", None)
    if not r.HasField("box"):
        body["box"] = None
    url = f"/api/v1/sessions/{r.session_id}/rounds/{r.number}"
    return body | {"url": url, "mask_url": f"{url}/mask.png" if r.has_mask else None}


def round_request(session_id: str, body: dict) -> pb.CreateRoundRequest:
    """A round's JSON body (``question``, ``reference_round``, ``request_id``) as the gRPC request."""
    if not isinstance(body, dict):
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "the body must be a JSON object: {\"question\": ..., "
                           "\"reference_round\": 0, \"request_id\": ...}")
    if "session_id" in body:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "the session is the one in the URL; leave session_id out")
    try:
        return json_format.ParseDict(body | {"session_id": session_id}, pb.CreateRoundRequest())
    except json_format.ParseError as e:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"not a round request: {e}") from e

