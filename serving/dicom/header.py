"""What a DICOM instance's header says, before any pixel is decoded: the instance parsed (truncation refused),
the checks that refuse what is not a medical image or is absurdly large, and the header kept with the session.
"""

from __future__ import annotations

import copy
import io
import math
import zlib
from typing import TYPE_CHECKING, cast

from pydicom import dcmread, dcmwrite
from pydicom.datadict import DicomDictionary, dictionary_description, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from serving.errors import DicomTooLarge, InvalidDicom

if TYPE_CHECKING:
    from serving.dicom.pixels import DicomLimits

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
"""Photometric interpretations accepted besides greyscale; pydicom's decoders turn the YBR ones into RGB."""
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_TAGS = {Tag(keyword) for keyword in PIXEL_KEYWORDS}
NOT_MEDICAL = ("Hardcopy", "DICOS", "Eddy Current")
"""'... Image Storage' SOP classes that are not medical images (print, security screening, testing metal)."""
ALSO_IMAGES = {UID("1.2.840.10008.5.1.4.1.1.6.2")}  # Enhanced US Volume Storage: an image without the word
LARGE = 64 * 2**10
"""Bytes over which an element is left out of the stored header, unless a DICOM SEG needs it."""
NEEDED_WHEN_LARGE = frozenset({
    # the sequences that can grow large in the modules a SEG copies or references (patient, study, series, frame
    # of reference, general image, image plane, SOP common, enhanced images' functional groups and dimensions)
    "OtherPatientIDsSequence", "ReferencedStudySequence", "ProcedureCodeSequence", "RequestAttributesSequence",
    "ReferencedImageSequence", "SourceImageSequence", "ContributingEquipmentSequence",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "DimensionOrganizationSequence",
    "DimensionIndexSequence", "SpecimenDescriptionSequence",
})
NOT_IMAGE_MODALITIES = frozenset({  # PS3.3 C.7.3.1.1.1: what a Modality (0008,0060) of no image names
    "ANN", "ASMT", "AU", "CTPROTOCOL", "DOC", "ECG", "EEG", "EMG", "EOG", "EPS", "FID", "HD", "IOL", "KER", "KO",
    "LEN", "M3D", "OAM", "OPV", "PLAN", "POS", "PR", "REG", "RESP", "RTDOSE", "RTINTENT", "RTPLAN", "RTRAD",
    "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SMR", "SR", "SRF", "STAIN", "VA", "XAPROTOCOL",
})
"""Segmentations, reports, plans, presentation states, registrations, waveforms, measurements: an instance
relabelled with an image SOP class is refused by these."""
DAMAGED = "the DICOM bytes could not be parsed: they are damaged or truncated"


def parse(data: bytes, max_bytes: int) -> Dataset:
    """The whole instance, parsed once. Truncation is refused here, since pydicom reads a cut file without an
    error: a defined-length element comes back short, and an undefined-length one (the pixel data of a
    compressed syntax) is dropped. A deflated dataset is inflated here, to at most ``max_bytes``."""
    try:
        meta, dataset_start = _file_meta(data)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if deflated:
            data = _inflated(data, meta, dataset_start, max_bytes)
        stream = io.BytesIO(data)
        ds = dcmread(stream, stop_before_pixels=True)
        header_end = stream.tell()  # at the pixel data's tag when there is one
        implicit_vr, little_endian = cast(tuple[bool, bool], ds.original_encoding[:2])  # known: it was just read
        for element in read_dataset(stream, implicit_vr, little_endian).elements():  # the pixel data and after
            ds[element.tag] = element
    except (InvalidDicom, DicomTooLarge):
        raise
    except Exception as e:  # untrusted bytes: pydicom and zlib raise many kinds, none of them a server fault
        raise InvalidDicom(DAMAGED) from e
    if deflated:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # as sent; its dataset was inflated above
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise InvalidDicom("the DICOM instance's file meta information has no Transfer Syntax UID (0002,0010): "
                           "it is truncated or damaged")
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts its elements; these must stay raw)
        element = ds.get_item(tag)
        if (isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF
                and len(element.value or b"") < element.length):
            raise InvalidDicom(f"the DICOM instance is truncated: its {tag_name(tag)} ends after the last byte")
    if header_end < len(data) and not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise InvalidDicom("the DICOM instance is truncated: its Pixel Data (7FE0,0010) ends after the last byte")
    return ds


