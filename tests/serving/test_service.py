"""The whole service over real gRPC on loopback: real Ray Serve (two Reasoner replicas), real Redis,
the shipped model. One service for the module; each test holds its own sessions."""

import io
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from mediround.v1 import mediround_pb2_grpc as pb_grpc
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from model.predictor import MultiRoundPredictor
from model.questions import round_number
from serving.client import MediRoundClient
from serving.errors import StepUnavailable
from serving.front.dialogue import Limits
from serving.front.server import ServerOptions
from serving.replicas.settings import EncoderSettings, SegmenterSettings
from serving.retries import Backoff
from serving.runtime.service import BackgroundService, ServiceOptions
from tests.serving.dicom.orthanc import free_port

FOUND = "Segment the left lung."  # what the shipped model finds on the real CT slices these tests open


LIMITS = Limits(replica_retry_s=3.0)
"""A step waits 3 s for a replica to take it: well past what a live one needs, and shorter than a burst of a
few new images takes to encode (0.6-1.3 s each on 2 cores)."""


@pytest.fixture(scope="module")
def service():
    """A running service (two Reasoner replicas) on a free loopback port, its front's and its Ray node's
    metrics served on free ports."""
    options = ServiceOptions(replicas={"Reasoner": 2}, server=ServerOptions(address="127.0.0.1:0"), limits=LIMITS,
                             metrics_port=free_port(), ray_metrics_port=free_port())
    with BackgroundService(options) as svc:
        yield svc.address, svc


@pytest.fixture(scope="module")
def client(service):
    with MediRoundClient(service[0]) as c:
        yield c


@pytest.fixture(scope="module")
def predictor():
    """The in-process reference, on the Serve replicas' torch threads (float sums depend on the split)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(SegmenterSettings().torch_threads)
    yield MultiRoundPredictor.from_checkpoint(SHIPPED_TINY)
    torch.set_num_threads(threads)


def _in_process(predictor, image_path, questions):
    predictor.set_image(image_path)
    return [predictor.ask(q) for q in questions]


def test_a_served_dialogue_equals_the_in_process_predictor(client, predictor):
    conv = load(REAL_DIALOGUES)[0]
    image = REAL_SLICES / conv.image
    session = client.create_session(image, metadata={"study": "demo"})
    served = [client.ask(session.id, r.question) for r in conv.rounds]
    local = _in_process(predictor, image, [r.question for r in conv.rounds])
    for s, lo in zip(served, local, strict=True):
        assert s.answer == lo.answer and s.has_mask == lo.has_mask
        assert s.reference_round == (round_number(lo.reference_index) or 0)  # 0 on the wire: no reference
        if lo.has_mask:
            assert np.array_equal(MediRoundClient.mask(s), lo.mask)
            assert s.quality == pytest.approx(lo.quality, abs=1e-6) and s.corrected == lo.corrected
    assert [r.number for r in client.rounds(session.id)] == list(range(1, len(conv.rounds) + 1))
    assert client.session(session.id).round_count == len(conv.rounds)


def test_each_dialogue_keeps_to_the_reasoner_replica_chosen_for_it(client, predictor, phantom_root):
    import ray

    from serving.replicas.routing import rank_replicas

    replicas = [a["name"].rsplit("#", 1)[-1] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::reasoner#")]
    assert len(replicas) == 2
    conv = load(phantom_root / "test_hard.json")[0]
    image = phantom_root / conv.image
    local = _in_process(predictor, image, [r.question for r in conv.rounds])
    for _ in range(3):
        session = client.create_session(image)
        served = [client.ask(session.id, r.question) for r in conv.rounds]
        chosen = rank_replicas(session.id, replicas)[0]
        assert {s.served_by["reasoner"] for s in served} == {chosen}
        for s, lo in zip(served, local, strict=True):
            assert s.answer == lo.answer
            if lo.has_mask:
                assert np.array_equal(MediRoundClient.mask(s), lo.mask)


def test_concurrent_rounds_on_one_session_are_serialised(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[1].image)
    questions = ["Segment the liver.", "Segment the spleen.", "Segment the aorta.", "Segment the left kidney."]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda q: client.ask(session.id, q), questions))
    assert sorted(r.number for r in done) == [1, 2, 3, 4]
    listed = client.rounds(session.id)
    assert sorted(r.question for r in listed) == sorted(questions) and [r.number for r in listed] == [1, 2, 3, 4]


def test_a_retried_request_id_appends_once(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[2].image)
    request_id = uuid.uuid4().hex
    first = client.ask(session.id, "Segment the liver.", request_id=request_id)
    again = client.ask(session.id, "Segment the liver.", request_id=request_id)
    assert (first.number, again.number) == (1, 1) and again.mask_png == first.mask_png
    assert len(client.rounds(session.id)) == 1


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "the connection dropped before the reply came"


class _LoseTheFirstCreateReply(grpc.UnaryUnaryClientInterceptor):
    """The first CreateSession's reply is lost after the server made the session, as a dropped connection loses it."""

    def __init__(self):
        self.lost: list[str] = []  # the id each lost reply carried

    def intercept_unary_unary(self, continuation, details, request):
        outcome = continuation(details, request)
        if details.method.endswith("/CreateSession") and not self.lost:
            self.lost.append(outcome.result().id)
            raise _Unavailable()
        return outcome


