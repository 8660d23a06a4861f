"""DICOM through the whole gRPC API: sessions on real DICOM instances (sent, or fetched from a real Orthanc),
rounds by the shipped model, and the rounds back as a DICOM SEG, returned or stored in the source's study."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import grpc
import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from mediround.v1 import mediround_pb2 as pb
from model.config import SHIPPED_TINY
from serving.client import MediRoundClient
from serving.dicom.pacs import PacsClient
from serving.front.dialogue import Dialogue
from serving.front.server import ServerOptions, start_server
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore
from tests.serving.dicom.test_seg import dciodvfy

CT = "CT_small.dcm"  # a real CT with a frame of reference: what a SEG of a CT must reference
CT_WITHOUT_FRAME_OF_REFERENCE = "693_UNCR.dcm"
QUESTIONS = ("Segment the left lung.", "Now segment the brain.")  # the shipped model finds the first, not the second


def _instance(name: str) -> pydicom.Dataset:
    """A real instance under new UIDs (the Orthanc of the session is shared, and keeps the first content it
    gets under a SOP instance UID)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline(redis_url):
    return LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)


@pytest.fixture
def serve(tmp_path, redis_url, pipeline, orthanc):
    """``serve(scenario)`` runs ``scenario(client)`` (a blocking ``MediRoundClient``) against a real gRPC server
    whose one configured PACS, "hospital", is the real Orthanc."""
    pacs_file = tmp_path / "pacs.yaml"
    pacs_file.write_text(f"pacs:\n  - name: hospital\n    url: {orthanc.dicomweb_url}\n    retries: 0\n")

    def run(scenario, *, tokens_file=None, token=None):
        async def main():
            store = RedisSessionStore(redis_url)
            server, port = await start_server(Dialogue(store, pipeline), ServerOptions(
                address="127.0.0.1:0", pacs_file=str(pacs_file), tokens_file=tokens_file and str(tokens_file)))
            try:
                with MediRoundClient(f"127.0.0.1:{port}", token=token) as client:
                    return await asyncio.to_thread(scenario, client)
            finally:
                await server.stop(grace=1)
                await store.close()

        return asyncio.run(main())

    return run


def _dialogue(client: MediRoundClient, session_id: str) -> list[pb.Round]:
    return [client.ask(session_id, q) for q in QUESTIONS]


def _seg_pixels(seg: hd.seg.Segmentation, source_uid: str) -> np.ndarray:
    return seg.get_pixels_by_source_instance([source_uid], combine_segments=False)[0]  # (H, W, S)


def test_a_session_on_dicom_bytes_reports_what_it_is_and_its_seg_holds_the_rounds(serve, tmp_path):
    ct = _instance(CT)

    def scenario(client):
        session = client.stub.CreateSession(pb.CreateSessionRequest(
            image=_part10(ct), dicom_options=pb.DicomOptions(window_preset="ct-abdomen")))
        rounds = _dialogue(client, session.id)
        seg = client.stub.GetSegmentation(pb.GetSegmentationRequest(session_id=session.id))
        return session, rounds, client.image(session.id), seg

    session, rounds, image, seg = serve(scenario)
    d = session.dicom
    assert (d.study_instance_uid, d.sop_instance_uid, d.modality, d.frame) == (ct.StudyInstanceUID,
                                                                               ct.SOPInstanceUID, "CT", 1)
    assert (d.window_center, d.window_width, d.window_source) == (50, 400, "preset:ct-abdomen")
    assert (d.rescale_slope, d.rescale_intercept) == (float(ct.RescaleSlope), float(ct.RescaleIntercept))
    assert (session.width, session.height) == (ct.Columns, ct.Rows)
    assert image.media_type == "image/png" and Image.open(io.BytesIO(image.image)).size == (ct.Columns, ct.Rows)

    path = tmp_path / "seg.dcm"
    path.write_bytes(seg.dicom)
    dciodvfy(path)
    read = hd.seg.segread(path)
    with_masks = [r.number for r in rounds if r.has_mask]
    assert with_masks == [1]  # a SEG of the rounds with a mask; the refused round is listed as skipped
    assert list(seg.rounds) == with_masks and list(seg.skipped_rounds) == [r.number for r in rounds if not r.has_mask]
    assert read.StudyInstanceUID == ct.StudyInstanceUID and seg.sop_instance_uid == read.SOPInstanceUID
    algorithm = read.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    weights = hashlib.sha256((SHIPPED_TINY / "model.safetensors").read_bytes()).hexdigest()
    assert algorithm.AlgorithmName == "mediround-tiny" and algorithm.AlgorithmVersion.startswith(weights[:12])
    pixels = _seg_pixels(read, ct.SOPInstanceUID)
    for k, r in enumerate(r for r in rounds if r.has_mask):
        assert np.array_equal(pixels[..., k], MediRoundClient.mask(r)), f"segment {k + 1} is not round {r.number}"


