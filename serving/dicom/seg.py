"""A session's rounds as one DICOM Segmentation (BINARY, highdicom): one segment per round that has a mask.

Each segment is labelled by its round's question (SegmentLabel holds 64 characters; SegmentDescription
has the whole question), coded by :func:`serving.dicom.codes.concept_for` (laterality as a modifier of
the type, or of the region for a lesion), made by the model's checkpoint (AUTOMATIC, an AI algorithm of
that name and version) and tracked by session and round. The SEG references the source instance (and
its frame) in the source's study; overlapping segments are declared (highdicom compares the masks). The
session id itself is a capability to the session: the SEG names the session by a one-way digest of it.

UIDs are derived, never drawn. The series UID is one per session and model (checkpoint, software, series
number): every export of a session's rounds lands in one series of the study. The SOP instance UID is a
digest of everything the SEG holds (the source's header, the frame, and each kept round's description,
codes, algorithm parameters and mask), so exporting the same rounds twice stores one instance in a PACS,
and new content (a new round, another mask) is a new instance in the same series; its InstanceNumber is
the last round it holds. A segment's tracking UID depends on the session and round only: it follows one
finding across regenerated results.

The source is a header (``stop_before_pixels`` is enough), copied before anything is filled in: the
type-2 attributes a SEG copies (patient, study) may be missing or invalid (a PatientSex "W", a date
"00000000"), and are then empty in the SEG; a source without a patient coordinate system (CR, US,
secondary capture) lends the SEG its PatientOrientation. A SEG of one frame of a multi-frame source (an
enhanced image with plane geometry, or an ultrasound cine) costs what a SEG of a single-frame image does,
whatever the number of frames. What a SEG must reference and the source lacks (a frame of reference for CT /
MR, plane geometry for one frame of an enhanced image, its UIDs), or a header highdicom cannot copy, raises
:class:`~serving.errors.SegmentationUnavailable`, whose message quotes none of the header's values.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM, validate_value

from serving.dicom.codes import LOCAL_SCHEME, LOCAL_SCHEME_ITEM, CodedStructure, concept_for
from serving.errors import SegmentationUnavailable
from serving.messages import Round

MANUFACTURER = "MediRound Serve"
SERIES_NUMBER = 9001  # far from a modality's own series numbers
CONTENT_LABEL = "MEDIROUND"
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}  # float, double and plain pixel data: never copied
# Type-2 attributes the SEG copies from its source; highdicom reads them even when they are empty.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")
_SEXES = ("M", "F", "O")  # PatientSex's defined terms
_REFERENCED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns")
_UID_NAMESPACE = uuid.UUID("6d2f1f2e-6b1c-5a4e-9a57-5f0c2b7d3e61")  # fixed forever: it is part of every UID
# Pixels of a whole stack (frames x rows x columns x segments) a SEG is built from where highdicom needs it: a
# multi-frame source without patient coordinates (a slide); 256 M booleans, about 1 GB with highdicom's copies.
MAX_STACK_PIXELS = 256 * 2**20


def _software_version() -> str:
    try:
        return importlib.metadata.version("mediround")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


SOFTWARE_VERSION = _software_version()


@dataclass(frozen=True)
class Algorithm:
    """The model that made the masks, as the SEG identifies it."""

    name: str
    """The checkpoint's name, e.g. "mediround-tiny"."""
    version: str
    """Its version or content hash, e.g. "2026-12-01+3f2a9c1"."""

    def __post_init__(self):
        for field, value in (("name", self.name), ("version", self.version)):
            if not value or len(value) > 64 or "\\" in value:
                raise ValueError(f"algorithm {field} must be 1-64 characters without a backslash, got {value!r}")


@dataclass(frozen=True)
class SkippedRound:
    """A round the SEG leaves out, and why."""

    number: int
    reason: str