def _file_meta(data: bytes) -> tuple[FileMetaDataset, int]:
    """The file meta information of a Part-10 file (always Explicit VR Little Endian), and where the dataset
    after it starts."""
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                        stop_when=lambda tag, vr, length: tag.group != 2)
    return FileMetaDataset(meta), stream.tell()


def _inflated(data: bytes, meta: FileMetaDataset, dataset_start: int, max_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian instance as the same instance in Explicit VR Little Endian, its
    dataset (raw deflate, PS3.5 A.5) inflated to at most ``max_bytes``: pydicom would inflate it all at once,
    however large (a megabyte can inflate to gigabytes)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    dataset = inflater.decompress(memoryview(data)[dataset_start:], max_bytes + 1)
    if len(dataset) > max_bytes:
        raise DicomTooLarge(f"the deflated DICOM instance inflates to more than {max_bytes} bytes; at most "
                            f"{max_bytes} are accepted")
    if not inflater.eof:
        raise InvalidDicom(DAMAGED)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = DicomBytesIO()
    buffer.write(data[:132])  # the preamble and "DICM"
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return buffer.getvalue() + dataset


def check_image_class(ds: Dataset) -> UID:
    """The instance's SOP class, if it is a medical image's."""
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    if not sop_class:
        raise InvalidDicom("the DICOM instance has no SOP Class UID (0008,0016), so it names no kind of object; "
                           "image instances (CT, MR, CR, DX, US, ...) are accepted")
    sop_class = UID(str(sop_class))
    if sop_class.type != "SOP Class":
        raise InvalidDicom(f"the SOP class {sop_class} is not one this service knows; image storage classes "
                           "(CT, MR, CR, DX, MG, US, XA, NM, PET, secondary capture, ...) are accepted")
    is_image = sop_class in ALSO_IMAGES or ("Image Storage" in sop_class.name
                                            and not sop_class.name.startswith(NOT_MEDICAL))
    if not is_image:
        raise InvalidDicom(f"the DICOM instance is a {sop_class.name} object ({sop_class}), not an image; send "
                           "the image instance itself (CT, MR, CR, DX, US, ...)")
    modality = str(ds.get("Modality") or "")
    if modality in NOT_IMAGE_MODALITIES or "SegmentSequence" in ds:
        what = (f"its Modality is {modality}" if modality in NOT_IMAGE_MODALITIES
                else "it has a SegmentSequence (0062,0002)")
        raise InvalidDicom(f"the DICOM instance says it is a {sop_class.name} object, but {what}: it is not an image "
                           "(a segmentation, report, plan, presentation state, ...); send the image instance itself "
                           "(CT, MR, CR, DX, US, ...)")
    return sop_class


def check_pixel_module(ds: Dataset, sop_class: UID, limits: DicomLimits) -> int:
    """The instance's number of frames, once its pixel description is within ``limits`` (header only)."""
    if "PixelData" not in ds:
        raise InvalidDicom(f"the {sop_class.name} instance has no pixel data (7FE0,0010); send "
                           "the instance with its pixels")
    for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise InvalidDicom(f"the image has no {keyword} {tag_of(keyword)}, so its pixels cannot be read")
    try:
        value = ds.get("NumberOfFrames")
        frames = 1.0 if value in (None, "") else float(value)
    except (TypeError, ValueError):
        frames = math.nan
    if not frames.is_integer():  # nor are NaN and infinity
        raise InvalidDicom("the image's NumberOfFrames (0028,0008) is not a whole number; a number of frames from 1 "
                           f"to {limits.max_frames} is accepted")
    frames = int(frames)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if max(rows, columns) > limits.max_side:
        raise DicomTooLarge(f"the image is {columns}x{rows} (columns x rows); sides up to {limits.max_side} "
                            "pixels are accepted")
    if frames > limits.max_frames:
        raise DicomTooLarge(f"the instance has {frames} frames; at most {limits.max_frames} are accepted")
    if frames < 1:
        raise InvalidDicom("the image's NumberOfFrames (0028,0008) is less than 1; a number of frames from 1 to "
                           f"{limits.max_frames} is accepted")
    if min(rows, columns) < limits.min_side or max(rows, columns) > limits.max_aspect_ratio * min(rows, columns):
        raise InvalidDicom(f"the image is {columns}x{rows} (columns x rows); sides of at least {limits.min_side} "
                           f"pixels and at most {limits.max_aspect_ratio:g} times longer than wide are accepted")
    photometric = str(ds.PhotometricInterpretation)
    if photometric not in GREYSCALE + COLOUR:
        raise InvalidDicom(f"the photometric interpretation {photometric} is not accepted; accepted are "
                           f"{', '.join(GREYSCALE + COLOUR)}")
    samples = 1 if photometric in GREYSCALE + ("PALETTE COLOR",) else 3
    if int(ds.SamplesPerPixel) != samples:
        raise InvalidDicom(f"the image is {photometric} with {ds.SamplesPerPixel} samples per pixel; "
                           f"{photometric} has {samples}")
    if photometric == "PALETTE COLOR":
        _check_palette(ds)
    return frames


def _check_palette(ds: Dataset) -> None:
    """Refuses a palette colour image without the tables its pixels are looked up in."""
    for colour in ("Red", "Green", "Blue"):
        descriptor, data = f"{colour}PaletteColorLookupTableDescriptor", f"{colour}PaletteColorLookupTableData"
        if descriptor not in ds or ds[descriptor].VM != 3:
            missing = f"{descriptor} {tag_of(descriptor)} of 3 values"
        elif all(keyword not in ds or ds[keyword].is_empty for keyword in (data, f"Segmented{data}")):
            missing = f"{data} {tag_of(data)} (nor its segmented form)"
        else:
            continue
        raise InvalidDicom(f"the PALETTE COLOR image has no {missing}; a palette colour image with each colour's "
                           "descriptor and table data is accepted")


def stored_header(ds: Dataset, max_bytes: int) -> bytes:
    """The instance's header as the session keeps it and a DICOM SEG reads it: a Part-10 file in Explicit VR
    Little Endian, without the pixel data, private elements (nested ones too), overlays, curves and elements over
    ``LARGE`` bytes that a SEG does not need; refused over ``max_bytes``."""
    header = Dataset()
    for tag in ds.keys():  # noqa: SIM118 (raw elements stay raw)
        element = ds.get_item(tag)
        if tag in PIXEL_TAGS or tag.is_private or tag.group >> 8 in (0x50, 0x60):  # 50xx curves, 60xx overlays
            continue
        if _size(element) <= LARGE or keyword_for_tag(tag) in NEEDED_WHEN_LARGE:
            header.add(element)
    header = copy.deepcopy(header)  # the instance's own sequences stay as they are
    header.remove_private_tags()
    header.file_meta = copy.deepcopy(ds.file_meta)
    for keyword in ("PrivateInformationCreatorUID", "PrivateInformation"):
        header.file_meta.pop(keyword, None)
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, header, enforce_file_format=True)
    except Exception as e:  # a value pydicom read but cannot write back: the header is damaged
        raise InvalidDicom("the DICOM header could not be encoded again for storage: a value in it is damaged") from e
    if buffer.tell() > max_bytes:
        raise DicomTooLarge(f"the DICOM instance's header is {buffer.tell()} bytes without its pixel data, private "
                            f"elements, overlays and large elements a segmentation does not need; at most {max_bytes} "
                            "are accepted")
    return buffer.getvalue()


def _size(element: DataElement | RawDataElement) -> int:
    """About how many bytes an element's value takes (a sequence: its items' elements)."""
    if isinstance(element, RawDataElement):  # as read: its bytes
        return len(element.value or b"")
    if element.VR == "SQ":
        return sum(_size(item.get_item(tag)) for item in element.value for tag in item.keys())  # noqa: SIM118
    value = element.value
    return len(value) if isinstance(value, bytes | str) else 8 * max(element.VM, 1)


def tag_name(tag: int) -> str:
    tag = Tag(tag)
    name = dictionary_description(tag) if tag in DicomDictionary else "element"
    return f"{name} ({tag.group:04X},{tag.element:04X})"


def tag_of(keyword: str) -> str:
    tag = Tag(keyword)
    return f"({tag.group:04X},{tag.element:04X})"
