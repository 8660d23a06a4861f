"""gRPC status codes -> HTTP status codes, and the JSON error body, in one place.

Every failure the gateway answers has the body ``{"error": {"code": "NOT_FOUND", "status": 404, "message": ...}}``
where ``message`` is the gRPC server's own message (or the gateway's, for a request it refuses before calling
the API). The code name tells apart statuses that share an HTTP number.

FAILED_PRECONDITION is 409, not 412: RFC 9110 gives 412 to failed conditional headers (``If-Match``...), which
this API does not use; 409 ("conflicts with the current state of the resource") is what a reference to a round
that does not exist, or a DICOM SEG asked of a session without DICOM, is. ABORTED (a concurrent round on the
session: retry) and ALREADY_EXISTS (a reused request id) are 409 too; the body's ``code`` says which.
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse

C = grpc.StatusCode
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    C.OK: 200,
    C.CANCELLED: 499,  # "client closed request" (nginx); the caller went away
    C.UNKNOWN: 500,
    C.INVALID_ARGUMENT: 400,
    C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403,
    C.RESOURCE_EXHAUSTED: 429,
    C.FAILED_PRECONDITION: 409,
    C.ABORTED: 409,
    C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNAVAILABLE: 503,
    C.DATA_LOSS: 500,
    C.UNAUTHENTICATED: 401,
}


class GatewayError(Exception):
    """A request the gateway refuses itself, before any gRPC call (a body too large, JSON that is not a request)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.http_status = http_status or HTTP_STATUS[code]


def error_body(code: grpc.StatusCode, message: str, http_status: int | None = None) -> dict:
    return {"error": {"code": code.name, "status": http_status or HTTP_STATUS[code], "message": message}}


def error_response(code: grpc.StatusCode, message: str, http_status: int | None = None) -> JSONResponse:
    status = http_status or HTTP_STATUS[code]
    # a 401 names the scheme it wants (RFC 9110 section 11.6.1)
    headers = {"WWW-Authenticate": 'Bearer realm="mediround"'} if status == 401 else None
    return JSONResponse(error_body(code, message, status), status_code=status, headers=headers)


async def rpc_error(request: Request, e: grpc.aio.AioRpcError) -> JSONResponse:
    """Starlette's handler of a failed gRPC call: the server's code and message, as they came."""
    return error_response(e.code(), e.details() or e.code().name)


async def unexpected_error(request: Request, e: Exception) -> JSONResponse:
    """Starlette's handler of anything else (it logs the traceback): the usual body, INTERNAL."""
    return error_response(C.INTERNAL, f"internal error in the HTTP gateway ({type(e).__name__})")


async def gateway_error(request: Request, e: GatewayError) -> JSONResponse:
    return error_response(e.code, e.message, e.http_status)