def test_a_create_session_sent_again_after_a_lost_reply_makes_one_session(service, client):
    image, other = (REAL_SLICES / load(REAL_DIALOGUES)[k].image for k in (0, 1))
    lossy = _LoseTheFirstCreateReply()
    with MediRoundClient(service[0], create_backoff=Backoff(first_s=0.01, retries=1)) as retrying:
        retrying.stub = pb_grpc.MediRoundStub(grpc.intercept_channel(retrying.channel, lossy))
        session = retrying.create_session(image)
    assert lossy.lost == [session.id]  # the retry got the session the lost reply named, not a second one
    request_id = uuid.uuid4().hex
    first = client.create_session(image, request_id=request_id)
    assert client.create_session(image, request_id=request_id).id == first.id
    code, details = _code(lambda: client.create_session(other, request_id=request_id))
    assert code == grpc.StatusCode.ALREADY_EXISTS and f"already made session {first.id}" in details


class _RefuseTheFirstRound(grpc.UnaryUnaryClientInterceptor):
    """The first CreateRound is answered UNAVAILABLE before it reaches the server, as a server whose model steps
    did not answer in time answers it (nothing appended)."""

    def __init__(self):
        self.sent: list[str] = []  # the request id of every CreateRound sent

    def intercept_unary_unary(self, continuation, details, request):
        if details.method.endswith("/CreateRound"):
            self.sent.append(request.request_id)
            if len(self.sent) == 1:
                raise _Unavailable()
        return continuation(details, request)


def test_a_round_answered_unavailable_is_sent_again_with_its_request_id(service, client):
    refusing = _RefuseTheFirstRound()
    with MediRoundClient(service[0], round_backoff=Backoff(first_s=0.01, retries=1)) as retrying:
        retrying.stub = pb_grpc.MediRoundStub(grpc.intercept_channel(retrying.channel, refusing))
        session = retrying.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
        first = retrying.ask(session.id, FOUND)
    assert len(refusing.sent) == 2 and refusing.sent[0] == refusing.sent[1]
    assert first.number == 1 and [r.number for r in client.rounds(session.id)] == [1]


