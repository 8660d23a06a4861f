"""PACS endpoints and their DICOMweb client, against a real Orthanc (and, for answers Orthanc will not give on
demand, a scripted HTTP server replaying what a PACS sends)."""

import asyncio
import io
import json
import logging
import os
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from serving.dicom.endpoints import PacsEndpoint, load_pacs_file
from serving.dicom.pacs import FoundInstance, PacsClient, PacsRegistry
from serving.errors import (
    DicomTooLarge,
    InvalidInstanceReference,
    PacsInstanceNotFound,
    PacsRefused,
    PacsUnavailable,
    UnknownPacs,
)
from serving.front.status import status_of
from tests.conftest import require_system_file
from tests.serving.dicom.orthanc import free_port

CT = "693_UNCR.dcm"  # a real 512x512 CT, uncompressed
JPEG_2000 = "MR2_J2KR.dcm"
JPEG_LS = "emri_small_jpeg_ls_lossless.dcm"


def _real(name: str) -> pydicom.Dataset:
    """A real instance from pydicom-data under new UIDs: the session's Orthanc is shared by every test, and it
    keeps the first content stored under a SOP instance UID."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _reference(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


@pytest.fixture
def pacs(orthanc) -> PacsClient:
    return PacsClient(orthanc.endpoint())


def test_a_real_ct_stored_then_fetched_by_reference_is_the_same_instance(pacs):
    ct = _real(CT)
    assert pacs.store(ct) == ct.SOPInstanceUID
    data = pacs.fetch_instance(*_reference(ct))
    assert data[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.SOPInstanceUID == ct.SOPInstanceUID
    np.testing.assert_array_equal(back.pixel_array, ct.pixel_array)


@pytest.mark.parametrize("name", [JPEG_2000, JPEG_LS])
def test_a_compressed_instance_comes_back_in_its_own_transfer_syntax(pacs, name):
    source = _real(name)
    pacs.store(source)
    back = pydicom.dcmread(io.BytesIO(pacs.fetch_instance(*_reference(source))))
    assert back.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert back.PixelData == source.PixelData  # the same compressed frames: nothing transcoded them


def test_qido_finds_an_instance_in_its_study_by_modality(pacs):
    ct = _real(CT)
    pacs.store(ct)
    found = FoundInstance(*_reference(ct)[:2], ct.SOPInstanceUID, ct.SOPClassUID, "CT")
    assert pacs.find_instances(ct.StudyInstanceUID) == [found]
    assert pacs.find_instances(ct.StudyInstanceUID, modality="CT") == [found]
    assert pacs.find_instances(ct.StudyInstanceUID, modality="SEG") == []
    assert pacs.find_instances(generate_uid()) == []


def test_storing_the_same_instance_twice_keeps_one(pacs, orthanc):
    ct, before = _real(CT), orthanc.instance_count()
    assert pacs.store(ct) == pacs.store(ct) == ct.SOPInstanceUID
    assert len(pacs.find_instances(ct.StudyInstanceUID)) == 1
    assert orthanc.instance_count() == before + 1


def test_an_unknown_instance_is_not_found(pacs):
    ct = _real(CT)
    pacs.store(ct)
    with pytest.raises(PacsInstanceNotFound, match="PACS 'orthanc' has no such instance") as e:
        pacs.fetch_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, generate_uid())
    assert status_of(e.value).name == "NOT_FOUND"


@pytest.mark.parametrize("uid", ["", "1.2/../../../system", "1.2.3?x=1", "1." + "2" * 64, "1..2", "1.2.3."])
def test_a_reference_that_is_not_a_uid_is_refused_before_the_pacs_is_asked(pacs, uid):
    with pytest.raises(InvalidInstanceReference) as e:
        pacs.fetch_instance("1.2.3", "1.2.4", uid)
    assert status_of(e.value).name == "INVALID_ARGUMENT"


def test_the_size_limit_is_enforced_while_reading(pacs):
    ct = _real(CT)
    pacs.store(ct)
    size = len(pacs.fetch_instance(*_reference(ct)))
    assert pacs.fetch_instance(*_reference(ct), max_bytes=size + 1000)  # the multipart wrapping counts, a little
    with pytest.raises(DicomTooLarge, match=f"over the {size - 1} byte limit") as e:
        pacs.fetch_instance(*_reference(ct), max_bytes=size - 1)  # Orthanc declares its length: refused unread
    assert status_of(e.value).name == "RESOURCE_EXHAUSTED"


def test_the_size_limit_holds_for_an_answer_of_undeclared_length(scripted):
    scripted.answer = (200, {"Content-Length": None, "Content-Type": "application/dicom"}, bytes(8 * 2**20))
    started = time.perf_counter()
    with pytest.raises(DicomTooLarge, match="over the 2097152 byte limit"):
        _scripted_client(scripted).fetch_instance("1.2.3", "1.2.4", "1.2.5", max_bytes=2 * 2**20)
    assert time.perf_counter() - started < 5


def test_the_async_forms_run_the_calls_off_the_loop(pacs):
    ct = _real(CT)

    async def scenario():
        await pacs.store_async(ct)
        found = await pacs.find_instances_async(ct.StudyInstanceUID, modality="CT")
        return found, await pacs.fetch_instance_async(*_reference(ct))

    found, data = asyncio.run(scenario())
    assert [f.sop_instance_uid for f in found] == [ct.SOPInstanceUID]
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == ct.SOPInstanceUID


def test_the_log_names_the_endpoint_and_never_a_uid_or_an_address(pacs, orthanc, caplog):
    ct = _real(CT)
    with caplog.at_level(logging.INFO):  # dicomweb-client logs UIDs at INFO and ERROR: pacs.py silences it
        pacs.store(ct)
        pacs.fetch_instance(*_reference(ct))
        pacs.find_instances(ct.StudyInstanceUID)
    assert "pacs orthanc store: HTTP 200" in caplog.text and "pacs orthanc fetch: HTTP 200" in caplog.text
    for secret in (*_reference(ct), str(orthanc.http_port), "127.0.0.1", "http"):
        assert secret not in caplog.text


def test_an_instance_orthanc_refuses_is_failed_precondition(pacs):
    broken = _real(CT)
    del broken.SOPClassUID  # Orthanc's STOW needs it: HTTP 400
    with pytest.raises(PacsRefused, match="refused to store the instance: HTTP 400") as e:
        pacs.store(broken)
    assert status_of(e.value).name == "FAILED_PRECONDITION"


def test_refused_credentials_are_failed_precondition(orthanc_with_users):
    ct = _real(CT)
    right = PacsClient(orthanc_with_users.endpoint("locked"))
    assert right.store(ct) == ct.SOPInstanceUID
    assert right.fetch_instance(*_reference(ct))[128:132] == b"DICM"
    for wrong in (orthanc_with_users.endpoint("locked", password="not-it"),
                  orthanc_with_users.endpoint("locked", username=None, password=None),
                  orthanc_with_users.endpoint("locked", username=None, password=None, token="not-a-token")):
        client = PacsClient(wrong)
        for call in (lambda: client.fetch_instance(*_reference(ct)), lambda: client.store(ct),  # noqa: B023
                     lambda: client.find_instances(ct.StudyInstanceUID)):  # noqa: B023
            with pytest.raises(PacsRefused, match="the server's credentials for PACS 'locked' were refused") as e:
                call()
            assert status_of(e.value).name == "FAILED_PRECONDITION"


def test_an_unreachable_pacs_is_unavailable_after_the_retries_and_the_message_has_no_address(caplog):
    port = free_port()  # nobody listens there
    caplog.set_level(logging.INFO)
    client = PacsClient(PacsEndpoint(name="gone", url=f"http://127.0.0.1:{port}/dicom-web", retries=2,
                                     backoff_s=0.05, connect_timeout_s=1))
    ct = _real(CT)
    for call in (lambda: client.fetch_instance(*_reference(ct)), lambda: client.store(ct),
                 lambda: client.find_instances(ct.StudyInstanceUID)):
        started = time.perf_counter()
        with pytest.raises(PacsUnavailable, match="PACS 'gone' could not be reached") as e:
            call()
        assert time.perf_counter() - started >= 0.15  # waited 0.05, then 0.1 s: two retries
        assert status_of(e.value).name == "UNAVAILABLE"
        message = str(e.value)
        assert "after 2 retries" in message
        assert not any(part in message for part in ("127.0.0.1", str(port), "http", "dicom-web", "localhost"))
        assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained error carries the URL
    assert "pacs gone fetch: ConnectionError, 0 bytes" in caplog.text and "2 retries" in caplog.text
    assert not any(part in caplog.text for part in ("127.0.0.1", str(port), ct.StudyInstanceUID))


class _ScriptedPacs(BaseHTTPRequestHandler):
    """Answers every request with the server's ``answer`` (status, headers, body) and counts the requests."""

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1
        status, headers, body = self.server.answer
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            if value is not None:  # None: leave it out (no Content-Length: the body ends when the connection does)
                self.send_header(key, value)
        self.end_headers()
        with suppress(OSError):  # the client stopped reading (a size limit)
            self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@contextmanager
