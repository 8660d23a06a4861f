"""Rounds as a DICOM SEG, built on real pydicom-data headers with drawn masks, checked by dciodvfy and read back."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import tracemalloc

import grpc
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr._concepts_dict import concepts as pydicom_concepts

from serving.dicom.codes import CONCEPTS, GENERIC, LOCAL_SCHEME, SCT, concept_for, normalise
from serving.dicom.seg import MAX_STACK_PIXELS, Algorithm, SkippedRound, build_segmentation
from serving.errors import SegmentationUnavailable
from serving.front.status import status_of
from serving.messages import Round, encode_mask
from tests.conftest import require_system_file

SESSION = "0123456789abcdef0123456789abcdef"
SESSION_TAG = hashlib.sha256(b"mediround-seg\0" + SESSION.encode()).hexdigest()[:16]  # what the SEG says of it
TINY = Algorithm("mediround-tiny", "2026-12-01+3f2a9c1")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values in the real test files


def header(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path, f"{name} is not in pydicom-data (pip install pydicom-data)"
    return pydicom.dcmread(path, stop_before_pixels=True)


def rect(size, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disc(size, cy, cx, r) -> np.ndarray:
    yy, xx = np.ogrid[:size[0], :size[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def a_round(number: int, question: str, mask: np.ndarray | None, answer: str = "It is [SEG].",
            reference_round: int | None = None, quality: float | None = 0.9, corrected: bool = False) -> Round:
    """A stored round as the dialogue makes it; the mask travels as its PNG, as in the store."""
    return Round(number=number, question=question, answer=answer, answer_ids=[], reference_round=reference_round,
                 mask_png=encode_mask(mask) if mask is not None else b"", box=None, quality=quality,
                 corrected=corrected, has_mask=mask is not None, seg_vector=None)


def same(a, b) -> bool:
    """Two codes (or None) are the same concept (pydicom's Code cannot be compared with None)."""
    return (a is None) == (b is None) and (a is None or a == b)


def dciodvfy(path) -> str:
    """dciodvfy's report on ``path``; the test fails on any line it calls an error."""
    tool = require_system_file("/usr/bin/dciodvfy", "dicom3tools")
    done = subprocess.run([str(tool), str(path)], capture_output=True, text=True, timeout=60)
    report = done.stdout + done.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report
    assert "Segmentation" in report, report  # it recognised the IOD it checked
    return report


def export(tmp_path, source, rounds, **kw):
    """Build, write, validate and read back: (the build's result, the SEG as highdicom reads the file)."""
    out = build_segmentation(source, rounds, session_id=SESSION, algorithm=TINY, **kw)
    path = tmp_path / f"{out.sop_instance_uid}.dcm"
    out.dataset.save_as(path, enforce_file_format=True)
    dciodvfy(path)
    assert SESSION.encode() not in path.read_bytes()  # the session id is a capability: the SEG holds a digest
    return out, hd.seg.segread(path)


def pixels_of(seg, source, frame: int = 1) -> np.ndarray:
    """(H, W, S) bool: every segment on the source frame, as the SEG stores it."""
    uid = source.SOPInstanceUID
    if int(source.get("NumberOfFrames") or 1) > 1:
        array = seg.get_pixels_by_source_frame(uid, source_frame_numbers=[frame], combine_segments=False)
    else:
        array = seg.get_pixels_by_source_instance([uid], combine_segments=False)
    return array[0].astype(bool)


def type_code(seg, number: int):
    item = seg.SegmentSequence[number - 1].SegmentedPropertyTypeCodeSequence[0]
    modifier = item.get("SegmentedPropertyTypeModifierCodeSequence")
    return item.CodeValue, item.CodingSchemeDesignator, modifier[0].CodeValue if modifier else None


def test_ct_rounds_become_segments_that_read_back_as_their_masks(tmp_path):
    source = header("CT_small.dcm")  # GE CT, 128x128
    size = (source.Rows, source.Columns)
    kidney, lesion = rect(size, 30, 70, 20, 60), disc(size, 50, 40, 12)  # the lesion lies in the kidney
    rounds = [a_round(1, "Segment the left kidney.", kidney), a_round(2, "Describe the image.", None),
              a_round(3, "Segment the lesion inside the output of round 1.", lesion, reference_round=1),
              a_round(4, "Segment the gallbladder.", np.zeros(size, dtype=bool))]  # a [SEG] that found nothing
    out, seg = export(tmp_path, source, rounds)

    assert out.segment_rounds == [1, 3]  # an empty segment is no segment: viewers show nothing, some refuse it
    assert out.skipped_rounds == [
        SkippedRound(2, "no mask: the answer found nothing or said the structure is not there"),
        SkippedRound(4, "an empty mask: nothing was found")]
    stored = pixels_of(seg, source)
    assert stored.shape == (*size, 2)
    assert np.array_equal(stored[..., 0], kidney) and np.array_equal(stored[..., 1], lesion)
    assert seg.SegmentsOverlap == "YES"

    first, second = seg.SegmentSequence
    assert first.SegmentLabel == "Segment the left kidney." and first.SegmentDescription == "Segment the left kidney."
    assert type_code(seg, 1) == (SCT.Kidney.value, "SCT", SCT.Left.value)
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == SCT.AnatomicalStructure.value
    assert type_code(seg, 2) == (SCT.Lesion.value, "SCT", None)
    assert second.SegmentedPropertyCategoryCodeSequence[0].CodeValue == SCT.MorphologicallyAbnormalStructure.value
    for segment, number in zip(seg.SegmentSequence, (1, 3), strict=True):
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.TrackingID == f"session {SESSION_TAG} round {number}"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (TINY.name, TINY.version)
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        assert f"round={number}" in algorithm.AlgorithmParameters
    assert "reference_round=1" in second.SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters

    # The SEG sits in the source's study and references its series and instance.
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ContentLabel == "MEDIROUND"
    assert seg.ContentDescription == f"MediRound dialogue, session {SESSION_TAG}"
    assert seg.Manufacturer == "MediRound Serve"


@pytest.mark.parametrize("name", [
    "MR-SIEMENS-DICOM-WithOverlays.dcm",  # Siemens MR, 484x484
    "RG1_UNCR.dcm",  # CR chest, 1955x1841, MONOCHROME1, PixelSpacing 0\0, no frame of reference
    "US1_UNCR.dcm",  # ultrasound, RGB, an empty PatientOrientation
    "SC_rgb.dcm",  # secondary capture without PatientOrientation
    "JPEG2000_UNC.dcm",  # NM secondary capture with a frame of reference but no plane geometry
])
def test_real_sources_of_other_modalities_give_valid_segs(tmp_path, name):
    source = header(name)
    size = (source.Rows, source.Columns)
    h, w = size
    masks = [rect(size, h // 8, h // 2, w // 8, w // 2), disc(size, 3 * h // 4, 3 * w // 4, min(h, w) // 6)]
    rounds = [a_round(1, "Segment the right lung.", masks[0]), a_round(2, "Segment the heart.", masks[1])]
    out, seg = export(tmp_path, source, rounds)
    stored = pixels_of(seg, source)
    assert all(np.array_equal(stored[..., i], m) for i, m in enumerate(masks))
    assert seg.SegmentsOverlap == "NO"  # the two masks are disjoint
    assert type_code(seg, 1) == (SCT.Lung.value, "SCT", SCT.Right.value)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID \
        == source.SOPInstanceUID
    if "FrameOfReferenceUID" not in seg:
        assert seg.PatientOrientation == (source.get("PatientOrientation") or "")


@pytest.mark.parametrize("name, frame", [
    ("color3d_jpeg_baseline.dcm", 5),  # a 120-frame JPEG ultrasound cine
    ("OBXXXX1A_rle_2frame.dcm", 2),  # a 2-frame RLE palette-colour ultrasound
])
def test_a_frame_of_an_ultrasound_cine_gets_a_valid_seg_that_references_that_frame(tmp_path, name, frame):
    source = header(name)
    size = (source.Rows, source.Columns)
    h, w = size
    mask = rect(size, h // 4, h // 2, w // 4, w // 2)
    out, seg = export(tmp_path, source, [a_round(1, "Segment the gallbladder.", mask)], frame=frame)  # dciodvfy-clean
    derived = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert (derived.ReferencedSOPInstanceUID, derived.ReferencedFrameNumber) == (source.SOPInstanceUID, frame)
    referenced = [derived, seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0], *seg.SourceImageSequence]
    assert {r.ReferencedSOPClassUID for r in referenced} == {source.SOPClassUID}  # its own class, a multi-frame one
    assert np.array_equal(pixels_of(seg, source, frame=frame)[..., 0], mask)


@pytest.mark.parametrize("name, said", [
    ("emri_small_jpeg_ls_lossless.dcm", "it has no patient coordinate system"),  # enhanced MR without its groups
    ("OBXXXX1A_2frame.dcm", "its SOP class holds one frame, yet it has 2"),  # 2 frames in a single-frame class
])
def test_a_frame_a_seg_cannot_reference_is_refused_saying_why(name, said):
    source = header(name)
    size = (source.Rows, source.Columns)
    with pytest.raises(SegmentationUnavailable, match=said):
        build_segmentation(source, [a_round(1, "Segment the liver.", rect(size, 2, 20, 2, 20))], session_id=SESSION,
                           algorithm=TINY, frame=2)


def test_one_frame_of_a_multiframe_source_is_referenced_by_frame(tmp_path):
    source = header("eCT_Supplemental.dcm")  # enhanced CT, 2 frames of 512x512
    size = (source.Rows, source.Columns)
    masks = [rect(size, 100, 300, 100, 250), disc(size, 256, 300, 60)]
    out, seg = export(tmp_path, source, [a_round(1, "Segment the liver.", masks[0]),
                                         a_round(2, "Segment the right kidney lesion.", masks[1])], frame=2)
    lesion = seg.SegmentSequence[1]  # a lesion is coded in its organ, the side qualifying the organ
    assert type_code(seg, 2) == (SCT.Lesion.value, "SCT", None)
    assert lesion.AnatomicRegionSequence[0].CodeValue == SCT.Kidney.value
    assert lesion.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeValue == SCT.Right.value
    stored = pixels_of(seg, source, frame=2)
    assert all(np.array_equal(stored[..., i], m) for i, m in enumerate(masks))
    assert not pixels_of(seg, source, frame=1).any()  # the other frame is empty: no frame of the SEG is on it
    frames = [f.DerivationImageSequence[0].SourceImageSequence[0] for f in seg.PerFrameFunctionalGroupsSequence]
    assert {(s.ReferencedSOPInstanceUID, s.ReferencedFrameNumber) for s in frames} == {(source.SOPInstanceUID, 2)}
    with pytest.raises(ValueError, match="frame 3"):
        build_segmentation(source, [a_round(1, "Segment the liver.", masks[0])], session_id=SESSION,
                           algorithm=TINY, frame=3)


def test_a_source_without_type2_attributes_still_gives_a_valid_seg_and_is_not_changed(tmp_path):
    source = header("MR_small.dcm")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName"):
        if keyword in source:
            delattr(source, keyword)
    before = copy.deepcopy(source)
    size = (source.Rows, source.Columns)
    out, seg = export(tmp_path, source, [a_round(1, "Segment the right precentral gyrus.", rect(size, 5, 30, 5, 30))])
    assert source == before  # filled in on a copy only
    assert seg.PatientID == "" and seg.StudyID == "" and seg.AccessionNumber == "" and seg.PatientBirthDate == ""
    # A concept from the local scheme: coded under it, and the scheme identified in the SEG.
    assert type_code(seg, 1) == (type_code(seg, 1)[0], LOCAL_SCHEME, SCT.Right.value)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Precentral gyrus"
    assert [s.CodingSchemeDesignator for s in seg.CodingSchemeIdentificationSequence] == [LOCAL_SCHEME]


def long_ct(frames: int, phases: int = 1) -> pydicom.Dataset:
    """The real enhanced CT's header with ``frames`` frames of 512x512, 1 mm apart, ``phases`` at each position."""
    source = header("eCT_Supplemental.dcm")
    first = source.PerFrameFunctionalGroupsSequence[0]
    groups = []
    for i in range(frames):
        item = copy.deepcopy(first)
        item.PlanePositionSequence[0].ImagePositionPatient = [99.5, -301.5, -159.0 + i // phases]
        item.FrameContentSequence[0].InStackPositionNumber = i // phases + 1
        groups.append(item)
    source.PerFrameFunctionalGroupsSequence = groups
    source.NumberOfFrames = frames
    return source


def test_one_frame_of_a_long_multiframe_source_costs_one_frame(tmp_path):
    source = long_ct(600)
    size = (source.Rows, source.Columns)
    masks = [rect(size, 100, 300, 100, 250), disc(size, 256, 300, 60), rect(size, 0, 40, 0, 512),
             disc(size, 400, 100, 30)]
    rounds = [a_round(n, f"Segment the liver, part {n}.", m) for n, m in enumerate(masks, start=1)]
    build_segmentation(source, rounds, session_id=SESSION, algorithm=TINY, frame=300)  # loads highdicom's tables
    tracemalloc.start()
    try:
        build_segmentation(source, rounds, session_id=SESSION, algorithm=TINY, frame=300)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"  # the whole stack of 600 frames x 4 rounds is 600 MiB

    out, seg = export(tmp_path, source, rounds, frame=300)
    assert source == long_ct(600)  # the caller's header is not changed
    assert seg.NumberOfFrames == len(masks)  # one frame per segment, all on the source's frame 300
    stored = pixels_of(seg, source, frame=300)
    assert all(np.array_equal(stored[..., i], m) for i, m in enumerate(masks))
    assert not pixels_of(seg, source, frame=299).any()
    frames = [f.DerivationImageSequence[0].SourceImageSequence[0] for f in seg.PerFrameFunctionalGroupsSequence]
    assert {(s.ReferencedSOPInstanceUID, s.ReferencedFrameNumber) for s in frames} == {(source.SOPInstanceUID, 300)}
    position = source.PerFrameFunctionalGroupsSequence[299].PlanePositionSequence[0].ImagePositionPatient
    for f in seg.PerFrameFunctionalGroupsSequence:
        assert f.PlanePositionSequence[0].ImagePositionPatient == position


def test_of_two_phases_at_one_position_the_segmented_one_is_referenced(tmp_path):
    source = long_ct(4, phases=2)  # frames 3 and 4 lie in one plane
    mask = disc((source.Rows, source.Columns), 256, 256, 80)
    out, seg = export(tmp_path, source, [a_round(1, "Segment the liver.", mask)], frame=4)
    (derivation,) = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence
    assert [s.ReferencedFrameNumber for s in derivation.SourceImageSequence] == [4]
    assert np.array_equal(pixels_of(seg, source, frame=4)[..., 0], mask)
    assert not pixels_of(seg, source, frame=3).any()


def test_a_whole_stack_beyond_the_budget_is_refused_before_it_is_built():
    source = header("eCT_Supplemental.dcm")
    source.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]  # as a slide's frames: highdicom takes the whole stack
    source.NumberOfFrames = MAX_STACK_PIXELS // (source.Rows * source.Columns) + 1
    mask = rect((source.Rows, source.Columns), 10, 40, 10, 40)
    with pytest.raises(SegmentationUnavailable, match=r"holds the whole stack.* M pixels") as raised:
        build_segmentation(source, [a_round(1, "Segment the liver.", mask)], session_id=SESSION, algorithm=TINY)
    assert status_of(raised.value) == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("keyword, value", [
    ("PatientSex", "W"), ("PatientSex", "Female"), ("PatientBirthDate", "00000000"), ("StudyDate", "2001.01.02"),
    ("StudyTime", "12:34:56"), ("PatientName", "A" * 70), ("ReferringPhysicianName", "Doe^Jane\\Roe^Richard"),
    ("AccessionNumber", "A" * 20), ("PatientID", "P" * 70),
])
def test_invalid_type2_values_of_the_source_are_empty_in_a_valid_seg(tmp_path, keyword, value):
    source = header("CT_small.dcm")
    setattr(source, keyword, value)
    before = copy.deepcopy(source)
    out, seg = export(tmp_path, source, [a_round(1, "Segment the liver.", rect((128, 128), 10, 60, 10, 60))])
    assert seg[keyword].value in ("", None)
    assert source == before  # emptied on the copy only
    copied = "StudyID" if keyword == "PatientID" else "PatientID"
    assert seg[copied].value == source[copied].value  # the valid ones are copied


@pytest.mark.parametrize("keyword, value, why", [
    ("ImageOrientationPatient", [0.6, 0.8, 0.0], "should be an array of length 6"),  # 3 of its 6 values
    ("SOPClassUID", "2.25.3141592653589793", "'2.25.3141592653589793"),  # a private image class
])
def test_a_header_highdicom_cannot_copy_is_failed_precondition_and_quotes_nothing(keyword, value, why):
    source = header("CT_small.dcm")
    setattr(source, keyword, value)
    mask = rect((source.Rows, source.Columns), 10, 40, 10, 40)
    with pytest.raises(SegmentationUnavailable, match="header has attributes a DICOM SEG cannot copy") as raised:
        build_segmentation(source, [a_round(1, "Segment the liver.", mask)], session_id=SESSION, algorithm=TINY)
    assert status_of(raised.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert why not in str(raised.value) and "PNG masks are unaffected" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # highdicom's message stays behind


@pytest.mark.parametrize("name, why", [
    ("693_UNCR.dcm", "this CT Image"),  # a real CT 512x512 without FrameOfReferenceUID
    ("emri_small.dcm", "frame 1 of this 10-frame Enhanced MR Image"),  # multi-frame without plane geometry
])
def test_a_source_the_seg_cannot_reference_is_failed_precondition(name, why):
    source = header(name)
    mask = rect((source.Rows, source.Columns), 10, 40, 10, 40)
    with pytest.raises(SegmentationUnavailable, match="no patient coordinate system") as raised:
        build_segmentation(source, [a_round(1, "Segment the liver.", mask)], session_id=SESSION, algorithm=TINY)
    assert why in str(raised.value) and "PNG masks are unaffected" in str(raised.value)
    assert status_of(raised.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_rounds_without_any_mask_and_masks_of_another_size_are_refused():
    source = header("CT_small.dcm")
    with pytest.raises(SegmentationUnavailable, match="none of the 2 round"):
        build_segmentation(source, [a_round(1, "Describe it.", None), a_round(2, "And now?", None)],
                           session_id=SESSION, algorithm=TINY)
    with pytest.raises(ValueError, match="64x32, the source frame is 128x128"):
        build_segmentation(source, [a_round(1, "Segment the liver.", rect((32, 64), 1, 9, 1, 9))],
                           session_id=SESSION, algorithm=TINY)


def test_a_sessions_exports_share_a_series_and_new_content_is_a_new_instance(monkeypatch):
    source = header("CT_small.dcm")
    size = (source.Rows, source.Columns)
    liver, aorta = rect(size, 10, 60, 10, 60), disc(size, 90, 64, 8)
    rounds = [a_round(1, "Segment the liver.", liver), a_round(2, "Segment the aorta.", aorta)]

    def build(rs=rounds, src=source, algorithm=TINY, session=SESSION):
        return build_segmentation(src, rs, session_id=session, algorithm=algorithm).dataset

    first, again = build(), build()
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert first.SOPInstanceUID != first.SeriesInstanceUID and first.InstanceNumber == 2  # its last round
    for uid in (first.SOPInstanceUID, first.SeriesInstanceUID):
        assert uid.startswith("2.25.") and uid.is_valid and len(uid) <= 64

    renamed = copy.deepcopy(source)
    renamed.PatientName = "Corrected^Name"  # the same source instance, its header corrected
    monkeypatch.setattr("serving.dicom.seg.concept_for", lambda question, answer: GENERIC)
    recoded = build()  # the same rounds coded otherwise (another code table)
    monkeypatch.undo()
    new_content = {
        "regenerated mask": build([a_round(1, "Segment the liver.", rect(size, 10, 60, 10, 61)), rounds[1]]),
        "new round": build([*rounds, a_round(3, "Segment the spleen.", disc(size, 30, 100, 10))]),
        "quality": build([a_round(1, "Segment the liver.", liver, quality=0.5), rounds[1]]),
        "corrected": build([a_round(1, "Segment the liver.", liver, corrected=True), rounds[1]]),
        "reference": build([rounds[0], a_round(2, "Segment the aorta.", aorta, reference_round=1)]),
        "codes": recoded, "header": build(src=renamed)}
    assert len({first.SOPInstanceUID, *(d.SOPInstanceUID for d in new_content.values())}) == 1 + len(new_content)
    assert {d.SeriesInstanceUID for d in new_content.values()} == {first.SeriesInstanceUID}  # one series
    assert new_content["new round"].InstanceNumber == 3

    monkeypatch.setattr("serving.dicom.seg.SOFTWARE_VERSION", "9.9.9")  # a series states its equipment
    upgraded = build()
    monkeypatch.undo()
    other_series = [build(algorithm=Algorithm(TINY.name, "2026-12-02+9e8d7c6")), upgraded,
                    build(session="fedcba9876543210fedcba9876543210")]
    assert len({first.SeriesInstanceUID, *(d.SeriesInstanceUID for d in other_series)}) == 4
    assert len({first.SOPInstanceUID, *(d.SOPInstanceUID for d in other_series)}) == 4
    # A finding keeps its tracking UID across regenerated results.
    regenerated = new_content["regenerated mask"]
    assert [s.TrackingUID for s in first.SegmentSequence] == [s.TrackingUID for s in regenerated.SegmentSequence]


def test_long_and_non_ascii_questions_label_cleanly(tmp_path):
    source = header("CT_small.dcm")
    size = (source.Rows, source.Columns)
    long_question = ("Based on the output of round 1, please segment the largest lesion located in the liver, "
                     "the one closest to the gallbladder\\portal vein")
    german = "Segmentieren Sie die linke Niere – größer als in Runde 1?"
    out, seg = export(tmp_path, source, [a_round(1, long_question, rect(size, 5, 50, 5, 50)),
                                         a_round(2, german, rect(size, 60, 120, 60, 120))])
    label = seg.SegmentSequence[0].SegmentLabel
    assert len(label) <= 64 and label.endswith("...") and long_question.startswith(label[:-3])
    assert seg.SegmentSequence[0].SegmentDescription == long_question.replace("\\", "/")
    assert seg.SegmentSequence[1].SegmentLabel == german
    assert type_code(seg, 1) == (SCT.Lesion.value, "SCT", None)  # "lesion" is named before "liver"


def test_concept_for_prefers_the_answer_then_the_leftmost_longest_name():
    assert concept_for("Segment its left-hand neighbour in the image.", "It is [SEG].") == GENERIC
    assert GENERIC.type == SCT.AnatomicalStructure and GENERIC.generic
    assert concept_for("Segment it.", "The spleen is [SEG].").type == SCT.Spleen
    kidney_lesion = concept_for("Segment the left kidney lesion.", "")
    assert (kidney_lesion.type, kidney_lesion.region, kidney_lesion.laterality) == (SCT.Lesion, SCT.Kidney, SCT.Left)
    lobe = concept_for("Outline the lower lobe of the left lung.", "")
    assert (lobe.type, lobe.laterality) == (SCT.LowerLobeOfLung, SCT.Left)
    assert concept_for("Segment both kidneys.", "").laterality == SCT.Bilateral
    assert concept_for("Segment the liver to the left of it in the image.", "").laterality is None  # unpaired
    assert concept_for("Outline the tumour core.", "").type.scheme_designator == LOCAL_SCHEME


def test_every_snomed_code_is_in_pydicoms_dictionary_and_local_codes_are_distinct():
    known: dict[str, set[str]] = {}
    for entry in pydicom_concepts["SCT"].values():
        for code, (meaning, _) in entry.items():
            known.setdefault(code, set()).add(meaning)
    local = {}
    for concept in CONCEPTS:
        for code in filter(None, (concept.type, concept.category, concept.region)):
            if code.scheme_designator == "SCT":
                assert code.meaning in known.get(code.value, ()), code
            else:
                assert code.scheme_designator == LOCAL_SCHEME and len(code.value) <= 16 and len(code.meaning) <= 64
                assert local.setdefault(code.value, code.meaning) == code.meaning, f"{code.value} means two things"
    assert len(set(local.values())) == len(local)


def test_the_models_vocabulary_is_coded():
    """Phantom categories (with their sides), the real CT slices' labels and the brain table's names all resolve."""
    from model.data.phantoms.generate import MODALITIES
    from model.data.real import REAL_SLICES

    sides = {"left": SCT.Left, "right": SCT.Right}
    seen = set()
    for seed in range(6):
        for draw in MODALITIES.values():
            seen |= {(e.category, e.side) for e in draw(96, np.random.default_rng(seed)).entities.values()}
    assert len({category for category, _ in seen}) > 20
    for category, side in seen:  # as the phantom dialogues name them: "the left kidney", "the liver"
        coded = concept_for(f"Segment the {side or ''} {category}.", "")
        assert not coded.generic and same(coded.laterality, sides.get(side)), (category, side)

    images = [p.stem for p in (REAL_SLICES / "images").glob("*.png")]
    labels = [m.stem[len(image) + 1:-4] for image in images for m in (REAL_SLICES / "masks").glob(f"{image}_*")]
    assert len(labels) > 20
    for label in labels:  # heart_atrium_left -> "the left heart atrium"
        words = label.split("_")
        side = next((w for w in words if w in sides), None)
        coded = concept_for(f"Segment the {side or ''} {' '.join(w for w in words if w != side)}.", "")
        assert not coded.generic, label
        if side:  # a laterality, or a concept that has the side in it (left atrium, middle lobe of right lung)
            assert same(coded.laterality, sides[side]) or side in coded.type.meaning.lower(), label

    from model.data.brain import anatomy
    for name in [s.name for s in anatomy.STRUCTURES] + [g.name for g in anatomy.GROUPS]:
        coded = concept_for(f"Segment the left {name}.", "")
        assert not coded.generic and coded.name == normalise(name), name


def test_a_relational_round_is_coded_as_the_structure_its_answer_names_with_its_side(tmp_path):
    source = header("CT_small.dcm")
    size = (source.Rows, source.Columns)
    rounds = [a_round(1, "Segment the right kidney.", rect(size, 30, 70, 20, 50),
                      answer="Sure, the right kidney is [SEG]."),
              a_round(2, "Segment its contralateral counterpart.", rect(size, 30, 70, 80, 110), reference_round=1,
                      answer="Across the midline from round 1: the left kidney [SEG].")]
    _, seg = export(tmp_path, source, rounds)
    assert type_code(seg, 1) == (SCT.Kidney.value, "SCT", SCT.Right.value)
    assert type_code(seg, 2) == (SCT.Kidney.value, "SCT", SCT.Left.value)  # not "Anatomical Structure"
    assert seg.SegmentSequence[1].SegmentLabel == "Segment its contralateral counterpart."
