"""serving.dicom.pixels and .voi on real DICOM instances (pydicom-data: CR, CT, MR, US of several vendors, some
multi-frame, several transfer syntaxes): lossless twins decode to the same picture, MONOCHROME1 shows as a viewer
shows it, CT windows give grey levels computed here by hand, the enhanced image's functional groups are used, and
every refusal names what was wrong."""

from __future__ import annotations

import io
import re
import tracemalloc
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from serving.dicom.pixels import DicomLimits, decodable_syntaxes, is_dicom, read_dicom
from serving.dicom.voi import PRESETS, VoiChoice, apply_window
from serving.errors import DicomTooLarge, InvalidDicom, InvalidDicomOptions


@cache
def dicom_bytes(name: str) -> bytes:
    """A test instance's bytes; pydicom-data (a dev dependency) ships the larger real ones."""
    path = get_testdata_file(name, download=False)
    assert path, f"{name} is missing: pip install pydicom-data (the dev extra)"
    return Path(path).read_bytes()


def dataset(name: str, **changes) -> Dataset:
    ds = dcmread(io.BytesIO(dicom_bytes(name)))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(name: str, **kwargs):
    return read_dicom(dicom_bytes(name), **kwargs)


def refusal(kind, data: bytes, **kwargs) -> str:
    """read_dicom's refusal of ``data``, as its message; a message never carries a traceback, path or address."""
    with pytest.raises(kind) as caught:
        read_dicom(data, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message and " object at " not in message, message
    assert not re.search(r"/[\w.-]+/|0x[0-9a-f]{6}", message), message
    return message


# --- recognising DICOM


def test_dicom_is_recognised_by_its_preamble_only():
    assert is_dicom(dicom_bytes("CT_small.dcm"))
    assert not is_dicom(dicom_bytes("no_meta.dcm"))  # a DICOM dataset without the Part-10 preamble
    assert not is_dicom(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert not is_dicom(b"DICM" + bytes(200))
    assert not is_dicom(b"")


# --- lossless twins: the same picture from every transfer syntax

TWINS = [  # (uncompressed, the same image in another syntax, frame)
    ("693_UNCR.dcm", "693_J2KR.dcm", 1),  # CT, JPEG 2000 lossless
    ("MR2_UNCR.dcm", "MR2_J2KR.dcm", 1),  # MR (Philips), JPEG 2000 lossless
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm", 1),  # CR chest (Philips), MONOCHROME1, JPEG 2000 lossless
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm", 1),  # CR leg (Fuji), MONOCHROME1
    ("US1_UNCR.dcm", "US1_J2KR.dcm", 1),  # US (GE), RGB and YBR_RCT in JPEG 2000 lossless
    ("emri_small.dcm", "emri_small_RLE.dcm", 10),  # enhanced MR, 10 frames: RLE
    ("emri_small.dcm", "emri_small_big_endian.dcm", 4),  # explicit big endian
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", 7),
    ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm", 10),  # JPEG-LS lossless
    ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm", 1),  # US (Philips), palette colour
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", 1),  # palette tables in big endian
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm", 2),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", 2),
    ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm", 1),  # US (Aloka), 16-bit segmented palette
    ("SC_rgb.dcm", "SC_rgb_rle.dcm", 1),
    ("SC_rgb.dcm", "SC_rgb_expb.dcm", 1),
    ("SC_rgb.dcm", "SC_rgb_16bit.dcm", 1),  # 16-bit samples scaled to 8
    ("MR_small.dcm", "MR_small_implicit.dcm", 1),  # MR (Toshiba): implicit little endian
    ("MR_small.dcm", "MR_small_jp2klossless.dcm", 1),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", 1),
    ("MR_small.dcm", "MR_small_RLE.dcm", 1),
    # lossy JPEG 2000 and JPEG baseline against the reference decoders' uncompressed output of the same
    # codestream: the decoders here are bit-exact with them
    ("693_UNCI.dcm", "693_J2KI.dcm", 1),
    ("RG3_UNCI.dcm", "RG3_J2KI.dcm", 1),
    ("SC_rgb_dcmtk_ebcynp_dcmd.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", 1),  # YBR_FULL_422 JPEG baseline (dcmtk)
]


@pytest.mark.parametrize(("plain", "other", "frame"), TWINS, ids=[other for _, other, _ in TWINS])
def test_twins_give_the_same_picture(plain, other, frame):
    a, b = read(plain, frame=frame), read(other, frame=frame)
    encoding = ("transfer_syntax_uid", "bits_stored")
    assert [getattr(a.rendering, k) for k in encoding] != [getattr(b.rendering, k) for k in encoding]
    assert np.array_equal(a.pixels, b.pixels)
    assert a.pixels.dtype == np.uint8 and a.pixels.shape[2] == 3
    keep = ("rescale_slope", "rescale_intercept", "window_center", "window_width", "window_source", "inverted")
    assert [getattr(a.rendering, k) for k in keep] == [getattr(b.rendering, k) for k in keep]


def test_deflate_gives_the_same_picture():
    ds = dataset("693_UNCR.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # pydicom deflates the dataset on writing
    deflated = read_dicom(part10(ds))
    assert deflated.rendering.transfer_syntax == "Deflated Explicit VR Little Endian"
    assert np.array_equal(deflated.pixels, read("693_UNCR.dcm").pixels)


def deflated_with_zeros(size: int) -> bytes:
    """CT_small deflated, with ``size`` zero bytes in a private element: it deflates to about a thousandth."""
    ds = dataset("CT_small.dcm")
    ds.add_new(0x00090010, "LO", "MEDIROUND TEST")
    ds.add_new(0x00091010, "OB", bytes(size))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return part10(ds)


def test_deflate_is_inflated_within_the_byte_limit():
    """The byte limit holds for what a deflated instance inflates to, and nothing is inflated far past it
    (pydicom alone would inflate it all, twice)."""
    data = deflated_with_zeros(16 * 2**20)
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        message = refusal(DicomTooLarge, data, limits=DicomLimits(max_bytes=2**20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "inflates to more than 1048576 bytes" in message and "1048576 are accepted" in message
    assert peak < 6 * 2**20
    assert read_dicom(data).rendering.transfer_syntax_uid == DeflatedExplicitVRLittleEndian  # within the default


def test_jpeg_lossless_decodes_with_gdcm_or_names_it():
    """Process 14 has no decoder among the default dependencies; python-gdcm (Apache-2.0) decodes it."""
    try:
        import gdcm  # noqa: F401
    except ImportError:
        message = refusal(InvalidDicom, dicom_bytes("SC_rgb_jpeg_gdcm.dcm"))
        assert "JPEG Lossless" in message and JPEGLosslessSV1 in message and "python-gdcm" in message
        assert JPEGLosslessSV1 not in decodable_syntaxes()
    else:
        assert np.array_equal(read("SC_rgb_jpeg_gdcm.dcm").pixels, read("SC_rgb.dcm").pixels)


def test_decodable_syntaxes():
    syntaxes = decodable_syntaxes()
    for uid in (RLELossless, JPEG2000Lossless, JPEGLSLossless, DeflatedExplicitVRLittleEndian):
        assert uid in syntaxes
    assert MPEG2MPML not in syntaxes


# --- greyscale: rescale, window, MONOCHROME1


def test_ct_header_window_by_hand():
    """693_UNCR: HU = stored - 1024; the header's window 40/100, LINEAR:
    y = ((HU - 39.5) / 99 + 0.5) * 255, clamped to 0..255, rounded half up."""
    image = read("693_UNCR.dcm")
    r = image.rendering
    assert (r.rescale_slope, r.rescale_intercept, r.rescale_source) == (1.0, -1024.0, "header")
    assert (r.window_center, r.window_width, r.window_function, r.window_source) == (40, 100, "LINEAR", "header")
    assert not r.inverted and r.photometric_interpretation == "MONOCHROME2" and r.bits_stored == 14
    stored = pixel_array(dataset("693_UNCR.dcm"))
    expected = {  # (row, column): (stored, grey)
        (0, 0): (-2000, 0),  # outside the scan: -3024 HU
        (99, 266): (1000, 0),  # -24 HU <= c - 0.5 - (w - 1) / 2 = -10
        (256, 256): (1048, 88),  # 24 HU: (-15.5 / 99 + 0.5) * 255 = 87.58
        (120, 327): (1089, 193),  # 65 HU: (25.5 / 99 + 0.5) * 255 = 193.18
        (130, 263): (1090, 196),  # 66 HU: (26.5 / 99 + 0.5) * 255 = 195.76
        (197, 150): (2492, 255),  # 1468 HU: bone
    }
    for (row, column), (value, grey) in expected.items():
        assert stored[row, column] == value
        assert tuple(image.pixels[row, column]) == (grey, grey, grey), (row, column)


def test_ct_presets_and_explicit_windows_by_hand():
    """Presets and explicit windows are LINEAR_EXACT: y = (HU - c) / w + 0.5."""
    at = {(256, 256): 24, (99, 266): -24, (130, 263): 66, (197, 150): 1468, (0, 0): -3024}  # HU
    cases = [
        (VoiChoice(preset="ct-lung"), "preset:ct-lung", (-600, 1500),  # (HU + 600) / 1500 + 0.5
         {(256, 256): 234, (99, 266): 225, (197, 150): 255, (0, 0): 0}),  # 233.58, 225.42
        (VoiChoice(preset="ct-brain"), "preset:ct-brain", (40, 80),  # (HU - 40) / 80 + 0.5
         {(256, 256): 77, (130, 263): 210, (99, 266): 0}),  # 76.5 rounds up; 210.375
        (VoiChoice(center=0, width=2000), "explicit", (0, 2000), {(256, 256): 131}),  # 130.56
    ]
    for voi, source, window, greys in cases:
        image = read("693_UNCR.dcm", voi=voi)
        r = image.rendering
        assert (r.window_center, r.window_width, r.window_function, r.window_source) == (*window, "LINEAR_EXACT",
                                                                                          source)
        for (row, column), grey in greys.items():
            assert image.pixels[row, column, 0] == grey, (voi, at[row, column])


def test_full_range_without_a_header_window():
    """JPEG2000_UNC (NM, no window): its lowest value shows black, its highest white."""
    image = read("JPEG2000_UNC.dcm")
    stored = pixel_array(dataset("JPEG2000_UNC.dcm")).astype(float)
    r = image.rendering
    assert r.window_source == "full range" and r.window_function == "LINEAR_EXACT"
    assert (r.window_center, r.window_width) == ((stored.min() + stored.max()) / 2, stored.max() - stored.min())
    assert image.pixels[..., 0][stored == stored.min()].max() == 0
    assert image.pixels[..., 0][stored == stored.max()].min() == 255


def test_monochrome1_shows_as_a_viewer_shows_it():
    """RG3 (CR leg, MONOCHROME1: low stored values are bright): the tibia shows bright, the air beside the leg dark."""
    image = read("RG3_UNCR.dcm")
    stored = pixel_array(dataset("RG3_UNCR.dcm"))
    air, bone = (slice(870, 890), slice(560, 580)), (slice(870, 890), slice(870, 890))
    assert stored[air].mean() > 900 > 400 > stored[bone].mean()  # as stored: air high, bone low
    grey = image.pixels[..., 0]
    assert grey[air].mean() < 40 and grey[bone].mean() > 150
    assert image.rendering.inverted and image.rendering.photometric_interpretation == "MONOCHROME1"
    plain = apply_window(stored, image.rendering.window_center, image.rendering.window_width, "LINEAR")
    assert np.array_equal(grey, 255 - plain)


def test_presentation_lut_shape_inverse():
    """INVERSE inverts a MONOCHROME2 image; on MONOCHROME1 it says what MONOCHROME1 says (PS3.3 C.8.11.7: a DX
    pairs them), so the picture is inverted once."""
    plain = read("693_UNCR.dcm")
    image = read_dicom(part10(dataset("693_UNCR.dcm", PresentationLUTShape="INVERSE")))
    assert image.rendering.inverted and not plain.rendering.inverted
    assert np.array_equal(image.pixels, 255 - plain.pixels)
    image = read_dicom(part10(dataset("RG3_UNCR.dcm", PresentationLUTShape="INVERSE")))
    assert image.rendering.inverted and np.array_equal(image.pixels, read("RG3_UNCR.dcm").pixels)


def test_the_full_range_leaves_padding_out():
    """693_UNCR pads outside the scan with -2000 (PixelPaddingValue; -3024 HU): the full range spans the scan,
    and with PixelPaddingRangeLimit the values from the padding value to the limit are left out too."""
    ds = dataset("693_UNCR.dcm")
    del ds.WindowCenter, ds.WindowWidth
    stored = pixel_array(ds).astype(float)
    scan = stored[stored != -2000]
    assert ds.PixelPaddingValue == -2000 and (stored == -2000).mean() > 0.1
    image = read_dicom(part10(ds))
    r = image.rendering
    assert r.window_source == "full range"
    assert (r.window_center, r.window_width) == ((scan.min() + scan.max()) / 2 - 1024, scan.max() - scan.min())
    assert image.pixels[0, 0, 0] == 0  # padding: below the range
    ds.add_new("PixelPaddingRangeLimit", "SS", int(scan.min()))
    r = read_dicom(part10(ds)).rendering
    assert r.window_center - r.window_width / 2 == scan[scan > scan.min()].min() - 1024


def test_enhanced_image_uses_its_shared_functional_groups():
    """eCT_Supplemental (enhanced CT, 2 frames): its rescale (-1024) and window (49/102) are only in the shared
    functional groups, which pydicom's apply_modality_lut does not read."""
    image = read("eCT_Supplemental.dcm", frame=2)
    r = image.rendering
    assert (r.rescale_slope, r.rescale_intercept, r.rescale_source) == (1.0, -1024.0, "shared functional groups")
    assert (r.window_center, r.window_width, r.window_source) == (49, 102, "header")
    stored = pixel_array(dataset("eCT_Supplemental.dcm"), index=1)
    assert np.array_equal(image.pixels[..., 0], apply_window(stored - 1024.0, 49, 102, "LINEAR"))
    expected = {  # (row, column): (stored, grey); y = ((stored - 1024 - 48.5) / 101 + 0.5) * 255, clamped
        (256, 256): (1022, 0),  # -2 HU <= c - 0.5 - (w - 1) / 2 = -1.5
        (77, 210): (1073, 129),  # 49 HU: (0.5 / 101 + 0.5) * 255 = 128.76
        (86, 210): (1100, 197),  # 76 HU: (27.5 / 101 + 0.5) * 255 = 196.93
    }
    for (row, column), (value, grey) in expected.items():
        assert stored[row, column] == value and image.pixels[row, column, 0] == grey


def test_enhanced_image_uses_each_frames_own_rescale():
    """The same image with its rescale moved into the per-frame groups, a different intercept per frame."""
    ds = dataset("eCT_Supplemental.dcm")
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    for item, intercept in zip(ds.PerFrameFunctionalGroupsSequence, (-1024, -1000), strict=True):
        transform = Dataset()
        transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = intercept, 1, "HU"
        item.PixelValueTransformationSequence = [transform]
    data = part10(ds)
    for frame, intercept in ((1, -1024), (2, -1000)):
        image = read_dicom(data, frame=frame)
        assert image.rendering.rescale_intercept == intercept
        assert image.rendering.rescale_source == "per-frame functional groups"
        stored = pixel_array(ds, index=frame - 1)
        assert np.array_equal(image.pixels[..., 0], apply_window(stored + float(intercept), 49, 102, "LINEAR"))


def test_header_window_agrees_with_highdicom():
    """An independent implementation of the same pipeline (highdicom's Image.get_frame) on the enhanced CT and the
    CT: the same grey levels once its floats are rounded half up."""
    import highdicom as hd
    for name in ("eCT_Supplemental.dcm", "693_UNCR.dcm"):
        theirs = hd.Image.from_dataset(dataset(name), copy=False).get_frame(
            1, apply_real_world_transform=False, apply_voi_transform=True, voi_output_range=(0.0, 255.0))
        assert np.array_equal(np.floor(theirs + 0.5).astype(np.uint8), read(name).pixels[..., 0]), name


def test_modality_and_voi_lookup_tables():
    """mlut_18 has a Modality LUT Sequence, vlut_04 a VOI LUT Sequence (OFFIS test images): pydicom applies the
    tables; the VOI table's output is scaled from its entry depth to 0..255."""
    assert read("mlut_18.dcm").rendering.rescale_source == "modality LUT sequence"
    image = read("vlut_04.dcm")
    assert (image.rendering.window_source, image.rendering.window_width) == ("header VOI LUT", 0)
    ds = dataset("vlut_04.dcm")
    table = ds.VOILUTSequence[0]
    first, bits = table.LUTDescriptor[1], table.LUTDescriptor[2]
    stored = pixel_array(ds)
    row, column = np.argwhere(stored >= first)[0]
    entry = table.LUTData[min(int(stored[row, column]) - first, len(table.LUTData) - 1)]
    assert image.pixels[row, column, 0] == int(np.floor(entry / (2**bits - 1) * 255 + 0.5))


def with_value(ds: Dataset, value: bytes) -> bytes:
    """``ds`` as Part-10 bytes with its one value "7.77" replaced by ``value`` (pydicom would not write it)."""
    data = part10(ds)
    assert data.count(b"7.77") == 1
    return data.replace(b"7.77", value)


def shared_rescale(slope: str) -> Dataset:
    ds = dataset("eCT_Supplemental.dcm")
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope = slope
    return ds


def without(name: str, keyword: str, sequence: str = "") -> bytes:
    ds = dataset(name)
    delattr(ds[sequence][0] if sequence else ds, keyword)
    return part10(ds)


MALFORMED = {  # what is malformed: (the instance, the attribute its refusal names)
    "slope": (lambda: with_value(dataset("CT_small.dcm", RescaleSlope="7.77"), b"abcd"), "RescaleSlope"),
    "intercept": (lambda: with_value(dataset("CT_small.dcm", RescaleIntercept="7.77"), b"abcd"), "RescaleIntercept"),
    "functional groups' slope": (lambda: with_value(shared_rescale("7.77"), b"abcd"), "RescaleSlope"),
    "window centre": (lambda: with_value(dataset("693_UNCR.dcm", WindowCenter="7.77"), b"abcd"), "WindowCenter"),
    "empty first centre": (lambda: part10(dataset("693_UNCR.dcm", WindowCenter=["", "40"], WindowWidth=[100, 100])),
                           "WindowCenter"),
    "VOI LUT": (lambda: without("vlut_04.dcm", "LUTDescriptor", "VOILUTSequence"), "LUTDescriptor"),
    "VOI LUT data": (lambda: without("vlut_04.dcm", "LUTData", "VOILUTSequence"), "LUTData"),
    "modality LUT": (lambda: without("mlut_18.dcm", "LUTDescriptor", "ModalityLUTSequence"), "LUTDescriptor"),
    "palette": (lambda: without("OBXXXX1A.dcm", "RedPaletteColorLookupTableDescriptor"),
                "RedPaletteColorLookupTableDescriptor"),
    "palette data": (lambda: without("OBXXXX1A.dcm", "GreenPaletteColorLookupTableData"),
                     "GreenPaletteColorLookupTableData"),
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_values_are_refused_by_name(what):
    """Readable bytes with values that are not numbers, or tables without their descriptor or data: refused
    naming the attribute, never quoting its value (header values can be patient data)."""
    make, keyword = MALFORMED[what]
    message = refusal(InvalidDicom, make())
    assert keyword in message and "abcd" not in message


@pytest.mark.parametrize(("keyword", "value"), [("RescaleSlope", "NaN"), ("RescaleSlope", "Inf"),
                                                 ("RescaleIntercept", "-Inf")])
def test_non_finite_rescale_is_refused(keyword, value):
    message = refusal(InvalidDicom, part10(dataset("CT_small.dcm", **{keyword: value})))
    assert f"{keyword} (0028,105" in message and "not a finite number" in message
    assert "finite number" in refusal(InvalidDicom, part10(shared_rescale(value)))


def test_a_non_finite_header_window_is_no_window():
    for center, width in (("NaN", "100"), ("Inf", "100"), ("40", "Inf")):
        r = read_dicom(part10(dataset("693_UNCR.dcm", WindowCenter=center, WindowWidth=width))).rendering
        assert r.window_source == "full range" and np.isfinite([r.window_center, r.window_width]).all()


def test_the_full_range_spans_finite_values():
    """A slope so large that the brightest values overflow to infinity: the others still span black to white."""
    ds = dataset("CT_small.dcm", RescaleSlope="1e304", RescaleIntercept="0")
    stored = np.tile(np.arange(128, dtype=np.int16) * 8, (128, 1))  # 0 .. 1016
    stored[0, 0] = 30000  # 3e308: infinite
    ds.PixelData = stored.tobytes()
    image = read_dicom(part10(ds))
    assert (image.rendering.window_center, image.rendering.window_width) == (1016e304 / 2, 1016e304)
    assert image.pixels[1, 0, 0] == 0 and image.pixels[1, 127, 0] == 255 and image.pixels[0, 0, 0] == 255


# --- frames and colour


def test_multi_frame_pick_returns_that_frame():
    ds = dataset("emri_small.dcm")
    frames = pixel_array(ds)  # (10, 64, 64), all decoded here to compare
    pictures = [read("emri_small.dcm", frame=k) for k in (1, 7)]
    for k, image in zip((1, 7), pictures, strict=True):
        r = image.rendering
        assert (image.identity.frame, image.identity.number_of_frames) == (k, 10)
        assert np.array_equal(image.pixels[..., 0], apply_window(frames[k - 1], r.window_center, r.window_width,
                                                                 r.window_function))
    assert not np.array_equal(pictures[0].pixels, pictures[1].pixels)


def test_colour_multi_frame_jpeg_baseline_pick():
    """A US cine (SonoSite, YBR_FULL_422 JPEG baseline, 30 frames): frame 20 as pydicom decodes it, in RGB."""
    image = read("examples_ybr_color.dcm", frame=20)
    assert np.array_equal(image.pixels, pixel_array(dataset("examples_ybr_color.dcm"), index=19))
    assert image.rendering.window_source == "none" and image.identity.number_of_frames == 30


def test_ybr_full_becomes_rgb_by_the_standards_formula():
    """PS3.3 C.7.6.3.1.2: R = Y + 1.402 (Cr - 128), G = Y - 0.344136 (Cb - 128) - 0.714136 (Cr - 128),
    B = Y + 1.772 (Cb - 128). Pixel (52, 0) stores Y, Cb, Cr = 141, 189, 119."""
    ds = dataset("SC_ybr_full_uncompressed.dcm")
    assert tuple(pixel_array(ds, raw=True)[52, 0]) == (141, 189, 119)
    assert tuple(read("SC_ybr_full_uncompressed.dcm").pixels[52, 0]) == (128, 126, 249)  # 128.4, 126.4, 249.1


def test_palette_colour_by_hand():
    """OBXXXX1A: a stored index shows as its palette entries (16-bit, shown as entry / 65535 * 255)."""
    ds = dataset("OBXXXX1A.dcm")
    index = int(pixel_array(ds)[300, 400])
    first = ds.RedPaletteColorLookupTableDescriptor[1]
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, dtype="<u2")[index - first]
    assert read("OBXXXX1A.dcm").pixels[300, 400, 0] == int(np.floor(red / 65535 * 255 + 0.5))


# --- identity and header


def test_identity_and_header():
    image = read("MR2_J2KR.dcm")
    source = dataset("MR2_J2KR.dcm")
    i = image.identity
    assert (i.study_instance_uid, i.series_instance_uid, i.sop_instance_uid) == (
        source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)
    assert (i.sop_class_uid, i.modality, i.frame, i.number_of_frames) == ("1.2.840.10008.5.1.4.1.1.4", "MR", 1, 1)
    assert image.rendering.transfer_syntax_uid == JPEG2000Lossless
    header = dcmread(io.BytesIO(image.header))
    assert "PixelData" not in header and len(image.header) < 10_000
    assert header.SOPInstanceUID == source.SOPInstanceUID and header.PatientName == source.PatientName
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # whatever the instance's
    assert str(source.PatientName) not in repr(image) and source.PatientID not in repr(image)  # never in logs


def test_the_stored_header_is_small_and_plain():
    """Kept with the session and read again for every SEG: Explicit VR Little Endian (never deflated), without
    private elements (nested ones too), overlays, curves, or large elements a SEG does not need (an ICC profile
    here); a large one it needs (the references to other images) stays."""
    ds = dataset("CT_small.dcm")
    ds.add_new(0x00090010, "LO", "MEDIROUND TEST")
    ds.add_new(0x00091010, "OB", bytes(4 * 2**20))
    ds.add_new(0x60003000, "OW", bytes(128 * 128 // 8))  # Overlay Data
    ds.add_new(0x50003000, "OB", bytes(100_000))  # Curve Data (retired)
    ds.ICCProfile = bytes(100_000)
    ds.ReferencedImageSequence = [Dataset() for _ in range(1000)]  # ~90 KB
    for k, item in enumerate(ds.ReferencedImageSequence):
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, f"{ds.SOPInstanceUID}.{k}"
    ds.ReferencedImageSequence[0].add_new(0x00290010, "LO", "MEDIROUND TEST")
    ds.ReferencedImageSequence[0].add_new(0x00291010, "OB", bytes(100))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    image = read_dicom(part10(ds))
    header = dcmread(io.BytesIO(image.header))
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert 90_000 < len(image.header) < 120_000
    assert not any(e.tag.is_private for item in header.ReferencedImageSequence for e in item)
    assert not any(e.tag.is_private or e.tag.group in (0x5000, 0x6000) for e in header)
    assert "ICCProfile" not in header and "PixelData" not in header
    assert len(header.ReferencedImageSequence) == 1000 and header.PatientName == ds.PatientName
    message = refusal(DicomTooLarge, dicom_bytes("CT_small.dcm"), limits=DicomLimits(max_header_bytes=1000))
    assert "header" in message and "at most 1000" in message
    assert DicomLimits().max_header_bytes == 2**20


def test_the_stored_header_of_big_endian_instances():
    """Re-encoded in little endian, their values unchanged."""
    for name in ("emri_small_big_endian.dcm", "OBXXXX1A_expb.dcm", "SC_rgb_expb.dcm"):
        header = dcmread(io.BytesIO(read(name).header))
        source = dcmread(io.BytesIO(dicom_bytes(name)), stop_before_pixels=True)
        assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        values = [element for element in source if element.VR not in ("OB", "OW", "UN") and not element.tag.is_private]
        assert len(values) > 20 and all(header[element.tag] == element for element in values), name


# --- refusals


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")  # pydicom's, on the cut bytes
def test_not_dicom_and_unparseable():
    assert "DICM" in refusal(InvalidDicom, b"\x89PNG\r\n\x1a\n" + bytes(300))
    assert "damaged" in refusal(InvalidDicom, bytes(128) + b"DICM" + b"\xff" * 64)
    assert "could not be parsed" in refusal(InvalidDicom, dicom_bytes("image_dfl.dcm")[:2000])  # a cut deflate


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_truncated_instances():
    native, compressed = dicom_bytes("693_UNCR.dcm"), dicom_bytes("RG3_J2KR.dcm")
    for data in (native[: len(native) // 2], native[:-10], compressed[: len(compressed) // 2], compressed[:-10]):
        message = refusal(InvalidDicom, data)
        assert "truncated" in message and "Pixel Data (7FE0,0010)" in message
    assert "truncated" in refusal(InvalidDicom, dicom_bytes("rtplan_truncated.dcm"))  # in a header sequence
    assert "Beam Sequence" in refusal(InvalidDicom, dicom_bytes("rtplan_truncated.dcm"))


def test_no_pixel_data():
    ds = dataset("693_UNCR.dcm")
    del ds.PixelData
    message = refusal(InvalidDicom, part10(ds))
    assert "no pixel data" in message and "CT Image Storage" in message


@pytest.mark.parametrize(("name", "kind"), [
    ("liver.dcm", "Segmentation Storage"),
    ("test-SR.dcm", "Comprehensive SR Storage"),
    ("rtdose.dcm", "RT Dose Storage"),  # has pixel data, but dose is not an image
    ("waveform_ecg.dcm", "12-lead ECG Waveform Storage"),
])
def test_non_image_sop_classes(name, kind):
    message = refusal(InvalidDicom, dicom_bytes(name))
    assert kind in message and "not an image" in message


@pytest.mark.parametrize("modality", ["SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC"])
def test_non_image_objects_relabelled_as_images(modality):
    """A CT Image Storage SOP class does not make a segmentation, report, plan ... an image."""
    message = refusal(InvalidDicom, part10(dataset("CT_small.dcm", Modality=modality)))
    assert f"Modality is {modality}" in message and "CT Image Storage" in message and "not an image" in message


def test_a_segmentation_relabelled_as_an_image():
    seg = dataset("liver.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.2", Modality="CT")  # a SEG as a CT
    seg.file_meta.MediaStorageSOPClassUID = seg.SOPClassUID
    message = refusal(InvalidDicom, part10(seg))
    assert "SegmentSequence (0062,0002)" in message and "not an image" in message


def test_presentation_state_and_unknown_sop_classes():
    state = dataset("693_UNCR.dcm", SOPClassUID=GrayscaleSoftcopyPresentationStateStorage)
    assert "Grayscale Softcopy Presentation State Storage" in refusal(InvalidDicom, part10(state))
    unknown = dataset("693_UNCR.dcm", SOPClassUID="1.2.3.4.5")
    message = refusal(InvalidDicom, part10(unknown))
    assert "1.2.3.4.5" in message and "not one this service knows" in message
    nameless = dataset("693_UNCR.dcm")
    del nameless.SOPClassUID
    del nameless.file_meta.MediaStorageSOPClassUID
    buffer = io.BytesIO()
    nameless.save_as(buffer)  # as it is: pydicom's file format check would ask for the SOP class
    assert "no SOP Class UID (0008,0016)" in refusal(InvalidDicom, buffer.getvalue())


def test_absurd_dimensions_are_refused_from_the_header():
    """The pixel data no longer matches these headers, so a decode would fail: the limits are met first."""
    message = refusal(DicomTooLarge, part10(dataset("693_UNCR.dcm", Rows=60000)))
    assert "512x60000" in message and "6144" in message
    message = refusal(DicomTooLarge, part10(dataset("693_UNCR.dcm", NumberOfFrames=100000)))
    assert "100000 frames" in message and "4096" in message
    message = refusal(DicomTooLarge, dicom_bytes("693_UNCR.dcm"), limits=DicomLimits(max_bytes=100_000))
    assert "525986 bytes" in message and "100000" in message
    assert "at least 16 pixels" in refusal(InvalidDicom, dicom_bytes("SC_rgb_small_odd.dcm"))  # 3x3
    assert "8 times" in refusal(InvalidDicom, part10(dataset("693_UNCR.dcm", Columns=32)))


def test_number_of_frames_must_be_a_whole_number_from_1():
    for frames in (0, -3, "2.5"):
        message = refusal(InvalidDicom, part10(dataset("CT_small.dcm", NumberOfFrames=frames)))
        assert "NumberOfFrames (0028,0008)" in message and "from 1 to 4096" in message
    data = part10(dataset("CT_small.dcm", NumberOfFrames="77")).replace(b"77", b"ab")
    assert "not a whole number" in refusal(InvalidDicom, data)


def test_limits_check_themselves():
    with pytest.raises(ValueError, match="max_side"):
        DicomLimits(max_side=0)


def test_frame_out_of_range():
    for frame in (0, 11):
        message = refusal(InvalidDicomOptions, dicom_bytes("emri_small.dcm"), frame=frame)
        assert f"frame {frame}" in message and "10 frames (1 to 10)" in message
    assert "1 frame (1 to 1)" in refusal(InvalidDicomOptions, dicom_bytes("CT_small.dcm"), frame=2)


def test_undecodable_transfer_syntaxes_are_named():
    message = refusal(InvalidDicom, dicom_bytes("JPGExtended.dcm"))  # 12-bit JPEG extended (NM, GE)
    assert "JPEG Extended (Process 2 and 4)" in message and "12-bit" in message and "GPLv3" in message
    ds = dataset("693_J2KR.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    message = refusal(InvalidDicom, part10(ds))
    assert "MPEG2 Main Profile / Main Level" in message and "no decoder" in message
    assert "JPEG 2000 (Lossless Only)" in message and "RLE Lossless" in message  # what is accepted


def test_damaged_codestream():
    data = bytearray(dicom_bytes("MR_small_jp2klossless.dcm"))
    start = data.find(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream's first markers (SOC, SIZ)
    data[start:start + 40] = bytes(40)
    assert "could not be decoded" in refusal(InvalidDicom, bytes(data))


def test_photometric_interpretations_not_accepted():
    message = refusal(InvalidDicom, part10(dataset("SC_rgb.dcm", PhotometricInterpretation="HSV")))
    assert "HSV" in message and "MONOCHROME2" in message
    message = refusal(InvalidDicom, part10(dataset("SC_rgb.dcm", PhotometricInterpretation="MONOCHROME2")))
    assert "MONOCHROME2 with 3 samples per pixel" in message


def test_window_choices_are_checked():
    with pytest.raises(InvalidDicomOptions, match="ct-lung") as caught:
        VoiChoice(preset="ct-lungs")
    assert all(name in str(caught.value) for name in PRESETS)
    for width in (0, -5):
        with pytest.raises(InvalidDicomOptions, match="greater than 0"):
            VoiChoice(center=40, width=width)
    with pytest.raises(InvalidDicomOptions, match="both"):
        VoiChoice(center=40)
    with pytest.raises(InvalidDicomOptions, match="not both"):
        VoiChoice(preset="ct-lung", center=40, width=400)
    assert VoiChoice.from_request() == VoiChoice()  # the API's unset numbers read 0
    assert VoiChoice.from_request(center=0, width=80).window == (0, 80)
    with pytest.raises(InvalidDicomOptions, match="greater than 0"):
        VoiChoice.from_request(center=40, width=0)


def test_windows_the_image_cannot_take():
    message = refusal(InvalidDicomOptions, dicom_bytes("MR_small.dcm"), voi=VoiChoice(preset="ct-brain"))
    assert "Hounsfield" in message and "MR" in message
    message = refusal(InvalidDicomOptions, dicom_bytes("US1_UNCR.dcm"), voi=VoiChoice(center=100, width=50))
    assert "greyscale" in message and "RGB" in message


def test_window_formulas_by_hand():
    """PS3.3 C.11.2.1.2 LINEAR, c = 40, w = 100: 0 up to c - 0.5 - (w - 1) / 2 = -10, 255 above 89."""
    x = np.array([-10.0, -9.0, 39.5, 89.0, 90.0])
    assert apply_window(x, 40, 100, "LINEAR").tolist() == [0, 3, 128, 255, 255]  # 2.58; 127.5 rounds up
    assert apply_window(np.array([39.4, 39.6]), 40, 1, "LINEAR").tolist() == [0, 255]  # width 1: a threshold
    assert apply_window(np.array([-10.0, 40.0, 90.0]), 40, 100, "LINEAR_EXACT").tolist() == [0, 128, 255]
    assert apply_window(np.array([40.0, 140.0]), 40, 100, "SIGMOID").tolist() == [128, 250]  # 255 / (1 + e^-4) = 250.4
