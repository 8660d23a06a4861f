"""The HTTP API against the real ``mediround serve --http`` (no browser): what it answers is what the gRPC API
answers, field for field and byte for byte; and the gateway's process imports no model stack."""

import subprocess
import sys

import grpc
import pytest

from mediround.v1 import mediround_pb2 as pb
from model.data.real import REAL_SLICES
from tests.serving.http.http_client import events, open_request, request

pytestmark = pytest.mark.slow

IMAGE = REAL_SLICES / "images" / "amos_0006_90.png"


def test_a_dialogue_over_http_is_the_grpc_dialogue(served, client):
    created = request(f"{served.url}/api/v1/sessions", "POST", IMAGE.read_bytes(), {"Content-Type": "image/png"})
    assert created.status == 201
    sid = created.json()["id"]
    assert created.json()["width"] == client.session(sid).width == 512

    connection = open_request(f"{served.url}/api/v1/sessions/{sid}/rounds", "POST",
                              b'{"question": "Segment the aorta.", "request_id": "http-1"}',
                              {"Accept": "text/event-stream", "Content-Type": "application/json"})
    streamed = list(events(connection.getresponse()))
    connection.close()
    assert [kind for kind, _ in streamed] == ["answer", "round"]
    r = client.get_round(sid, 1)
    assert streamed[0][1] == {"answer": r.answer}
    body = streamed[1][1]
    assert (body["answer"], body["has_mask"], body["request_id"]) == (r.answer, r.has_mask, "http-1")
    assert body["quality"] == pytest.approx(r.quality) and body["corrected"] == r.corrected
    assert body["box"] == {"x_min": r.box.x_min, "y_min": r.box.y_min, "x_max": r.box.x_max, "y_max": r.box.y_max}

    again = request(f"{served.url}/api/v1/sessions/{sid}/rounds", "POST",
                    {"question": "Segment the aorta.", "request_id": "http-1"})
    assert again.status == 200 and again.json()["number"] == 1 and client.session(sid).round_count == 1

    assert request(f"{served.url}/api/v1/sessions/{sid}/rounds/1/mask.png").body == r.mask_png
    image = request(f"{served.url}/api/v1/sessions/{sid}/image")
    assert image.body == client.image(sid).image == IMAGE.read_bytes()
    assert image.headers["content-type"] == "image/png"
    listed = request(f"{served.url}/api/v1/sessions/{sid}/rounds").json()["rounds"]
    assert [(x["number"], x["answer"]) for x in listed] == [(x.number, x.answer) for x in client.rounds(sid)]

    with pytest.raises(grpc.RpcError) as seg:  # not a DICOM session (or no SEG support yet): as the server says
        client.stub.GetSegmentation(pb.GetSegmentationRequest(session_id=sid))
    reply = request(f"{served.url}/api/v1/sessions/{sid}/segmentation")
    assert reply.json()["error"]["code"] == seg.value.code().name
    assert reply.json()["error"]["message"] == seg.value.details()

    reused = request(f"{served.url}/api/v1/sessions/{sid}/rounds", "POST",
                     {"question": "Segment the liver.", "request_id": "http-1"})
    assert reused.status == 409 and reused.json()["error"]["code"] == "ALREADY_EXISTS"

    assert request(f"{served.url}/api/v1/sessions/{sid}", "DELETE").json() == {"deleted": True}
    gone = request(f"{served.url}/api/v1/sessions/{sid}")
    assert gone.status == 404 and gone.json()["error"]["code"] == "NOT_FOUND"


def test_the_gateway_imports_no_model_stack():
    code = ("import sys, serving.http.server\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'kornia', "
            "'segment_anything', 'peft')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