@dataclass
class SegExport:
    """A built SEG and how its segments map to the session's rounds."""

    dataset: hd.seg.Segmentation
    segment_rounds: list[int]
    """The round number of segment 1, 2, ... in order."""
    skipped_rounds: list[SkippedRound]
    codes: list[CodedStructure]
    """What each segment was coded as, in segment order."""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def build_segmentation(source_header: pydicom.Dataset, rounds: Sequence[Round], *, session_id: str,
                       algorithm: Algorithm, frame: int = 1, series_number: int = SERIES_NUMBER) -> SegExport:
    """One BINARY DICOM SEG of ``rounds`` (a session's, in order) on ``frame`` (1-based) of the source.

    Rounds without a mask, or with an empty one (stored before empty masks became rounds without one), are left
    out (``skipped_rounds`` says which and why); each mask is (H, W) bool at the source frame's size. Raises
    SegmentationUnavailable when the source cannot be referenced or no round has a mask, ValueError for a frame
    the source lacks or a mask of another size.
    """
    source = _source_copy(source_header)
    frames = int(source.get("NumberOfFrames") or 1)
    if not 1 <= frame <= frames:
        raise ValueError(f"frame {frame} is not in the source's {frames} frame(s)")
    size = (int(source.Rows), int(source.Columns))

    kept, masks, skipped = [], [], []
    for r in rounds:
        mask = r.mask if r.has_mask else None
        if mask is None:
            skipped.append(SkippedRound(r.number, "no mask: the answer found nothing or said the structure is not "
                                                  "there"))
            continue
        if not mask.any():  # an empty segment adds nothing a viewer can show, and some refuse the SEG that holds it
            skipped.append(SkippedRound(r.number, "an empty mask: nothing was found"))
            continue
        if mask.shape != size:
            raise ValueError(f"round {r.number}'s mask is {mask.shape[1]}x{mask.shape[0]}, the source frame is "
                             f"{size[1]}x{size[0]}")
        kept.append(r)
        masks.append(mask.astype(bool, copy=False))
    if not kept:
        raise SegmentationUnavailable(f"none of the {len(rounds)} round(s) has a mask: a DICOM SEG needs a segment")

    coordinates = hd.spatial.get_image_coordinate_system(source)
    cine = frames > 1 and coordinates is None and source.SOPClassUID in SINGLE_FRAME_CLASS
    if coordinates is None and frames > 1 and not cine:
        if source.SOPClassUID in SINGLE_FRAME_CLASS.values():  # e.g. 2 frames in an (single-frame) US Image
            raise SegmentationUnavailable(
                f"no DICOM SEG for frame {frame} of this {_kind(source)}: its SOP class holds one frame, yet it has "
                f"{frames}, so a SEG cannot reference the one segmented; the PNG masks are unaffected")
        raise _no_coordinates(f"frame {frame} of this {frames}-frame {_kind(source)}")
    pixels = np.stack(masks, axis=-1)[np.newaxis]  # (1, H, W, S): the source frame only
    one_frame = frames > 1 and (coordinates == hd.CoordinateSystemNames.PATIENT or cine)
    if frames > 1 and not one_frame:  # a slide: highdicom takes the whole stack, the other frames empty
        if frames * pixels.size > MAX_STACK_PIXELS:
            raise SegmentationUnavailable(
                f"no DICOM SEG for frame {frame} of this {frames}-frame {_kind(source)}: a SEG of it holds the "
                f"whole stack, {frames} frames of {size[1]}x{size[0]} for each of {len(kept)} round(s), more "
                f"than the {MAX_STACK_PIXELS // 2**20} M pixels this server builds; the PNG masks are unaffected")
        stack = np.zeros((frames, *pixels.shape[1:]), dtype=bool)
        stack[frame - 1] = pixels[0]
        pixels = stack
    coded = [concept_for(r.question, r.answer) for r in kept]
    descriptions = [_segment(number, r, c, session_id, algorithm)
                    for number, (r, c) in enumerate(zip(kept, coded, strict=True), start=1)]
    try:
        image = _frame_view(source, frame) if one_frame else copy.deepcopy(source)  # highdicom changes what it gets
        content = _content_digest(session_id, algorithm, series_number, image, frame, descriptions, masks)
        seg = hd.seg.Segmentation(
            source_images=[image], pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=_series_uid(session_id, algorithm, series_number),
            series_number=series_number, sop_instance_uid=_uid("instance", content), instance_number=kept[-1].number,
            manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER, software_versions=SOFTWARE_VERSION,
            device_serial_number="0", series_description=_text("MediRound dialogue segmentation", 64),
            content_label=CONTENT_LABEL, content_description=f"MediRound dialogue, session {_session_tag(session_id)}",
            coding_schemes=[LOCAL_SCHEME_ITEM] if any(_is_local(c) for c in coded) else None,
            specific_character_set="ISO_IR 192",  # questions are free text in any language
        )
    except AttributeError as e:  # highdicom reads what it needs by name: a type-1 attribute the source lacks
        raise SegmentationUnavailable(f"no DICOM SEG for this {_kind(source)}: it lacks {e.name or 'an attribute'}, "
                                      "which a segmentation of it needs; the PNG masks are unaffected") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - highdicom's messages quote the header's values: none may travel
        if coordinates is None and "frame of reference" in str(e).lower():  # an IOD that requires one (CT, MR)
            raise _no_coordinates(f"this {_kind(source)}") from None
        raise SegmentationUnavailable(f"no DICOM SEG for this {_kind(source)}: the source's header has attributes "
                                      f"a DICOM SEG cannot copy ({type(e).__name__} in highdicom); the PNG masks are "
                                      "unaffected") from None
    if one_frame:  # the view's frame 1 is the source's frame (a cine's view: a single-frame image of its kind)
        for item in seg.PerFrameFunctionalGroupsSequence:
            for derivation in item.get("DerivationImageSequence", []):
                for referenced in derivation.SourceImageSequence:
                    referenced.ReferencedFrameNumber = frame
                    referenced.ReferencedSOPClassUID = source.SOPClassUID
        if cine:  # every other reference to the source names its real class
            references = [instance for series in seg.ReferencedSeriesSequence
                          for instance in series.ReferencedInstanceSequence]
            for referenced in references + list(seg.get("SourceImageSequence", [])):
                referenced.ReferencedSOPClassUID = source.SOPClassUID
    if coordinates is None:  # General Image type 2C: a SEG without plane geometry says how the patient lies
        seg.PatientOrientation = source.get("PatientOrientation") or ""
    return SegExport(seg, [r.number for r in kept], skipped, coded)