def _scripted_pacs(tls: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedPacs)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.hits, server.answer = 0, (200, {}, b"")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def scripted():
    with _scripted_pacs() as server:
        yield server


def _scripted_client(server, **options) -> PacsClient:
    options = {"retries": 2, "backoff_s": 0.01, **options}
    return PacsClient(PacsEndpoint(name="scripted", url=f"http://127.0.0.1:{server.server_port}/dicom-web", **options))


@pytest.mark.parametrize("status", [503, 500, 429])
def test_5xx_and_429_are_retried_then_unavailable(scripted, status):
    scripted.answer = (status, {}, b"busy")
    client, ct = _scripted_client(scripted), _real(CT)
    for call in (lambda: client.fetch_instance(*_reference(ct)), lambda: client.store(ct),
                 lambda: client.find_instances(ct.StudyInstanceUID)):
        scripted.hits = 0
        with pytest.raises(PacsUnavailable, match=f"PACS 'scripted' answered HTTP {status} after 2 retries"):
            call()
        assert scripted.hits == 3


# What Orthanc 1.10 answers a STOW of an instance it will not store (here: one from another study), verbatim.
ORTHANC_409 = {"00080005": {"Value": ["ISO_IR 100"], "vr": "CS"}, "00081199": {"vr": "SQ"},
               "00081198": {"vr": "SQ", "Value": [{"00081150": {"Value": ["1.2.840.10008.5.1.4.1.1.2"], "vr": "UI"},
                                                   "00081155": {"Value": ["1.2.3"], "vr": "UI"},
                                                   "00081197": {"Value": [272], "vr": "US"}}]}}


