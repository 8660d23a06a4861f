"""The gRPC server: the MediRound service plus standard health checking and reflection, optional TLS,
tenants by bearer token, an audit log, message limits sized for 16-bit 1024 px images.

Why a grpcio server in front of Ray Serve handles rather than Serve's own gRPC proxy: Serve's proxy
has no TLS, no standard ``grpc.health.v1`` or reflection and no interceptors; a grpcio server gives
all four and still reaches every replica through the deployment handles.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.dicom.edge import DicomEdge, algorithm_of
from serving.dicom.pacs import PacsRegistry
from serving.front.dialogue import SESSION_ID, Dialogue
from serving.front.servicer import MediRoundServicer
from serving.front.tenants import ANONYMOUS, TenantRegistry, current_tenant

SERVICE = pb.DESCRIPTOR.services_by_name["MediRound"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/",)
"""Served without a token: Kubernetes probes check health. Reflection describes the API, so it is not open."""

audit = logging.getLogger("mediround.audit")


@dataclass
class ServerOptions:
    """How the gRPC server listens."""

    address: str = "127.0.0.1:50051"
    max_message_bytes: int = 64 * 2**20
    """Largest request/response; a 16-bit 1024 x 1024 PNG is at most ~2 MiB, DICOM-sized inputs more."""
    token: str | None = None
    """Require ``authorization: Bearer <token>`` metadata: one tenant, "default"."""
    tokens_file: str | None = None
    """Tenants and the hashes of their tokens (``serving.front.tenants``); instead of ``token``."""
    tls_cert: str | None = None
    tls_key: str | None = None
    max_inflight: int = 64
    pacs_file: str | None = None
    """The PACS the server may fetch DICOM from and store SEGs to, by name (``serving.dicom.pacs``)."""
    checkpoint: str | None = None
    """The model checkpoint the replicas run, named in DICOM SEGs (default: the shipped tiny)."""

    def __post_init__(self):
        if bool(self.tls_cert) != bool(self.tls_key):  # one without the other would serve plaintext
            raise ValueError("TLS needs both a certificate chain and its private key (--tls-cert and --tls-key)")
        if self.token and self.tokens_file:
            raise ValueError("give either one token (--token) or a tokens file (--tokens-file), not both")

    def tenants(self) -> TenantRegistry | None:
        if self.tokens_file:
            return TenantRegistry.from_file(self.tokens_file)
        return TenantRegistry.single(self.token) if self.token else None


class _Undecodable:
    """A request whose bytes are not the method's message (bad wire format, a string that is not UTF-8)."""


def _tolerant(deserializer):
    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError):
            return _Undecodable()

    return deserialize


def _session_of(request, response) -> str:
    """The session a call was about, for the audit log: a session id names no patient, and anything else
    a caller put in the field (it could be anything) is not logged."""
    for message, name in ((request, "session_id"), (response, "session_id"), (response, "id")):
        value = getattr(message, name, "")
        if isinstance(value, str) and value:
            return value if SESSION_ID.fullmatch(value) else "(not a session id)"
    return ""


class _Front(grpc.aio.ServerInterceptor):
    """Every call: refuse undecodable requests, authenticate the tenant (when the server has tokens) and
    bind it to the call, then write one audit line: tenant, method, session, status, latency."""

    def __init__(self, tenants: TenantRegistry | None):
        self.tenants = tenants

    async def intercept_service(self, continuation, details):
        method = details.method
        tenant = ANONYMOUS
        if self.tenants is not None and not method.startswith(OPEN_METHODS):
            tenant = self.tenants.authenticate(dict(details.invocation_metadata or ()).get("authorization"))
            if tenant is None:  # refused before the request is parsed, and whether the method exists
                return self._denied(method)
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, tenant), _tolerant(handler.request_deserializer),
                handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, tenant), _tolerant(handler.request_deserializer),
                handler.response_serializer)
        return handler  # streaming requests (reflection), authenticated above

    @staticmethod
    async def _refuse(request, context) -> None:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the request is not a valid message of this method (string fields must be UTF-8)")

    @staticmethod
    def _denied(method: str):
        """The handler of every call without a known token: the request stays raw bytes, never parsed."""

        async def deny(request, context):
            start = time.perf_counter()
            try:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "missing or unknown token: send 'authorization: Bearer <token>' metadata")
            finally:
                _audit(None, method, "", context, start, None)

        return grpc.unary_unary_rpc_method_handler(deny)

    def _unary(self, behaviour, method: str, tenant):
        async def call(request, context):
            start, response, failed = time.perf_counter(), None, None
            try:
                await self._refuse(request, context)
                token = current_tenant.set(tenant)
                try:
                    response = await behaviour(request, context)
                finally:
                    current_tenant.reset(token)
                return response
            except asyncio.CancelledError:
                failed = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:  # grpc answers UNKNOWN, and context.code() does not know it
                failed = "UNKNOWN"
                raise
            finally:
                _audit(tenant, method, _session_of(request, response), context, start, failed)

        return call

    def _stream(self, behaviour, method: str, tenant):
        async def call(request, context):
            start, last, failed = time.perf_counter(), None, None
            try:
                await self._refuse(request, context)
                current_tenant.set(tenant)  # grpc.aio serves each call in a task of its own: it ends with the call
                async for last in behaviour(request, context):
                    yield last
            except (asyncio.CancelledError, GeneratorExit):
                failed = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                failed = "UNKNOWN"
                raise
            finally:
                _audit(tenant, method, _session_of(request, getattr(last, "round", None)), context, start, failed)

        return call


def _audit(tenant, method: str, session: str, context, start: float, failed: str | None) -> None:
    code = context.code()
    status = failed or (code.name if isinstance(code, grpc.StatusCode) else "OK")
    audit.info(json.dumps({"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                           "tenant": tenant.name if tenant else None, "method": method, "session": session,
                           "status": status, "ms": round(1e3 * (time.perf_counter() - start), 1)}))


async def start_server(dialogue: Dialogue, options: ServerOptions | None = None) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the bound port."""
    o = options or ServerOptions()
    server = grpc.aio.server(
        interceptors=[_Front(o.tenants())],
        options=[("grpc.max_receive_message_length", o.max_message_bytes),
                 ("grpc.max_send_message_length", o.max_message_bytes)])
    pacs = PacsRegistry.from_file(o.pacs_file) if o.pacs_file else None
    edge = DicomEdge(dialogue, pacs=pacs, algorithm=algorithm_of(o.checkpoint))
    pb_grpc.add_MediRoundServicer_to_server(MediRoundServicer(dialogue, edge=edge, max_inflight=o.max_inflight),
                                            server)
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