def test_by_reference_from_a_real_orthanc_and_exported_back_into_the_same_study(serve, orthanc):
    ct = _instance(CT)
    pacs = PacsClient(orthanc.endpoint())
    pacs.store(ct)
    ref = pb.DicomInstanceRef(pacs="hospital", study_instance_uid=ct.StudyInstanceUID,
                              series_instance_uid=ct.SeriesInstanceUID, sop_instance_uid=ct.SOPInstanceUID)

    def scenario(client):
        session = client.stub.CreateSession(pb.CreateSessionRequest(dicom_instance=ref))
        rounds = _dialogue(client, session.id)
        first = client.stub.ExportSession(pb.ExportSessionRequest(session_id=session.id))
        again = client.stub.ExportSession(pb.ExportSessionRequest(session_id=session.id))
        return session, rounds, first, again

    session, rounds, first, again = serve(scenario)
    assert session.dicom.pacs == "hospital"
    assert session.dicom.window_source == "full range"  # CT_small has no window of its own
    assert first.destination == "hospital" and first.study_instance_uid == ct.StudyInstanceUID
    assert again.sop_instance_uid == first.sop_instance_uid  # the same rounds: the same instance, stored once
    found = pacs.find_instances(ct.StudyInstanceUID, modality="SEG")
    assert [f.sop_instance_uid for f in found] == [first.sop_instance_uid]
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(pacs.fetch_instance(
        ct.StudyInstanceUID, found[0].series_uid, found[0].sop_instance_uid))))
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    pixels = _seg_pixels(seg, ct.SOPInstanceUID)
    kept = [r for r in rounds if r.has_mask]
    assert len(kept) == pixels.shape[-1] and all(
        np.array_equal(pixels[..., k], MediRoundClient.mask(r)) for k, r in enumerate(kept))


def test_dicom_errors_are_clear_store_nothing_and_the_png_masks_still_work(serve, redis_url):
    import redis

    stored = redis.Redis.from_url(redis_url)
    png = io.BytesIO()
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(png, format="PNG")
    truncated = _part10(_instance(CT))[:2000]

    def code(call, *args):
        with pytest.raises(grpc.RpcError) as caught:
            call(*args)
        return caught.value.code(), caught.value.details()

    def scenario(client):
        s = client.stub
        before = sorted(stored.keys("mr:*"))
        out = {
            "options on a png": code(s.CreateSession, pb.CreateSessionRequest(
                image=png.getvalue(), dicom_options=pb.DicomOptions(window_preset="ct-lung"))),
            "bad preset": code(s.CreateSession, pb.CreateSessionRequest(
                image=_part10(_instance(CT)), dicom_options=pb.DicomOptions(window_preset="ct-liverish"))),
            "truncated": code(s.CreateSession, pb.CreateSessionRequest(image=truncated)),
            "a SEG as the image": code(s.CreateSession, pb.CreateSessionRequest(
                image=Path(get_testdata_file("liver.dcm")).read_bytes())),
            "unknown pacs": code(s.CreateSession, pb.CreateSessionRequest(dicom_instance=pb.DicomInstanceRef(
                pacs="elsewhere", study_instance_uid="1.2", series_instance_uid="1.2.3", sop_instance_uid="1.2.3.4"))),
            "not on the pacs": code(s.CreateSession, pb.CreateSessionRequest(dicom_instance=pb.DicomInstanceRef(
                pacs="hospital", study_instance_uid="1.2", series_instance_uid="1.2.3", sop_instance_uid="1.2.3.4"))),
        }
        out["stored nothing"] = sorted(stored.keys("mr:*")) == before
        plain = s.CreateSession(pb.CreateSessionRequest(image=png.getvalue()))
        client.ask(plain.id, QUESTIONS[0])
        out["seg of a png session"] = code(s.GetSegmentation, pb.GetSegmentationRequest(session_id=plain.id))
        no_frame_of_reference = s.CreateSession(pb.CreateSessionRequest(
            image=_part10(_instance(CT_WITHOUT_FRAME_OF_REFERENCE))))
        r = client.ask(no_frame_of_reference.id, QUESTIONS[0])
        out["seg without a frame of reference"] = code(
            s.GetSegmentation, pb.GetSegmentationRequest(session_id=no_frame_of_reference.id))
        out["its png mask"] = client.get_round(no_frame_of_reference.id, 1).mask_png == r.mask_png
        sent = s.CreateSession(pb.CreateSessionRequest(image=_part10(_instance(CT))))
        client.ask(sent.id, QUESTIONS[0])
        out["export of sent bytes"] = code(s.ExportSession, pb.ExportSessionRequest(session_id=sent.id))
        out["export of sent bytes, named"] = s.ExportSession(pb.ExportSessionRequest(
            session_id=sent.id, destination="hospital")).destination
        return out

    out = serve(scenario)
    invalid, precondition = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    assert out["options on a png"][0] == invalid and "DICOM images only" in out["options on a png"][1]
    assert out["bad preset"][0] == invalid and "ct-abdomen" in out["bad preset"][1]  # lists the accepted ones
    assert out["truncated"][0] == invalid
    assert out["a SEG as the image"][0] == invalid and "Segmentation" in out["a SEG as the image"][1]
    assert out["unknown pacs"][0] == invalid and "hospital" in out["unknown pacs"][1]
    assert out["not on the pacs"][0] == grpc.StatusCode.NOT_FOUND
    assert out["seg of a png session"][0] == precondition and "DICOM source" in out["seg of a png session"][1]
    assert out["seg without a frame of reference"][0] == precondition
    assert out["its png mask"] and out["stored nothing"]
    assert out["export of sent bytes"][0] == invalid and "name a destination" in out["export of sent bytes"][1]
    assert out["export of sent bytes, named"] == "hospital"
    for _, details in (v for v in out.values() if isinstance(v, tuple)):  # no address, path or traceback
        assert "Traceback" not in details and "127.0.0.1" not in details and "/" not in details.replace(" / ", "")


