"""The HTTP gateway without a browser: gRPC status -> HTTP status for every code, the server's message in the body,
the bearer token passed through to the server's own auth, CORS off unless named, the event stream's order (the
answer leaves before the round exists) and an error after the answer, bounded bodies, uploads passed through.
Real HTTP and real gRPC over loopback; the gRPC servicer is scripted (backend.py), the interceptor is the server's."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from mediround.v1 import mediround_pb2 as pb
from model.data.real import REAL_SLICES
from serving.http.errors import HTTP_STATUS
from serving.http.examples import example_cases
from serving.http.render import levels, render
from tests.serving.http.backend import CODES, IMAGE_PNG, MASK_PNG, SESSION, TOKEN
from tests.serving.http.http_client import events, open_request, request

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "https://school.example"


@pytest.fixture(scope="module")
def gateway(backend):
    return backend.gateway()


def ask(gateway, question: str, headers=None):
    return request(f"{gateway}/api/v1/sessions/{SESSION}/rounds", "POST",
                   {"question": question, "request_id": "r1"}, {**AUTH, **(headers or {})})


def test_the_mapping_is_the_documented_table():
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    named = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
             "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429, "ABORTED": 409,
             "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "UNIMPLEMENTED": 501, "INTERNAL": 500}
    assert {code: HTTP_STATUS[grpc.StatusCode[code]] for code in named} == named


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.name)
def test_every_status_code_maps_and_carries_the_servers_message(gateway, code):
    reply = ask(gateway, code.name)
    assert reply.status == HTTP_STATUS[code]
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": {"code": code.name, "status": HTTP_STATUS[code],
                                      "message": f"the server says {code.name}"}}


def test_the_token_goes_through_to_the_servers_auth(backend, gateway):
    refused = ask(gateway, "fine", headers={"Authorization": ""})
    assert refused.status == 401 and refused.json()["error"]["code"] == "UNAUTHENTICATED"
    assert "missing or unknown token" in refused.json()["error"]["message"]  # the interceptor's own words
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert ask(gateway, "fine", headers={"Authorization": "Bearer wrong"}).status == 401
    ok = ask(gateway, "fine")
    assert ok.status == 200 and ok.json()["number"] == 1
    assert backend.servicer.metadata[-1]["authorization"] == f"Bearer {TOKEN}"


def test_a_round_as_json(gateway):
    body = ask(gateway, "fine").json()
    assert body["answer"] == "It is [SEG]." and body["quality"] == 0.5 and body["corrected"] is True
    assert body["box"] == {"x_min": 1, "y_min": 2, "x_max": 3, "y_max": 3} and body["reference_round"] == 0
    assert body["mask_url"] == f"/api/v1/sessions/{SESSION}/rounds/1/mask.png" and "mask_png" not in body


def test_the_mask_is_the_servers_bytes(gateway):
    reply = request(f"{gateway}/api/v1/sessions/{SESSION}/rounds/1/mask.png", headers=AUTH)
    assert reply.status == 200 and reply.headers["content-type"] == "image/png" and reply.body == MASK_PNG
    assert request(f"{gateway}/api/v1/sessions/{SESSION}/rounds/2/mask.png", headers=AUTH).status == 404
    assert request(f"{gateway}/api/v1/sessions/{SESSION}/rounds/99999999999/mask.png", headers=AUTH).status == 400


def test_the_answer_event_leaves_before_the_round_exists(backend, gateway):
    backend.servicer.release.clear()
    connection = open_request(f"{gateway}/api/v1/sessions/{SESSION}/rounds", "POST",
                              b'{"question": "hold", "request_id": "r1"}',
                              {**AUTH, "Accept": "text/event-stream", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    assert next(stream) == ("answer", {"answer": "It is [SEG]."})  # the servicer is still holding the round
    backend.servicer.release.set()
    kind, data = next(stream)
    assert kind == "round" and data["number"] == 1 and data["mask_url"].endswith("/rounds/1/mask.png")
    assert list(stream) == []
    connection.close()


def test_an_error_after_the_answer_is_an_error_event(gateway):
    connection = open_request(f"{gateway}/api/v1/sessions/{SESSION}/rounds", "POST",
                              b'{"question": "fail after answer"}',
                              {**AUTH, "Accept": "text/event-stream", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert list(events(response)) == [
        ("answer", {"answer": "It is [SEG]."}),
        ("error", {"error": {"code": "UNAVAILABLE", "status": 503,
                             "message": "the mask decoder's replica went away"}})]
    connection.close()


def test_an_error_before_any_event_is_an_http_status(gateway):
    reply = ask(gateway, "FAILED_PRECONDITION", headers={"Accept": "text/event-stream"})
    assert reply.status == 409 and reply.json()["error"]["code"] == "FAILED_PRECONDITION"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"question": 3}', b'{"questoin": "x"}',
                                  b'{"question": "x", "session_id": "other"}'])
def test_a_body_that_is_not_a_round_request_is_400(gateway, body):
    reply = request(f"{gateway}/api/v1/sessions/{SESSION}/rounds", "POST", body,
                    {**AUTH, "Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_an_upload_passes_through_raw_with_its_fields(backend, gateway):
    dicom = b"\0" * 128 + b"DICM" + bytes(range(256))
    reply = request(f"{gateway}/api/v1/sessions?frame=2&window_preset=ct-lung&ttl_seconds=60&metadata.course=anat",
                    "POST", dicom, {**AUTH, "Content-Type": "application/dicom"})
    assert reply.status == 201 and reply.headers["location"] == f"/api/v1/sessions/{SESSION}"
    sent = backend.servicer.requests[-1]
    assert sent.image == dicom and sent.ttl_seconds == 60 and dict(sent.metadata) == {"course": "anat"}
    assert sent.dicom_options == pb.DicomOptions(frame=2, window_preset="ct-lung")


def test_an_upload_as_a_form(backend, gateway):
    image = bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n"  # binary, with what looks like a boundary
    boundary = "xyzBOUNDARYxyz"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"window_center\"\r\n\r\n40\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"window_width\"\r\n\r\n400\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"frame\"\r\n\r\n\r\n"  # empty: not given
            f"--{boundary}--\r\n").encode()
    reply = request(f"{gateway}/api/v1/sessions", "POST", body,
                    {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 201, reply.body
    sent = backend.servicer.requests[-1]
    assert sent.image == image and sent.dicom_options == pb.DicomOptions(window_center=40, window_width=400)


@pytest.mark.parametrize("query", ["colour=red", "frame=two", "window_center=nan", "ttl_seconds=1.5"])
def test_a_bad_field_is_400_before_the_server(backend, gateway, query):
    before = len(backend.servicer.requests)
    reply = request(f"{gateway}/api/v1/sessions?{query}", "POST", b"PNG", AUTH)
    assert reply.status == 400 and reply.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert len(backend.servicer.requests) == before


def test_the_servers_refusal_of_an_image_comes_back_as_it_said(gateway):
    reply = request(f"{gateway}/api/v1/sessions", "POST", b"GIF89a....", AUTH)
    assert reply.status == 400
    assert reply.json()["error"] == {"code": "INVALID_ARGUMENT", "status": 400,
                                     "message": "images must be PNG (8- or 16-bit), JPEG or TIFF; got GIF"}


def test_bodies_are_bounded(backend):
    small = backend.gateway(max_body_bytes=1000)
    reply = request(f"{small}/api/v1/sessions", "POST", b"x" * 1001, AUTH)
    assert reply.status == 413 and reply.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    chunked = open_request(f"{small}/api/v1/sessions", "POST", iter([b"x" * 600, b"x" * 600]),
                           AUTH)  # no Content-Length: chunked, and counted as it comes
    assert chunked.getresponse().status == 413
    assert request(f"{small}/api/v1/sessions/{SESSION}/rounds", "POST", {"question": "x" * 70_000}, AUTH).status == 413


def test_cors_is_off_by_default(gateway):
    reply = request(f"{gateway}/api/v1/config", headers={"Origin": ORIGIN})
    assert reply.status == 200 and "access-control-allow-origin" not in reply.headers
    preflight = request(f"{gateway}/api/v1/sessions", "OPTIONS",
                        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_named_origins_only(backend):
    open_to = backend.gateway(cors_origins=(ORIGIN,))
    reply = request(f"{open_to}/api/v1/config", headers={"Origin": ORIGIN})
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in request(f"{open_to}/api/v1/config",
                                                        headers={"Origin": "https://other.example"}).headers
    preflight = request(f"{open_to}/api/v1/sessions", "OPTIONS",
                        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                 "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 200 and "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert ORIGIN in request(f"{open_to}/").headers["content-security-policy"]  # it may frame the page


def test_a_named_origin_is_checked():
    from serving.http.server import HttpOptions

    for origin in ("*", "school.example", "https://school.example/"):
        with pytest.raises(ValueError, match="CORS origin"):
            HttpOptions(port=0, cors_origins=(origin,))


def test_the_dicom_seg_download(gateway):
    reply = request(f"{gateway}/api/v1/sessions/{SESSION}/segmentation", headers=AUTH)
    assert reply.status == 200 and reply.headers["content-type"] == "application/dicom"
    assert reply.body[128:132] == b"DICM" and "attachment" in reply.headers["content-disposition"]
    assert reply.headers["x-rounds"] == "1,3" and reply.headers["x-skipped-rounds"] == "2"
    other = request(f"{gateway}/api/v1/sessions/{'f' * 32}/segmentation", headers=AUTH)
    assert other.status == 409 and other.json()["error"]["message"] == "the session was not opened on DICOM"


def test_a_method_without_a_route_is_405(gateway):
    assert request(f"{gateway}/api/v1/sessions/{SESSION}/rounds/1", "DELETE", headers=AUTH).status == 405


def test_the_session_its_image_its_rounds_and_delete(gateway):
    session = request(f"{gateway}/api/v1/sessions/{SESSION}", headers=AUTH).json()
    assert session["id"] == SESSION and "dicom" not in session and session["url"] == f"/api/v1/sessions/{SESSION}"
    image = request(f"{gateway}/api/v1/sessions/{SESSION}/image", headers=AUTH)
    assert image.headers["content-type"] == "image/png" and image.body == IMAGE_PNG
    assert request(f"{gateway}/api/v1/sessions/{SESSION}/image/levels", headers=AUTH).json() == {
        "bits": 8, "channels": 1, "minimum": 100.0, "maximum": 100.0, "windowable": False}
    rounds = request(f"{gateway}/api/v1/sessions/{SESSION}/rounds", headers=AUTH).json()["rounds"]
    assert [r["number"] for r in rounds] == [1] and rounds[0]["mask_url"].endswith("/rounds/1/mask.png")
    assert request(f"{gateway}/api/v1/sessions/{SESSION}", "DELETE", headers=AUTH).json() == {"deleted": True}
    assert request(f"{gateway}/api/v1/sessions/{'e' * 32}", "DELETE", headers=AUTH).json() == {"deleted": False}
    missing = request(f"{gateway}/api/v1/sessions/{'e' * 32}", headers=AUTH)
    assert missing.status == 404 and missing.json()["error"]["message"] == f"no session {'e' * 32}"


def test_the_page_and_its_settings(gateway):
    page = request(f"{gateway}/")
    assert page.status == 200 and b'<script type="module" src="static/js/main.js">' in page.body
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert request(f"{gateway}/static/js/main.js").headers["content-type"].startswith("text/javascript")
    config = request(f"{gateway}/api/v1/config").json()
    assert config["jcm_beta"] == 0.6  # the shipped checkpoint's JCMConfig.beta
    assert request(f"{gateway}/no/such/route").json()["error"]["code"] == "NOT_FOUND"


def test_the_example_cases(gateway):
    listed = request(f"{gateway}/api/v1/examples").json()["examples"]
    assert [c["id"] for c in listed] == list(example_cases())
    case = listed[0]
    assert case["rounds"][1]["reference_round"] == 1  # "the vessel running alongside it": round 1
    truth = request(gateway + case["rounds"][0]["truth_url"])
    assert truth.status == 200 and truth.body == example_cases()[case["id"]].rounds[0].truth.read_bytes()
    assert request(gateway + case["image_url"]).body == (REAL_SLICES / "images" / "amos_0006_90.png").read_bytes()
    assert request(f"{gateway}/api/v1/examples/{case['id']}/rounds/9/truth").status == 404
    assert request(f"{gateway}/api/v1/examples/nope/image").status == 404


def _png(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_16_bit_window_by_hand():
    image = _png(np.array([[0, 1000, 1100], [1200, 1300, 40000]], dtype=np.uint16))
    assert levels(image).bits == 16 and (levels(image).minimum, levels(image).maximum) == (0, 40000)
    # centre 1150, width 200: 1050 is black and 1250 white; 1100 is a quarter up, 1200 three quarters
    assert _pixels(render(image, 1150, 200)).tolist() == [[0, 0, 64], [191, 255, 255]]
    assert _pixels(render(image)).tolist() == [[0, 6, 7], [8, 8, 255]]  # full range, as the model sees it
    with pytest.raises(Exception, match="width must be greater than 0"):
        render(image, 100, 0)


def test_an_8_bit_image_renders_as_it_is():
    a = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert levels(_png(a)).bits == 8 and not levels(_png(a)).windowable
    assert np.array_equal(_pixels(render(_png(a))), a)
