"""The gateway as a server in the front process: uvicorn on the same event loop as the gRPC server.

    gateway = await Gateway(HttpOptions(port=8080), grpc_target="127.0.0.1:50051").start()
    ...
    await gateway.stop()

``mediround serve --http PORT`` starts one beside the gRPC server (``serving.runtime.service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from model.config import SHIPPED_TINY, ModelConfig
from serving.http.app import PageSettings, build_app
from serving.http.upstream import Upstream, UpstreamOptions

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class HttpOptions:
    """How the gateway listens."""

    port: int
    """0 takes a free port (the tests)."""
    host: str = "127.0.0.1"
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    """Origins allowed to call the API from their pages (``https://school.example``); none by default."""
    max_body_bytes: int = 64 * 2**20
    """The largest upload read, as the gRPC server's largest message."""
    round_timeout_s: float = 300.0

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--http takes a port, 0 to 65535; got {self.port}")
        for origin in self.cors_origins:
            if origin == "*" or not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ValueError(f"a CORS origin is scheme://host[:port], named exactly (no '*', no path); got "
                                 f"{origin!r}")


def jcm_beta(checkpoint: str | Path | None) -> float:
    """The JCM threshold of the checkpoint the service runs (its ``config.json``; no torch needed)."""
    return ModelConfig.load(Path(checkpoint or SHIPPED_TINY) / "config.json").jcm.beta


def window_presets() -> tuple[str, ...]:
    try:  # serving.dicom owns them; a server without DICOM support offers none
        from serving.dicom.voi import PRESETS
    except ImportError:
        return ()
    return tuple(PRESETS)


def loopback(address: str) -> str:
    """The gRPC server's address as the gateway dials it: a wildcard listen address is reached on loopback."""
    host, port = address.rsplit(":", 1)
    return f"127.0.0.1:{port}" if host in WILDCARDS else address


class _Server(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()  # the process's signals belong to mediround serve, which stops us


class Gateway:
    """``bind()`` early (a port in use fails before the service starts anything), then ``await start(grpc_target)``
    inside the serving event loop, once the gRPC server listens."""

    def __init__(self, options: HttpOptions, *, checkpoint: str | Path | None = None,
                 max_message_bytes: int = 64 * 2**20):
        self.options, self.checkpoint, self.max_message_bytes = options, checkpoint, max_message_bytes
        self.port, self.url = 0, ""
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self.upstream: Upstream | None = None
        self.beta = 0.0

    def bind(self) -> Gateway:
        o = self.options
        family = socket.AF_INET6 if ":" in o.host else socket.AF_INET
        beta = jcm_beta(self.checkpoint)  # a checkpoint without a config fails now too
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((o.host.strip("[]"), o.port))
        except OSError as e:
            sock.close()
            raise ValueError(f"the HTTP gateway cannot listen on {o.host}:{o.port}: {e.strerror}") from e
        self._socket, self.port, self.beta = sock, sock.getsockname()[1], beta
        self.url = f"http://{o.host if family == socket.AF_INET else f'[{o.host}]'}:{self.port}/"
        return self

    async def start(self, grpc_target: str) -> Gateway:
        if self._socket is None:
            self.bind()
        assert self._socket is not None  # bind() made it
        o = self.options
        upstream = self.upstream = Upstream(UpstreamOptions(loopback(grpc_target),
                                                            max_message_bytes=self.max_message_bytes,
                                                            round_timeout_s=o.round_timeout_s))
        settings = PageSettings(jcm_beta=self.beta, window_presets=window_presets(),
                                max_body_bytes=o.max_body_bytes, cors_origins=o.cors_origins)
        config = uvicorn.Config(build_app(upstream, settings), log_level="warning", access_log=False,
                                lifespan="off", ws="none", server_header=False, timeout_graceful_shutdown=2)
        server = self._server = _Server(config)
        task = self._task = asyncio.create_task(server.serve(sockets=[self._socket]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the HTTP gateway stopped while starting")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self.upstream is not None:
            await self.upstream.close()
        if self._socket is not None:
            self._socket.close()