def test_the_dicom_header_leaves_the_store_with_its_session(serve, redis_url):
    def scenario(client):
        session = client.stub.CreateSession(pb.CreateSessionRequest(image=_part10(_instance(CT))))
        return session.id, client.delete(session.id)

    sid, deleted = serve(scenario)

    async def left():
        store = RedisSessionStore(redis_url)
        try:
            return await store.redis.keys(f"mr:session:{sid}*")
        finally:
            await store.close()

    assert deleted and asyncio.run(left()) == []


def test_the_demos_dicom_dialogue_writes_a_seg_of_its_rounds(serve, tmp_path, capsys):
    from serving.demo import dicom_dialogue

    serve(lambda client: dicom_dialogue(client, tmp_path))
    printed = capsys.readouterr().out
    assert "preset:ct-bone" in printed and "frames equal the PNG masks: True" in printed
    assert hd.seg.segread(tmp_path / "dialogue-seg.dcm").number_of_segments >= 1


def test_a_tenant_uses_only_the_pacs_its_entry_names(serve, orthanc, tmp_path):
    from serving.front.tenants import token_hash

    ct = _instance(CT)
    PacsClient(orthanc.endpoint()).store(ct)
    ref = pb.DicomInstanceRef(pacs="hospital", study_instance_uid=ct.StudyInstanceUID,
                              series_instance_uid=ct.SeriesInstanceUID, sop_instance_uid=ct.SOPInstanceUID)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f'tenants:\n  - name: radiology\n    token_sha256: "{token_hash("tok-r")}"\n'
                      '    pacs: [hospital]\n'
                      f'  - name: school\n    token_sha256: "{token_hash("tok-s")}"\n')

    def radiology(client):
        session = client.stub.CreateSession(pb.CreateSessionRequest(dicom_instance=ref), metadata=client.metadata)
        client.ask(session.id, QUESTIONS[0])
        return client.export(session.id).destination

    def school(client):
        with pytest.raises(grpc.RpcError) as fetch:
            client.stub.CreateSession(pb.CreateSessionRequest(dicom_instance=ref), metadata=client.metadata)
        sent = client.create_session(_part10(_instance(CT)))
        client.ask(sent.id, QUESTIONS[0])
        with pytest.raises(grpc.RpcError) as export:
            client.export(sent.id, "hospital")
        return fetch.value, export.value

    assert serve(radiology, tokens_file=tokens, token="tok-r") == "hospital"
    for refused in serve(school, tokens_file=tokens, token="tok-s"):
        # another tenant's PACS is as unknown as one that does not exist, and is not named
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "available: none" in refused.details()
