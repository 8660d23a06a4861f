"""DICOM Part-10 bytes -> the model's picture (uint8 (H, W, 3)), explicitly and reproducibly: the one place that
does it.

In order, each step recorded in ``DicomRendering`` so that a result can be reproduced:
1. refuse what is not a decodable image, from the header, before any pixel is decoded (truncated, not an image
   SOP class, no pixel data, absurd sizes: ``serving.dicom.header``; a transfer syntax without a decoder here);
2. decode the one frame asked for (pydicom, with its permissively licensed plugins);
3. greyscale: the modality LUT (rescale, taken from an enhanced image's functional groups when it has them:
   pydicom's ``apply_modality_lut`` reads only the top level), then a VOI window (``serving.dicom.voi``), then
   MONOCHROME1 or Presentation LUT Shape INVERSE inverted so that the picture shows as a viewer shows it;
   colour: RGB as decoded (pydicom turns YBR into RGB), palette colour through its lookup table.

``DicomImage.header`` holds patient identity: store it with the session, never log it (its repr leaves it out).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder, pixel_array
from pydicom.uid import UID, AllTransferSyntaxes, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1

from serving.dicom.header import GREYSCALE, check_image_class, check_pixel_module, parse, stored_header, tag_of
from serving.dicom.voi import FUNCTIONS, VoiChoice, apply_window, window_is_valid
from serving.errors import DicomTooLarge, InvalidDicom, InvalidDicomOptions

DECODER_HINTS = {  # what would decode a syntax no installed plugin decodes, licence first (GPL stays out)
    JPEGLossless: "python-gdcm (Apache-2.0) would decode it",
    JPEGLosslessSV1: "python-gdcm (Apache-2.0) would decode it",
}


@dataclass(frozen=True)
class DicomLimits:
    """What ``read_dicom`` accepts; sized for DICOM: an uncompressed DX is ~18 MB, a 50 µm mammogram
    ~4700 x 5900 pixels."""

    max_bytes: int = 60 * 2**20
    """Of the Part-10 instance as sent or fetched, all frames together: under the 64 MiB gRPC message limit, so
    that an instance sent in a ``CreateSession`` fits with the rest of the request. The one DICOM byte limit: the
    edge (``serving.dicom.edge``) and the PACS client read it from here."""
    max_side: int = 6144
    """Rows and columns of a frame, each."""
    min_side: int = 16
    max_aspect_ratio: float = 8.0
    """Longest side over shortest: a sliver would shrink to nothing in the model's input."""
    max_frames: int = 4096
    max_header_bytes: int = 2**20
    """Of the header kept with the session (``DicomImage.header``)."""

    def __post_init__(self):
        for name in ("max_bytes", "max_side", "min_side", "max_frames", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be at least 1, got {self.max_aspect_ratio}")


@dataclass(frozen=True)
class DicomIdentity:
    """Which image the picture is of, as DICOM names it ("" where the instance lacks an attribute)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    frame: int
    """1-based, of ``number_of_frames``."""
    number_of_frames: int


@dataclass(frozen=True)
class DicomRendering:
    """How the stored pixels became the picture: enough to reproduce it from the same instance."""

    transfer_syntax_uid: str
    transfer_syntax: str
    """Its name, e.g. "JPEG 2000 Image Compression (Lossless Only)"."""
    photometric_interpretation: str
    """As stored (YBR and palette colour were turned into RGB)."""
    bits_stored: int
    rescale_slope: float
    rescale_intercept: float
    """Modality LUT: stored value * slope + intercept (1 and 0 when none applies)."""
    rescale_source: str
    """Where the rescale came from: "header", "per-frame functional groups", "shared functional groups",
    "modality LUT sequence" (a table; slope and intercept then read 1 and 0) or "none"."""
    window_center: float
    window_width: float
    """The VOI window applied; 0 and 0 when none was (colour, or the header's VOI LUT)."""
    window_function: str
    """LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1); "" without a window."""
    window_source: str
    """"header", "header VOI LUT", "preset:<name>", "explicit", "full range" (the frame's lowest to highest
    modality value, leaving out padding and values that overflowed) or "none" (colour)."""
    inverted: bool
    """MONOCHROME1 (low values bright), or Presentation LUT Shape INVERSE, was inverted so that the picture shows
    as a viewer shows it."""


@dataclass(frozen=True, eq=False)
class DicomImage:
    """One frame of a DICOM instance as the model's picture, with what it is and how it was made."""

    pixels: np.ndarray = field(repr=False)
    """uint8 (H, W, 3)."""
    identity: DicomIdentity
    rendering: DicomRendering
    header: bytes = field(repr=False)
    """The instance without its pixel data, private elements, overlays and large elements a SEG does not need, as
    Part-10 bytes in Explicit VR Little Endian (for the session and a SEG). Patient identity: never log it."""


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part-10 file: "DICM" after the 128-byte preamble (PS3.10 7.1). Never a
    forced parse: pydicom's ``force=True`` reads garbage without an error."""
    return data[128:132] == b"DICM"


def decodable_syntaxes() -> list[UID]:
    """The transfer syntaxes whose pixel data decodes with what is installed here."""
    return [uid for uid in AllTransferSyntaxes if _decoder(uid) is not None and _decoder(uid).is_available]


IMAGE_WINDOW = VoiChoice()
"""The image's own window: the header's, else its VOI LUT, else the full range."""
DEFAULT_LIMITS = DicomLimits()


def read_dicom(data: bytes, *, frame: int = 1, voi: VoiChoice = IMAGE_WINDOW,
               limits: DicomLimits = DEFAULT_LIMITS) -> DicomImage:
    """Frame ``frame`` (1-based) of a DICOM Part-10 instance as the model's picture, windowed as ``voi`` asks.

    Refuses, saying what was wrong and what is accepted: InvalidDicom (not an image this service decodes),
    DicomTooLarge (over ``limits``), InvalidDicomOptions (a frame or window this image cannot take).
    """
    if not is_dicom(data):
        raise InvalidDicom("the bytes are not a DICOM Part-10 file (no 'DICM' after the 128-byte preamble); "
                           "send a DICOM instance with its file meta information")
    if len(data) > limits.max_bytes:
        raise DicomTooLarge(f"the DICOM instance is {len(data)} bytes; at most {limits.max_bytes} are accepted")
    ds = parse(data, limits.max_bytes)
    sop_class = check_image_class(ds)
    frames = check_pixel_module(ds, sop_class, limits)
    if not 1 <= frame <= frames:
        raise InvalidDicomOptions(f"frame {frame} is out of range: the instance has {frames} "
                                  f"frame{'s' if frames > 1 else ''} (1 to {frames})")
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    _check_decodable(syntax, ds)
    photometric = str(ds.PhotometricInterpretation)
    modality = str(ds.get("Modality") or "")
    _check_voi(voi, photometric, modality)
    header_bytes = stored_header(ds, limits.max_header_bytes)  # before decoding: it may refuse the instance

    stored = _decode(ds, frame - 1, syntax)  # (H, W) or (H, W, 3)
    if photometric in GREYSCALE:
        values, slope, intercept, rescale_source = _modality_values(stored, ds, frame - 1)
        spanned = np.isfinite(values) & ~_padding(stored, ds)  # what a full-range window spans
        grey, center, width, function, window_source = _window(values, spanned, ds, frame - 1, voi)
        inverted = photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape") or "") == "INVERSE"
        pixels = np.repeat((255 - grey if inverted else grey)[..., None], 3, axis=2)
    else:
        pixels = _rgb(stored, ds)
        slope, intercept, rescale_source = 1.0, 0.0, "none"
        center, width, function, window_source, inverted = 0.0, 0.0, "", "none", False

    identity = DicomIdentity(
        study_instance_uid=str(ds.get("StudyInstanceUID") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID") or ""),
        sop_class_uid=str(sop_class), modality=modality, frame=frame, number_of_frames=frames)
    rendering = DicomRendering(
        transfer_syntax_uid=str(syntax), transfer_syntax=syntax.name, photometric_interpretation=photometric,
        bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated), rescale_slope=slope,
        rescale_intercept=intercept, rescale_source=rescale_source, window_center=center, window_width=width,
        window_function=function, window_source=window_source, inverted=inverted)
    return DicomImage(pixels=np.ascontiguousarray(pixels), identity=identity, rendering=rendering,
                      header=header_bytes)


def _check_decodable(syntax: UID, ds: Dataset) -> None:
    """Refuses a transfer syntax whose pixel data no installed decoder reads, naming it and what would."""
    decoder = _decoder(syntax)
    accepted = "; ".join(uid.name.replace(" Image Compression", "") for uid in decodable_syntaxes())
    if decoder is None:
        raise InvalidDicom(f"the transfer syntax {_syntax_name(syntax)} has no decoder in this service; send the "
                           f"instance in one of: {accepted}")
    if not decoder.is_available:
        hint = DECODER_HINTS.get(syntax) or "; ".join(decoder.missing_dependencies)
        raise InvalidDicom(f"the transfer syntax {_syntax_name(syntax)} cannot be decoded here ({hint}); send the "
                           f"instance in one of: {accepted}")
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if syntax == JPEGExtended12Bit and bits > 8 and set(decoder.available_plugins) <= {"pillow", "gdcm"}:
        raise InvalidDicom(f"the transfer syntax {_syntax_name(syntax)} with {bits}-bit samples cannot be decoded "
                           "here (Pillow and GDCM decode 8-bit samples only; pylibjpeg-libjpeg decodes 12-bit but "
                           f"is GPLv3, so it is not installed); send the instance in one of: {accepted}")


def _check_voi(voi: VoiChoice, photometric: str, modality: str) -> None:
    """Refuses a window the image cannot take."""
    if voi.window is None:
        return
    if photometric not in GREYSCALE:
        raise InvalidDicomOptions(f"a window applies to greyscale images; this one is {photometric}: ask for "
                                  "none")
    if voi.preset.startswith("ct-") and modality != "CT":
        raise InvalidDicomOptions(f"the preset {voi.preset} is a CT window in Hounsfield units; this image's "
                                  f"modality is {modality or 'not given'}: use its own window or an explicit one")


def _decode(ds: Dataset, index: int, syntax: UID) -> np.ndarray:
    """The stored values of frame ``index`` (0-based) only; YBR comes back as RGB."""
    try:
        return pixel_array(ds, index=index)
    except Exception as e:  # the decoders raise many kinds for a damaged codestream
        raise InvalidDicom(f"the pixel data ({syntax.name}) could not be decoded: {_reason(e)}") from e


def _modality_values(stored: np.ndarray, ds: Dataset, index: int) -> tuple[np.ndarray, float, float, str]:
    """(modality values as float64, slope, intercept, where they came from) for frame ``index``."""
    item, where = _frame_item(ds, index, "PixelValueTransformationSequence")
    if item is None or "RescaleSlope" not in item:
        if ds.get("ModalityLUTSequence"):  # a table, not a line: pydicom applies it
            values, _ = _through_table(apply_modality_lut, stored, ds, "ModalityLUTSequence")
            return values, 1.0, 0.0, "modality LUT sequence"
        item, where = ds, "header"
    slope, intercept = _finite(item, "RescaleSlope"), _finite(item, "RescaleIntercept")
    if slope is None and intercept is None:
        return stored.astype(np.float64), 1.0, 0.0, "none"
    slope, intercept = 1.0 if slope is None else slope, 0.0 if intercept is None else intercept
    with np.errstate(over="ignore"):  # a huge slope overflows to infinity, which the full range leaves out
        return stored.astype(np.float64) * slope + intercept, slope, intercept, where


def _window(values: np.ndarray, spanned: np.ndarray, ds: Dataset, index: int,
            voi: VoiChoice) -> tuple[np.ndarray, float, float, str, str]:
    """(uint8 grey levels, centre, width, function, source): the caller's window, else the header's, else its
    VOI LUT, else the full range of the frame's values where ``spanned``."""
    if voi.window is not None:
        center, width = voi.window
        return apply_window(values, center, width, "LINEAR_EXACT"), center, width, "LINEAR_EXACT", voi.source
    if (header := _header_window(ds, index)) is not None:
        center, width, function = header
        return apply_window(values, center, width, function), center, width, function, "header"
    if ds.get("VOILUTSequence"):  # its table is indexed by integers; its entries are 0 .. 2**bits - 1
        table, bits = _through_table(apply_voi, np.round(values).astype(np.int64), ds, "VOILUTSequence", index=0)
        grey = np.floor(np.clip(table / (2**bits - 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return grey, 0.0, 0.0, "", "header VOI LUT"
    shown = values[spanned]
    low, high = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 0.0)
    center, width = low / 2 + high / 2, max(high - low, 1.0)  # a constant frame shows mid grey
    return apply_window(values, center, width, "LINEAR_EXACT"), center, width, "LINEAR_EXACT", "full range"


def _padding(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Where the frame's stored values are padding, not image: PixelPaddingValue, or from it to
    PixelPaddingRangeLimit (PS3.3 C.7.5.1.1.2)."""
    value, limit = _number(ds, "PixelPaddingValue"), _number(ds, "PixelPaddingRangeLimit")
    if value is None:
        return np.zeros(stored.shape, dtype=bool)
    low, high = sorted((value, value if limit is None else limit))
    return (stored >= low) & (stored <= high)


def _header_window(ds: Dataset, index: int) -> tuple[float, float, str] | None:
    """The header's first window for frame ``index`` (functional groups first), if it has a valid one."""
    item, _ = _frame_item(ds, index, "FrameVOILUTSequence")
    source = item if item is not None else ds
    center, width = _number(source, "WindowCenter"), _number(source, "WindowWidth")
    function = str(source.get("VOILUTFunction") or "LINEAR").upper()
    if center is None or width is None or not math.isfinite(center) or function not in FUNCTIONS:
        return None  # a header window that cannot be applied is no window
    return (center, width, function) if window_is_valid(width, function) else None


def _number(source: Dataset, keyword: str) -> float | None:
    """``keyword`` of ``source`` as a number (the first of several), None when absent or empty; refused, by name
    and never by value (a header's values can be patient data), when not a number."""
    try:
        value = source.get(keyword)
        if isinstance(value, MultiValue):
            value = value[0]  # an empty first value is no number
        elif value in (None, ""):
            return None
        return float(value)
    except (TypeError, ValueError, IndexError):
        raise InvalidDicom(f"the image's {keyword} {tag_of(keyword)} is not a number; a decimal number is "
                           "accepted") from None


def _finite(source: Dataset, keyword: str) -> float | None:
    """``_number``, refused when it is not finite (NaN, infinity)."""
    value = _number(source, keyword)
    if value is not None and not math.isfinite(value):
        raise InvalidDicom(f"the image's {keyword} {tag_of(keyword)} is not a finite number; a finite decimal "
                           "number is accepted")
    return value


def _through_table(apply, values: np.ndarray, ds: Dataset, keyword: str, **kwargs) -> tuple[np.ndarray, int]:
    """``values`` through the first lookup table of sequence ``keyword`` by pydicom's ``apply``, as float64, and
    the depth of the table's entries in bits; refused, by name, when the table is incomplete or damaged."""
    item = ds[keyword][0]
    for name in ("LUTDescriptor", "LUTData"):
        if name not in item or item[name].is_empty:
            raise InvalidDicom(f"the image's {keyword} {tag_of(keyword)} has a table without {name} {tag_of(name)}; "
                               "a lookup table with its LUTDescriptor and LUTData is accepted")
    try:
        if item["LUTDescriptor"].VM != 3:
            raise ValueError
        return apply(values, ds, **kwargs).astype(np.float64), int(item.LUTDescriptor[2])
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        raise InvalidDicom(f"the image's {keyword} {tag_of(keyword)} could not be applied: its LUTDescriptor "
                           "(0028,3002) does not describe its LUTData (0028,3006)") from None


def _frame_item(ds: Dataset, index: int, keyword: str) -> tuple[Dataset | None, str]:
    """The first item of functional group ``keyword`` for frame ``index`` of an enhanced image, per-frame groups
    before shared ones (PS3.3 C.7.6.16), and where it was found; (None, "") for other images."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if index < len(per_frame) and per_frame[index].get(keyword):
        return per_frame[index][keyword][0], "per-frame functional groups"
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    if shared and shared[0].get(keyword):
        return shared[0][keyword][0], "shared functional groups"
    return None, ""


def _rgb(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Decoded colour pixels -> uint8 (H, W, 3): palette colour through its table, deeper samples scaled."""
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])  # 8 or 16 bits per table entry
        if not ds.original_encoding[1]:
            _tables_to_little_endian(ds)
        try:
            rgb = apply_color_lut(stored, ds)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            raise InvalidDicom("the image's palette colour lookup tables could not be applied: their descriptors "
                               "do not describe their data") from None
    else:
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
        rgb = stored
    if bits == 8 and rgb.dtype == np.uint8:
        return rgb
    return np.floor(np.clip(rgb / (2**bits - 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _tables_to_little_endian(ds: Dataset) -> None:
    """Byte-swaps a big-endian instance's palette tables in place: pydicom 3.0.2's ``apply_color_lut`` reads
    (non-segmented) OW table data as little endian whatever the instance's encoding."""
    for colour in ("Red", "Green", "Blue", "Alpha"):
        keyword = f"{colour}PaletteColorLookupTableData"
        if keyword in ds and ds[keyword].VR == "OW" and ds[keyword].value:
            ds[keyword].value = np.frombuffer(ds[keyword].value, dtype=">u2").astype("<u2").tobytes()


def _decoder(syntax: UID):
    """pydicom's decoder for ``syntax``, or None where pydicom has none at all."""
    try:
        return get_decoder(syntax)
    except NotImplementedError:
        return None


def _reason(error: Exception) -> str:
    """pydicom's or a decoder's message on one line, without the traceback pydicom appends to some, paths or
    object addresses."""
    text = " ".join(str(error).split("Traceback")[0].split())
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the bytes", text)  # e.g. "<_io.BytesIO object at 0x7f..>"
    return re.sub(r"0x[0-9a-fA-F]{6,}|(/[\w.+-]+){2,}", "", text)[:300]


def _syntax_name(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)