def _new_images(count: int) -> list[bytes]:
    """``count`` real CT slices no cache has seen: each with four corner pixels of its own (a fresh UUID's)."""
    base = np.array(Image.open(REAL_SLICES / load(REAL_DIALOGUES)[0].image).convert("L"))
    out = []
    for _ in range(count):
        image = base.copy()
        image[0, :4] = np.frombuffer(uuid.uuid4().bytes[:4], np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def test_a_burst_of_new_images_queues_at_the_encoder_and_every_first_round_is_answered(service):
    """Six new images at once outlast the 3 s a step may wait for a replica (the encoder takes them one
    after another): a step a replica holds is waited for, not answered UNAVAILABLE. No client retries."""
    import time

    def first_round(image: bytes) -> float:
        with MediRoundClient(service[0], round_backoff=Backoff(retries=0)) as once:
            session = once.create_session(image)
            start = time.monotonic()
            assert once.ask(session.id, FOUND).number == 1
            return time.monotonic() - start

    with ThreadPoolExecutor(6) as pool:
        waited = list(pool.map(first_round, _new_images(6)))
    assert max(waited) > LIMITS.replica_retry_s, f"the burst took {max(waited):.1f} s: use more images"


def test_a_step_no_replica_takes_is_unavailable_after_the_wait(service):
    """A deployment whose replica cannot be placed (it asks for more CPUs than the node has): Serve holds its
    requests, and the pipeline answers StepUnavailable when none is taken within its wait."""
    import asyncio
    import time

    from ray import serve

    from serving.pipeline import ServePipeline

    @serve.deployment(ray_actor_options={"num_cpus": 1024})
    class NeverPlaced:
        async def encode(self, image_key: str, image: bytes | None = None):
            raise AssertionError("never placed")

    app = serve.RunTarget(NeverPlaced.bind(), name="never-placed", route_prefix=None)
    [handle] = serve.run_many([app], wait_for_applications_running=False)
    try:
        pipeline = ServePipeline(handle, handle, handle, taken_within_s=1.0)
        start = time.monotonic()
        with pytest.raises(StepUnavailable, match="no model replica took the step within 1 s"):
            asyncio.run(pipeline.encode("image-key", b""))
        assert time.monotonic() - start < 10
    finally:
        serve.delete("never-placed", _blocking=False)


def test_the_image_encoder_runs_once_per_distinct_image(client, phantom_root):
    from ray import serve

    encoder = serve.get_app_handle("encoder")
    image = phantom_root / load(phantom_root / "test.json")[1].image
    before = encoder.stats.remote().result().computed
    for _ in range(3):
        session = client.create_session(image)
        client.ask(session.id, "Segment the left lung.")
        client.ask(session.id, "Segment the heart.")
    assert encoder.stats.remote().result().computed == before + 1
    assert client.rounds(session.id)[1].timings.encoder_cache_hit


def test_the_answer_streams_before_the_round(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    events = list(client.stream(session.id, "Segment the liver."))
    assert [e.WhichOneof("event") for e in events] == ["answer", "round"]
    assert events[0].answer == events[1].round.answer


def _code(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_ids_that_are_not_session_ids_are_refused_before_the_store_sees_them(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    client.ask(session.id, "Segment the liver.", request_id="first")
    for bad in (f"{session.id}:rounds", f"{session.id}:requests", f"{session.id}:lock", session.id.upper(), "*", ""):
        for call in (lambda: client.session(bad), lambda: client.delete(bad), lambda: client.rounds(bad),  # noqa: B023
                     lambda: client.get_round(bad, 1), lambda: client.ask(bad, "Segment the liver.")):  # noqa: B023
            code, details = _code(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "32 lowercase hexadecimal" in details
    # nothing of the real session was touched: its round and its idempotency map are intact
    assert [r.number for r in client.rounds(session.id)] == [1] and client.session(session.id).round_count == 1
    assert client.ask(session.id, "Segment the liver.", request_id="first").number == 1


def test_session_lifetimes_outside_the_accepted_range_are_refused(client):
    image = REAL_SLICES / load(REAL_DIALOGUES)[0].image
    for ttl in (-1, 68 * 365 * 24 * 3600):
        code, details = _code(lambda: client.create_session(image, ttl_seconds=ttl))  # noqa: B023
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "ttl_seconds" in details and "604800" in details
    assert client.create_session(image, ttl_seconds=60).expire_time.seconds > 0


def test_a_grey_png_with_alpha_is_accepted_and_segmented(client):
    grey = np.asarray(Image.open(REAL_SLICES / load(REAL_DIALOGUES)[0].image).convert("L"))
    buf = io.BytesIO()
    Image.fromarray(np.dstack([grey, np.full_like(grey, 200)]), mode="LA").save(buf, format="PNG")
    session = client.create_session(buf.getvalue())
    assert client.ask(session.id, "Segment the liver.").number == 1


def test_a_request_id_reused_for_another_question_is_refused(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    first = client.ask(session.id, "Segment the liver.", request_id="req-7")
    assert client.ask(session.id, "Segment  the liver. ", request_id="req-7").number == first.number == 1  # a retry
    code, details = _code(lambda: client.ask(session.id, "Segment the spleen.", request_id="req-7"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "already made round 1" in details
    assert client.session(session.id).round_count == 1


def test_errors_from_a_replica_reach_the_client_as_themselves_without_ray_internals(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    code, details = _code(lambda: client.ask(session.id, "Segment the liver " * 40))  # 720 chars, over 96 tokens
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 96 are accepted" in details
    assert len(details) < 300 and not any(s in details for s in ("Traceback", "ray::", "pid=", "/work", ".py"))
    assert client.ask(session.id, "Segment the liver.").number == 1


def test_images_too_thin_to_segment_are_refused_at_create_session(client):
    for width, height in ((1, 1), (4096, 1), (16, 200)):
        buf = io.BytesIO()
        Image.new("L", (width, height), 128).save(buf, format="PNG")
        code, details = _code(lambda: client.create_session(buf.getvalue()))  # noqa: B023
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least 16 pixels" in details


def test_errors_carry_the_right_status_and_say_what_is_accepted(client):
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    code, details = _code(lambda: client.ask("0" * 32, "Segment the liver."))
    assert code == grpc.StatusCode.NOT_FOUND and "does not exist or has expired" in details
    code, details = _code(lambda: client.create_session(b"GIF89a not an accepted image"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "PNG (8- or 16-bit), JPEG, TIFF or DICOM" in details
    code, details = _code(lambda: client.create_session(b"\x89PNG" + bytes(9 * 2**20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most" in details
    code, details = _code(lambda: client.ask(session.id, "   "))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in details
    code, details = _code(lambda: client.ask(session.id, "Segment the lesion inside the output of round 3."))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "round 3" in details
    code, details = _code(lambda: client.ask(session.id, "Segment the liver.", reference_round=2))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = _code(lambda: client.ask(session.id, "Segment the liver.", timeout=0.001))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    code, _ = _code(lambda: client.get_round(session.id, 7))
    assert code == grpc.StatusCode.NOT_FOUND
    assert client.ask(session.id, "Segment the liver.").number == 1  # still serving, nothing half-stored


def test_health_and_reflection_are_served(service):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(service[0]) as channel:
        request = health_pb2.HealthCheckRequest(service="mediround.v1.MediRound")
        health = health_pb2_grpc.HealthStub(channel).Check(request)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        assert {"mediround.v1.MediRound", "grpc.health.v1.Health"} <= names


def test_concurrent_dialogues_on_separate_sessions_each_stay_correct(client, predictor, phantom_root):
    conv = load(phantom_root / "test_hard.json")[1]
    image = phantom_root / conv.image
    local = _in_process(predictor, image, [r.question for r in conv.rounds])

    def dialogue(_):
        session = client.create_session(image)
        return [client.ask(session.id, r.question) for r in conv.rounds]

    with ThreadPoolExecutor(4) as pool:
        for served in pool.map(dialogue, range(4)):
            for s, lo in zip(served, local, strict=True):
                assert s.answer == lo.answer and s.number == round_number(lo.index)
                if lo.has_mask:
                    assert np.array_equal(MediRoundClient.mask(s), lo.mask)


def test_segment_is_one_stateless_round(client, predictor):
    image = REAL_SLICES / load(REAL_DIALOGUES)[0].image
    served = client.segment(image, FOUND)
    local = _in_process(predictor, image, [FOUND])[0]
    assert served.number == 1 and served.answer == local.answer and not served.session_id
    assert served.has_mask and np.array_equal(MediRoundClient.mask(served), local.mask)


def test_an_attached_front_serves_the_running_apps_and_stopping_it_leaves_them_running(service, client):
    """A second gRPC front (its own process, as a KubeRay front pod) attaches to the running applications:
    its rounds land in the same Redis, and stopping it leaves the applications serving the first front."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import ray

    svc = service[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--attach", "--address", f"127.0.0.1:{port}",
                             "--ray-address", ray.get_runtime_context().gcs_address, "--redis-url", svc.redis.url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={k: v for k, v in os.environ.items() if k != "MEDIROUND_TOKEN"})
    try:
        assert f"mediround serving on 127.0.0.1:{port}" in proc.stdout.readline()
        image = REAL_SLICES / load(REAL_DIALOGUES)[0].image
        with MediRoundClient(f"127.0.0.1:{port}") as attached:
            session = attached.create_session(image)
            first = attached.ask(session.id, FOUND)
        assert first.has_mask and client.rounds(session.id)[0].answer == first.answer  # one store, one model
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    second = client.ask(session.id, "Segment the lesion inside it.")  # the applications still run
    assert second.number == 2 and second.reference_round == 1


def test_every_series_is_scraped_where_a_prometheus_would_scrape_it(service, client):
    """The front's series from its metrics port; the replicas' from the Ray node's metrics export port, where
    Ray's metrics agent serves them (each replica process records into Ray, not into a registry of its own)."""
    import time
    import urllib.request

    options = service[1].options
    session = client.create_session(REAL_SLICES / load(REAL_DIALOGUES)[0].image)
    client.ask(session.id, FOUND)
    client.ask(session.id, "Segment the lesion inside it.")
    with pytest.raises(grpc.RpcError):
        client.ask(session.id, "Segment the lesion inside the output of round 9.")

    def scrape(port: int) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    front = scrape(options.metrics_port)
    for series in ('mediround_stage_seconds_count{stage="round"}', 'mediround_stage_seconds_count{stage="encode"}',
                   'mediround_stage_seconds_count{stage="reason"}', 'mediround_stage_seconds_count{stage="decode"}',
                   "mediround_rounds_total", "mediround_round_index_bucket",
                   'mediround_errors_total{code="FAILED_PRECONDITION",method="CreateRound"}'):
        assert series in front, series
    replicas = ["ray_mediround_batch_size_bucket", "ray_mediround_encoder_cache_total",
                "ray_mediround_encoder_computed_total", "ray_mediround_dialogue_cache_total"]
    deadline = time.monotonic() + 60  # the agent gathers what replicas record every few seconds
    while [s for s in replicas if s not in (ray := scrape(options.ray_metrics_port))] and time.monotonic() < deadline:
        time.sleep(2)
    assert [s for s in replicas if s not in ray] == []
    assert 'stage="reason"' in ray and 'tier="' in ray and 'outcome="' in ray


def _held_by_every_replica(key: str, session_id: str) -> dict[str, list]:
    """Each deployment's ``CachedData`` from every one of its replicas (asked until each has answered)."""
    from ray import serve

    held = {}
    for app, deployment in (("encoder", "ImageEncoder"), ("reasoner", "Reasoner"), ("segmenter", "Segmenter")):
        replicas = serve.status().applications[app].deployments[deployment].replica_states["RUNNING"]
        handle, answers = serve.get_app_handle(app), {}
        for _ in range(200):  # unrouted calls spread over the replicas
            answer = handle.holds.remote(key, session_id).result()
            answers[answer.replica] = answer
            if len(answers) == replicas:
                break
        assert len(answers) == replicas, f"{deployment}: heard from {len(answers)} of {replicas} replicas"
        held[deployment] = [a.image or a.dialogue for a in answers.values()]
    return held


def test_a_deleted_sessions_image_and_dialogue_leave_every_replica(service, client):
    import hashlib
    import time

    picture = Image.open(REAL_SLICES / load(REAL_DIALOGUES)[0].image).convert("RGB")
    picture.putpixel((0, 0), (7, 7, 7))  # an image no other test's session shares
    png = io.BytesIO()
    picture.save(png, format="PNG")
    key = hashlib.sha256(png.getvalue()).hexdigest()  # the image's name in the store without tenants
    session = client.create_session(png.getvalue())
    client.ask(session.id, FOUND)
    client.ask(session.id, "Segment the lesion inside it.")
    held = _held_by_every_replica(key, session.id)
    assert held["ImageEncoder"] == [True] and held["Segmenter"] == [True] and sorted(held["Reasoner"]) == [False, True]

    assert client.delete(session.id)
    deadline = time.monotonic() + EncoderSettings().sweep_interval_s + 10
    while True:
        held = _held_by_every_replica(key, session.id)
        if not any(any(v) for v in held.values()):
            break
        assert time.monotonic() < deadline, f"still held after the sweep interval: {held}"
        time.sleep(1)
