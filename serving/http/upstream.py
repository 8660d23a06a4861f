"""The gateway's one gRPC client: a ``grpc.aio`` channel to the front's own server over loopback.

The caller's ``Authorization`` header goes through as the call's ``authorization`` metadata, untouched: the
server's interceptor decides who the caller is, exactly as for a gRPC client.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from starlette.requests import Request

from mediround.v1 import mediround_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class UpstreamOptions:
    target: str
    """The gRPC server, e.g. "127.0.0.1:50051"."""
    max_message_bytes: int = 64 * 2**20
    """As the server's (``ServerOptions.max_message_bytes``): masks and images come back whole."""
    timeout_s: float = 30.0
    """Deadline of every call but a round's."""
    round_timeout_s: float = 300.0
    """Deadline of a round (CreateRound, StreamRound): a round waits for the one before it on its session."""


class Upstream:
    """Create inside the event loop that serves the gateway (a ``grpc.aio`` channel belongs to one loop)."""

    def __init__(self, options: UpstreamOptions):
        self.options = options
        limits = [("grpc.max_receive_message_length", options.max_message_bytes),
                  ("grpc.max_send_message_length", options.max_message_bytes)]
        self.channel = grpc.aio.insecure_channel(options.target, options=limits)
        self.stub = pb_grpc.MediRoundStub(self.channel)

    @staticmethod
    def metadata(request: Request) -> tuple[tuple[str, str], ...]:
        authorization = request.headers.get("authorization")
        return (("authorization", authorization),) if authorization else ()

    def kwargs(self, request: Request, *, round_: bool = False) -> dict:
        """The keyword arguments of one call made for ``request``: its token and deadline."""
        timeout = self.options.round_timeout_s if round_ else self.options.timeout_s
        return {"metadata": self.metadata(request), "timeout": timeout}

    async def close(self) -> None:
        await self.channel.close()
