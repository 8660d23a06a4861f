"""The gRPC front on its own: bearer auth, TLS, overload and the Prometheus endpoint.
Real gRPC over loopback, real Redis, the shipped model in-process (``LocalPipeline``)."""

import asyncio
import datetime
import socket
import urllib.request

import grpc
import pytest

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.front.dialogue import Dialogue
from serving.front.metrics import serve_metrics
from serving.front.server import ServerOptions, start_server
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore

IMAGE = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()


@pytest.fixture(scope="module")
def pipeline(redis_url):
    return LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls_and_bearer_token(tmp_path, redis_url, pipeline):
    cert, key = _self_signed(tmp_path)

    async def scenario():
        store = RedisSessionStore(redis_url)
        options = ServerOptions(address="127.0.0.1:0", token="s3cret", tls_cert=str(cert), tls_key=str(key))
        server, port = await start_server(Dialogue(store, pipeline), options)
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds,
                                               options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
                stub = pb_grpc.MediRoundStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE))
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "Bearer" in info.value.details()
                session = await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE),
                                                   metadata=[("authorization", "Bearer s3cret")])
                assert session.width > 0
        finally:
            await server.stop(grace=1)
            await store.close()

    asyncio.run(scenario())


def test_a_certificate_without_its_key_is_refused_not_served_in_plaintext(tmp_path):
    cert, key = _self_signed(tmp_path)
    for half in ({"tls_cert": str(cert)}, {"tls_key": str(key)}):
        with pytest.raises(ValueError, match="TLS needs both a certificate chain and its private key"):
            ServerOptions(address="127.0.0.1:0", **half)


def test_overload_is_resource_exhausted_and_rounds_are_counted(redis_url, pipeline):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    serve_metrics(metrics_port)

    async def scenario():
        store = RedisSessionStore(redis_url)
        server, port = await start_server(Dialogue(store, pipeline),
                                          ServerOptions(address="127.0.0.1:0", max_inflight=1))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.MediRoundStub(ch)
                sessions = [await stub.CreateSession(pb.CreateSessionRequest(image=IMAGE)) for _ in range(4)]
                calls = [stub.CreateRound(pb.CreateRoundRequest(session_id=s.id, question="Segment the liver."))
                         for s in sessions]
                results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await server.stop(grace=1)
            await store.close()
        return results

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert refused and all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert "the limit is 1" in refused[0].details()
    assert len(refused) < len(results)  # the first round went through
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    assert 'mediround_errors_total{code="RESOURCE_EXHAUSTED",method="CreateRound"}' in text
    assert "mediround_rounds_total" in text and 'mediround_stage_seconds_count{stage="round"}' in text
    assert 'mediround_stage_seconds_count{stage="reason"}' in text


def test_a_request_that_is_not_the_methods_message_is_invalid_argument(redis_url, pipeline):
    """Raw bytes: field 1 (session_id) of CreateRoundRequest as a string that is not UTF-8, and bytes that
    are no protobuf at all. grpcio's own answer would be UNKNOWN."""
    not_utf8 = b"\x0a\x02\xff\xfe"
    not_protobuf = b"\xff\xff\xff\xff\xff"

    async def scenario():
        store = RedisSessionStore(redis_url)
        server, port = await start_server(Dialogue(store, pipeline), ServerOptions(address="127.0.0.1:0"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                raw = ch.unary_unary("/mediround.v1.MediRound/CreateRound")
                codes = []
                for body in (not_utf8, not_protobuf):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await raw(body)
                    codes.append((info.value.code(), info.value.details()))
                stream = ch.unary_stream("/mediround.v1.MediRound/StreamRound")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in stream(not_utf8):
                        pass
                codes.append((info.value.code(), info.value.details()))
                return codes
        finally:
            await server.stop(grace=1)
            await store.close()

    for code, details in asyncio.run(scenario()):
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in details
