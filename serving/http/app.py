"""The gateway's Starlette application: the API routes, the page and its files, CORS when asked for.

    GET /                    the page (static/index.html)
    GET /static/...          its CSS and ES modules
    GET /api/v1/config       what the page needs to know of the server: the JCM threshold, DICOM window presets
    ...                      sessions.py, rounds.py, examples.py

CORS is off unless origins are named: then those origins (exactly) may call the API from their pages, and frame
the page (an education platform embedding it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from serving.http import examples, rounds, sessions
from serving.http.errors import GatewayError, gateway_error, rpc_error, unexpected_error
from serving.http.upstream import Upstream

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class PageSettings:
    """What the gateway tells the page (``GET /api/v1/config``), so that no threshold is written into the JS."""

    jcm_beta: float
    """The judge's threshold: a mask whose quality is at or below it was corrected (``JCMConfig.beta``)."""
    window_presets: tuple[str, ...] = ()
    """The server's DICOM window preset names (``DicomOptions.window_preset``)."""
    max_body_bytes: int = 64 * 2**20
    """The largest upload the gateway reads (413 beyond it)."""
    cors_origins: tuple[str, ...] = ()


def _index(cors_origins: tuple[str, ...]):
    # nothing from anywhere but this origin; framed only by this origin and the CORS ones
    ancestors = " ".join(["'self'", *cors_origins])
    policy = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'self'; "
              f"frame-ancestors {ancestors}")
    headers = {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    return index


def build_app(upstream: Upstream, settings: PageSettings) -> Starlette:
    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"jcm_beta": settings.jcm_beta, "window_presets": list(settings.window_presets),
                             "max_body_bytes": settings.max_body_bytes})

    async def not_found(request: Request, e: Exception) -> JSONResponse:
        return await gateway_error(request, GatewayError(grpc.StatusCode.NOT_FOUND, f"no route {request.url.path}"))

    middleware = []
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["authorization", "content-type", "accept"],
                                     expose_headers=["location", "x-rounds", "x-skipped-rounds"], max_age=600))
    # starlette types every handler as taking any Exception; each of these takes its own kind
    handlers: dict[Any, Any] = {grpc.aio.AioRpcError: rpc_error, GatewayError: gateway_error, 404: not_found,
                                Exception: unexpected_error}
    app = Starlette(
        routes=[Route("/", _index(settings.cors_origins), methods=["GET"]),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
                Route("/api/v1/config", config, methods=["GET"]),
                *sessions.routes, *rounds.routes, *examples.routes],
        middleware=middleware, exception_handlers=handlers)
    app.state.upstream = upstream
    app.state.settings = settings
    return app
