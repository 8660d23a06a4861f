"""Request bodies: read within a bound, and the two shapes of an upload (raw bytes, or multipart/form-data).

An upload is either the image's bytes as the whole body (``Content-Type`` anything but multipart: the server
recognises PNG, JPEG, TIFF and DICOM by their bytes) with its fields in the query string, or a form with a file
field ``image`` and the same fields. Fields: ``ttl_seconds``, DICOM's ``frame``, ``window_preset``,
``window_center``, ``window_width`` (``DicomOptions``, passed through; the server refuses them for other images),
and ``metadata.<key>`` for each metadata entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import collapse_rfc2231_value
from typing import cast

import grpc
from starlette.requests import Request

from mediround.v1 import mediround_pb2 as pb
from serving.http.errors import GatewayError

BAD = grpc.StatusCode.INVALID_ARGUMENT
NUMBERS = {"ttl_seconds": int, "frame": int, "window_center": float, "window_width": float}
FIELDS = set(NUMBERS) | {"window_preset", "request_id"}


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes (before, when Content-Length says so)."""
    too_large = GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request body is over {limit} bytes, this "
                             "gateway's limit", http_status=413)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int):
    try:
        return json.loads(await read_body(request, limit) or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GatewayError(BAD, f"the body is not JSON: {e}") from e


def parse_form(content_type: str, body: bytes) -> tuple[bytes | None, dict[str, str]]:
    """A multipart/form-data body: the ``image`` file's bytes and the other fields as text."""
    # the standard library's MIME parser reads form-data (RFC 7578 is MIME multipart); the header goes first
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if not message.is_multipart():
        raise GatewayError(BAD, "a multipart/form-data body needs its boundary in the Content-Type")
    image: bytes | None = None
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        param = part.get_param("name", header="content-disposition")
        name = collapse_rfc2231_value(param) if param else ""
        data = cast(bytes, part.get_payload(decode=True) or b"")  # decoded: bytes
        if name == "image":
            image = data
        elif name:
            try:
                fields[name] = data.decode()
            except UnicodeDecodeError as e:
                raise GatewayError(BAD, f"form field {name!r} is not UTF-8 text") from e
    return image, fields


def number(name: str, text: str):
    try:
        value = NUMBERS[name](text)
    except ValueError as e:
        raise GatewayError(BAD, f"{name} must be a{'n integer' if NUMBERS[name] is int else ' number'}; got "
                           f"{text!r}") from e
    if isinstance(value, float) and not math.isfinite(value):
        raise GatewayError(BAD, f"{name} must be a finite number; got {text!r}")
    return value


def session_request(image: bytes, fields: Mapping[str, str]) -> pb.CreateSessionRequest:
    """``CreateSessionRequest`` of an upload: the image as sent (DICOM bytes too) and its fields."""
    request = pb.CreateSessionRequest(image=image)
    for name, text in fields.items():
        if text == "":  # a form's empty input is a field not given
            continue
        if name.startswith("metadata."):
            request.metadata[name.removeprefix("metadata.")] = text
        elif name not in FIELDS:
            raise GatewayError(BAD, f"unknown field {name!r}; the fields are {', '.join(sorted(FIELDS))} and "
                               "metadata.<key>")
        elif name == "ttl_seconds":
            request.ttl_seconds = number(name, text)
        elif name == "window_preset":
            request.dicom_options.window_preset = text
        elif name == "request_id":
            request.request_id = text
        else:
            setattr(request.dicom_options, name, number(name, text))
    return request