def test_a_stow_failure_names_its_reason_code(scripted):
    scripted.answer = (409, {}, json.dumps(ORTHANC_409).encode())  # Orthanc sends it without a Content-Type
    with pytest.raises(PacsRefused, match=r"refused to store the instance: failure reason 0x0110 \(processing fail"):
        _scripted_client(scripted).store(_real(CT))
    assert scripted.hits == 1  # a refusal is not retried


def test_a_stow_answered_duplicate_sop_instance_is_stored(scripted):
    duplicate = json.loads(json.dumps(ORTHANC_409).replace("272", str(0x0111)))
    scripted.answer = (409, {"Content-Type": "application/dicom+json"}, json.dumps(duplicate).encode())
    ct = _real(CT)
    assert _scripted_client(scripted).store(ct) == ct.SOPInstanceUID


def test_an_answer_that_is_not_dicom_is_failed_precondition(scripted):
    scripted.answer = (200, {"Content-Type": "text/html"}, b"<html>please log in</html>")
    with pytest.raises(PacsRefused, match="answered the fetch with what this server cannot read"):
        _scripted_client(scripted).fetch_instance("1.2.3", "1.2.4", "1.2.5")


def test_a_pacs_over_https_is_trusted_by_its_ca_bundle_only(tmp_path):
    openssl = require_system_file("/usr/bin/openssl", "openssl")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with _scripted_pacs(tls) as server:
        server.answer = (200, {"Content-Type": "application/dicom+json"}, b"[]")
        url = f"https://127.0.0.1:{server.server_port}/dicom-web"
        trusting = PacsClient(PacsEndpoint(name="tls", url=url, ca_bundle=tmp_path / "cert.pem"))
        assert trusting.find_instances("1.2.3") == []
        with pytest.raises(PacsRefused, match="the certificate of PACS 'tls' was not accepted") as e:
            PacsClient(PacsEndpoint(name="tls", url=url)).find_instances("1.2.3")
        assert status_of(e.value).name == "FAILED_PRECONDITION"
        assert server.hits == 1  # an unaccepted certificate is not retried (the trusting call was the one hit)