def _no_coordinates(what: str) -> SegmentationUnavailable:
    return SegmentationUnavailable(
        f"no DICOM SEG for {what}: it has no patient coordinate system (frame of reference and plane geometry), "
        "which a segmentation of it must reference; the PNG masks are unaffected")


SINGLE_FRAME_CLASS = {
    pydicom.uid.UltrasoundMultiFrameImageStorage: pydicom.uid.UltrasoundImageStorage,
}
"""Multi-frame SOP classes without functional groups (a cine), by the single-frame class of the same images.
highdicom builds a SEG of a multi-frame source from its functional groups (enhanced images) only; a frame of a
cine is given to it as a single-frame image of that class, and the SEG's references then name the real class and
frame (Referenced Frame Number, which a multi-frame class allows)."""


def _frame_view(source: pydicom.Dataset, frame: int) -> pydicom.Dataset:
    """A multi-frame source as highdicom is to see it: ``frame`` alone, as its frame 1 (an enhanced image), or as a
    single-frame image of its kind (a cine, ``SINGLE_FRAME_CLASS``). highdicom reads every frame of a multi-frame
    source (some 4 ms each, 16 s for 4096 frames) and wants a mask for each, though the SEG is of one; the caller
    points the SEG's references back at ``frame``."""
    view = pydicom.Dataset()
    for element in source:  # the source's own elements, shared: only what is left out or set anew differs
        if element.keyword not in ("PerFrameFunctionalGroupsSequence", "NumberOfFrames", "FrameIncrementPointer",
                                   "SOPClassUID"):
            view.add(element)
    view.SOPClassUID = SINGLE_FRAME_CLASS.get(source.SOPClassUID, source.SOPClassUID)
    if source.SOPClassUID in SINGLE_FRAME_CLASS:
        return view
    view.NumberOfFrames = 1
    view.PerFrameFunctionalGroupsSequence = [copy.deepcopy(source.PerFrameFunctionalGroupsSequence[frame - 1])]
    return view


def _source_copy(header: pydicom.Dataset) -> pydicom.Dataset:
    """The header without pixel data, type-2 gaps and invalid type-2 values empty; the caller's dataset is never
    changed. A multi-frame's per-frame groups are shared, read only (highdicom, which changes what it is given, gets
    copies): copying thousands of frames would cost more than the SEG of one."""
    source = pydicom.Dataset()
    for element in header:
        if element.tag not in _PIXEL_TAGS:
            source.add(element if element.keyword == "PerFrameFunctionalGroupsSequence" else copy.deepcopy(element))
    missing = [k for k in _REFERENCED if not source.get(k)]
    if missing:
        raise SegmentationUnavailable(f"no DICOM SEG for this {_kind(source)}: it lacks {', '.join(missing)}, which "
                                      "a segmentation must reference; the PNG masks are unaffected")
    for keyword in _TYPE2:
        if keyword not in source or not _copyable(source[keyword]):
            setattr(source, keyword, "")
    if hd.spatial.get_image_coordinate_system(source) is None:
        # Without plane geometry a SEG places nothing in the patient: it states no frame of reference and no pixel
        # spacing, either of which it would have to pair with a slice thickness such a source lacks (dciodvfy,
        # highdicom's reader); its grid is the source's. An IOD that requires a frame of reference is refused later.
        for keyword in ("FrameOfReferenceUID", "PixelSpacing"):
            if keyword in source:
                delattr(source, keyword)
    return source


