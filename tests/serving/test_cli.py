import subprocess
import sys

import pytest

from model.data.real import REAL_SLICES
from serving.cli import main
from tests.conftest import require_brain_templates


def run(*args):
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args", [[], ["data"], ["data", "validate"], ["data", "phantoms"], ["data", "show"],
                                  ["train"], ["train", "recipe"], ["eval"], ["serve"], ["token"], ["chat"], ["demo"]])
def test_every_subcommand_has_help(args):
    r = run(*args, "--help")
    assert r.returncode == 0 and "usage: mediround" in r.stdout


def test_demo_holds_dialogues_with_the_shipped_model(tmp_path, capsys):
    require_brain_templates()
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "== held-out phantom" in out and "== real CT slice" in out and "== held-out real brain slice" in out
    scripted = out.split("\n== DICOM")[0]  # the three scripted dialogues (the DICOM one follows)
    reported = scripted.count("\n    -> ")  # each round answered (with its Dice), or refused and its dialogue stopped
    assert scripted.count("Dice against the ground truth") + scripted.count("-> refused: ") == reported
    assert scripted.count("-> refused: ") == scripted.count("(the scripted dialogue stops here)")
    assert scripted.count("Dice against the ground truth") >= 3  # at least round 1 of each of the three dialogues
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in ("phantom", "real", "brain"))


def test_serve_prints_its_address_serves_health_chat_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import socket

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    port, metrics_port = ports
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # embedded Redis
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--address", f"127.0.0.1:{port}",
                             "--data-dir", str(tmp_path / "data"),  # not the user's data directory
                             "--metrics-port", str(metrics_port), "--audit-log", str(tmp_path / "audit.jsonl")],
                            stdout=subprocess.PIPE, stderr=(tmp_path / "stderr").open("w"), text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"mediround serving on 127.0.0.1:{port}" in line
        import psutil

        listening = {c.laddr.port: c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert {listening[port], listening[metrics_port]} <= {"127.0.0.1", "::ffff:127.0.0.1"}  # loopback only
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        image = REAL_SLICES / "images" / sorted(p.name for p in (REAL_SLICES / "images").iterdir())[0]
        chat = subprocess.run([sys.executable, "-m", "serving.cli", "chat", str(image), "--address",
                               f"127.0.0.1:{port}", "--save-masks", str(tmp_path)],
                              input="Segment the left lung.\nSegment the lesion inside round 9.\n"
                                    "Segment the lesion inside it.\n\n", capture_output=True, text=True, timeout=120)
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.count("[mask]") == 2 and "[SEG]" not in chat.stdout and "reference round 1" in chat.stdout
        assert len(list(tmp_path.glob("*_round*.png"))) == 2
        # a refused round is one line, and the dialogue goes on past it
        assert chat.stderr.splitlines() == ["error: FAILED_PRECONDITION: the question refers to round 9, but the "
                                            "dialogue has rounds 1..1"]
        text = tmp_path / "notes.txt"
        text.write_text("not an image")
        refused = subprocess.run([sys.executable, "-m", "serving.cli", "chat", str(text), "--address",
                                  f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.splitlines() == ["error: INVALID_ARGUMENT: the bytes are not an image of a known format; "
                                               "send PNG (8- or 16-bit), JPEG, TIFF or DICOM (a Part-10 file)"]
        from pydicom.data import get_testdata_file

        dicom = subprocess.run([sys.executable, "-m", "serving.cli", "chat", get_testdata_file("CT_small.dcm"),
                                "--window", "ct-bone", "--address", f"127.0.0.1:{port}", "--save-masks",
                                str(tmp_path / "dicom")], input="Segment the vertebra.\n\n", capture_output=True,
                               text=True, timeout=120)
        assert dicom.returncode == 0, dicom.stderr
        assert "DICOM CT frame 1/1, window 400/1800 (preset:ct-bone)" in dicom.stdout
        assert len(list((tmp_path / "dicom").glob("*_seg.dcm"))) == 1
        import json

        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        calls = [(e["method"].rsplit("/", 1)[1], e["status"]) for e in audit]
        assert ("CreateSession", "OK") in calls and calls.count(("CreateRound", "OK")) == 3
        assert ("GetSegmentation", "OK") in calls
        assert "lung" not in (tmp_path / "audit.jsonl").read_text()  # no question reaches it
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    logged = (tmp_path / "stderr").read_text()
    assert "CompressedSamples" not in logged and "vertebra" not in logged  # the DICOM's patient, the question
    progress = [line.split("serving.runtime.service: ", 1)[1].split(" (")[0] for line in logged.splitlines()
                if " INFO serving.runtime.service: " in line]
    assert progress == ["starting the dialogue store", "starting Ray", "deploying the model's applications", "ready",
                        "stopped"]
    assert "Token authentication" not in logged and "Started Serve" not in logged  # Ray's notices: its log files
    assert proc.stdout.read() == ""  # after its one line, nothing: no "(raylet) ..." on the way down


def test_token_prints_a_new_token_once_and_the_entry_that_admits_it(tmp_path, capsys):
    from serving.front.tenants import TenantRegistry

    assert main(["token", "st-marys-pacs", "--max-sessions", "5"]) == 0
    out, err = capsys.readouterr()
    token = err.strip().splitlines()[-1]
    assert token not in out  # the entry, which goes into the file, holds only the hash
    (tmp_path / "tenants.yaml").write_text("tenants:\n" + out)
    tenant = TenantRegistry.from_file(tmp_path / "tenants.yaml").authenticate(f"Bearer {token}")
    assert (tenant.name, tenant.max_sessions) == ("st-marys-pacs", 5)
    assert main(["token", "St Mary's"]) == 2
    assert "tenant name is 1-63" in capsys.readouterr().err


def test_chat_says_in_one_line_what_is_wrong_with_its_command_line_or_that_no_service_answers(tmp_path):
    import socket

    image = REAL_SLICES / "images" / sorted(p.name for p in (REAL_SLICES / "images").iterdir())[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed

    def chat(*args):
        return subprocess.run([sys.executable, "-m", "serving.cli", "chat", *args, "--address", f"127.0.0.1:{port}"],
                              input="\n", capture_output=True, text=True, timeout=120)

    bare = chat(str(image), "--window", "40")
    assert bare.returncode == 2 and bare.stderr.splitlines() == [
        "mediround: error: --window takes a preset name (ct-abdomen, ct-lung, ct-brain, ct-bone, ...) or CENTRE/WIDTH "
        "such as 40/400; got '40'"]
    missing = chat(str(tmp_path / "missing.png"))
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"mediround: error: {tmp_path / 'missing.png'}: no such file"]
    folder = chat(str(tmp_path))
    assert folder.returncode == 2 and folder.stderr.splitlines() == [f"mediround: error: {tmp_path}: is a directory"]
    nobody = chat(str(image))
    assert nobody.returncode == 1 and nobody.stderr.splitlines() == [
        f"error: UNAVAILABLE: no MediRound service answers at 127.0.0.1:{port} (is 'mediround serve' running there?)"]