# The endpoints file.


def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_an_endpoints_file_loads_with_secrets_from_files_beside_it(tmp_path):
    _write(tmp_path, "password", "s3cret\n")  # a Secret made with echo ends in a newline
    _write(tmp_path, "token", "tok")
    path = _write(tmp_path, "pacs.yaml", """
pacs:
  - name: st-marys
    url: https://pacs.st-marys.example/dicom-web
    username: mediround
    password_file: password
    connect_timeout_s: 2
    retries: 1
  - name: lab
    url: http://10.0.0.5:8042/dicom-web
    token_file: token
""")
    endpoints, secret_files = load_pacs_file(path)
    assert [(e.name, e.username, e.password, e.token, e.retries) for e in endpoints] == [
        ("st-marys", "mediround", "s3cret", None, 1), ("lab", None, None, "tok", 3)]
    assert secret_files == (tmp_path / "password", tmp_path / "token")
    assert "s3cret" not in repr(endpoints) and "tok'" not in repr(endpoints)
    registry = PacsRegistry.from_file(path)
    assert registry.names == ["lab", "st-marys"]
    assert registry.client("lab").endpoint.token == "tok"


def test_an_unknown_endpoint_name_is_invalid_argument_listing_the_configured_ones(tmp_path):
    path = _write(tmp_path, "pacs.yaml", "pacs:\n  - {name: a, url: 'http://a/dw'}\n  - {name: b, url: 'http://b/dw'}")
    says = r"no PACS named 'http://evil/' is configured on this server \(configured: a, b\)"
    with pytest.raises(UnknownPacs, match=says) as e:
        PacsRegistry.from_file(path).client("http://evil/")
    assert status_of(e.value).name == "INVALID_ARGUMENT"


@pytest.mark.parametrize("text, says", [
    ("pacs: [oops", "is not YAML"),
    ("endpoints: []", "must hold 'pacs:'"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', passwd_file: x}", "PACS 1: accepted keys are"),
    ("pacs:\n  - {name: A!, url: 'http://a/dw'}", "PACS 1: name must be 1-63 lowercase"),
    ("pacs:\n  - {name: a, url: 'http://a/dw'}\n  - {name: a, url: 'http://b/dw'}", "PACS 2: the name 'a' is another"),
    ("pacs:\n  - {name: a, url: 'ftp://a/dw'}", "url must be an http:// or https:// URL"),
    ("pacs:\n  - {name: a, url: 'http://u:p@a/dw'}", "url must hold no credentials"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', username: u}", "give a username and a password, or a token"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', username: u, password_file: missing}", "password_file: .*missing "
                                                                                      "cannot be read"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', token_file: empty}", "token_file: .*empty is empty"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', ca_bundle: missing.pem}", "ca_bundle .*missing.pem is not a file"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', retries: 2.5}", "retries must be 0..10"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', read_timeout_s: '30'}", "must be numbers"),
    ("pacs:\n  - {name: a, url: 'http://a/dw', read_timeout_s: 0}", "must be > 0"),
])
def test_bad_entries_in_the_endpoints_file_are_refused_saying_where(tmp_path, text, says):
    _write(tmp_path, "empty", "\n")
    with pytest.raises(ValueError, match=says):
        load_pacs_file(_write(tmp_path, "pacs.yaml", text))


def test_a_rotated_secret_or_edited_file_takes_effect_without_a_restart(tmp_path, caplog):
    password = _write(tmp_path, "password", "old")
    path = _write(tmp_path, "pacs.yaml", "pacs: [{name: a, url: 'http://a/dw', username: u, password_file: password}]")
    registry = PacsRegistry.from_file(path)
    registry.loaded.every_s = 0
    assert registry.client("a").endpoint.password == "old"
    password.write_text("new")
    os.utime(password, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    assert registry.client("a").endpoint.password == "new"
    path.write_text("pacs: [oops")  # a broken edit: refused, logged, and the endpoints before it still apply
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    with caplog.at_level(logging.ERROR, logger="serving.dicom.pacs"):
        assert registry.client("a").endpoint.password == "new"
    assert "PACS endpoints file was refused" in caplog.text