def _copyable(element: pydicom.DataElement) -> bool:
    """Whether a type-2 value can go into the SEG as it is: empty, or one value of its VR that highdicom takes (a
    date or time that parses, a PatientSex of the defined terms M, F, O)."""
    vr, value = element.VR, element.value
    if vr != dictionary_VR(element.tag):  # e.g. read as UN: bytes
        return False
    if element.VM != 1:
        return element.VM == 0
    try:
        validate_value(vr, str(value) if vr == "PN" else value, pydicom.config.RAISE)  # a PersonName skips lengths
        if vr in ("DA", "TM"):
            (DA if vr == "DA" else TM)(value)  # "00000000" is well formed, but no date
    except (ValueError, TypeError, OverflowError):
        return False
    return element.keyword != "PatientSex" or value in _SEXES


def _segment(number: int, r: Round, coded: CodedStructure, session_id: str,
             algorithm: Algorithm) -> hd.seg.SegmentDescription:
    parameters = {"round": str(r.number)}
    if r.reference_round is not None:
        parameters["reference_round"] = str(r.reference_round)
    if r.quality is not None:
        parameters["quality"] = f"{r.quality:.3f}"
    parameters["corrected"] = "yes" if r.corrected else "no"
    segment = hd.seg.SegmentDescription(
        segment_number=number, segment_label=_text(r.question, 64) or f"Round {r.number}",
        segmented_property_category=coded.category, segmented_property_type=coded.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, version=algorithm.version, family=codes.cid7162.ArtificialIntelligence,
            parameters=parameters),
        tracking_id=f"session {_session_tag(session_id)} round {r.number}",
        tracking_uid=_uid("tracking", session_id, r.number),
        anatomic_regions=[coded.region] if coded.region is not None else None,
    )
    if r.question.strip():
        segment.SegmentDescription = _text(r.question, 1024)
    if coded.laterality is not None:  # highdicom takes no modifiers: add the standard one to the coded item
        modifier = pydicom.Sequence([hd.sr.CodedConcept(coded.laterality.value, coded.laterality.scheme_designator,
                                                        coded.laterality.meaning)])
        if coded.region is not None:
            segment.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = modifier
        else:
            segment.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = modifier
    return segment


def _text(text: str, limit: int) -> str:
    """``text`` as one DICOM string value of at most ``limit`` characters, cut at a word where it is longer."""
    text = " ".join(text.replace("\\", "/").split())  # a backslash separates values; control characters go
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "..."


def _kind(source: pydicom.Dataset) -> str:
    sop_class = source.get("SOPClassUID")
    name = sop_class.name if isinstance(sop_class, pydicom.uid.UID) else "DICOM"
    return f"{name.removesuffix(' Storage')} ({source.get('Modality') or 'no modality'})"


def _is_local(coded: CodedStructure) -> bool:
    return coded.type.scheme_designator == LOCAL_SCHEME or (
        coded.region is not None and coded.region.scheme_designator == LOCAL_SCHEME)


def _session_tag(session_id: str) -> str:
    """What the SEG says of its session: a one-way digest, as the id itself is a capability to the session."""
    return hashlib.sha256(b"mediround-seg\0" + session_id.encode()).hexdigest()[:16]


def _content_digest(session_id: str, algorithm: Algorithm, series_number: int, image: pydicom.Dataset, frame: int,
                    descriptions: list[hd.seg.SegmentDescription], masks: list[np.ndarray]) -> str:
    """SHA-256 over everything the SEG says, each part length-prefixed so no two exports hash alike by accident:
    the software, the session, the source's header as highdicom gets it (the SEG copies patient and study from it),
    and each segment's description (label, codes, algorithm and its parameters, tracking) and mask."""
    parts = ["mediround-seg-2", SOFTWARE_VERSION, series_number, session_id, algorithm.name, algorithm.version, frame,
             _encoded(image)]
    for description, mask in zip(descriptions, masks, strict=True):
        parts += [_encoded(description), f"{mask.shape}", np.packbits(mask).tobytes()]
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _encoded(dataset: pydicom.Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def _series_uid(session_id: str, algorithm: Algorithm, series_number: int) -> str:
    """One series per session and model (and the software and series number, which a series states)."""
    return _uid("series", session_id, algorithm.name, algorithm.version, SOFTWARE_VERSION, series_number)


def _uid(purpose: str, *parts) -> str:
    """A ``2.25.`` UID (the integer of a name-based UUID, at most 44 characters) of ``purpose`` and ``parts``."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join([purpose, *map(str, parts)])).int}"
