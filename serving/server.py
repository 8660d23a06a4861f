"""The gRPC server: the MediRound service plus standard health checking and reflection, optional TLS
and bearer-token auth, message limits sized for 16-bit 1024 px images.

Why a grpcio server in front of Ray Serve handles rather than Serve's own gRPC proxy: Serve's proxy
has no TLS, no standard ``grpc.health.v1`` or reflection and no interceptors; a grpcio server gives
all four and still reaches every replica through the deployment handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.dialogue import Dialogue
from serving.servicer import MediRoundServicer

SERVICE = pb.DESCRIPTOR.services_by_name["MediRound"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass
class ServerOptions:
    """How the gRPC server listens."""

    address: str = "127.0.0.1:50051"
    max_message_bytes: int = 64 * 2**20
    """Largest request/response; a 16-bit 1024 x 1024 PNG is at most ~2 MiB, DICOM-sized inputs more."""
    token: str | None = None
    """Require ``authorization: Bearer <token>`` metadata (health and reflection stay open)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    max_inflight: int = 64

    def __post_init__(self):
        if bool(self.tls_cert) != bool(self.tls_key):  # one without the other would serve plaintext
            raise ValueError("TLS needs both a certificate chain and its private key (--tls-cert and --tls-key)")


class _BearerAuth(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self.expected = f"Bearer {token}"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong 'authorization: Bearer <token>' metadata")

        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        if dict(details.invocation_metadata or ()).get("authorization") != self.expected:
            return self.deny
        return await continuation(details)


async def start_server(dialogue: Dialogue, options: ServerOptions | None = None) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the bound port."""
    o = options or ServerOptions()
    server = grpc.aio.server(
        interceptors=[_BearerAuth(o.token)] if o.token else [],
        options=[("grpc.max_receive_message_length", o.max_message_bytes),
                 ("grpc.max_send_message_length", o.max_message_bytes)])
    pb_grpc.add_MediRoundServicer_to_server(MediRoundServicer(dialogue, max_inflight=o.max_inflight), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if o.tls_cert and o.tls_key:
        creds = grpc.ssl_server_credentials([(Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())])
        port = server.add_secure_port(o.address, creds)
    else:
        port = server.add_insecure_port(o.address)
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port
