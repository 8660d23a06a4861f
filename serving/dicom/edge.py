"""DICOM at the edge of the dialogue: sessions opened on DICOM instances (sent, or on a configured PACS),
and a session's rounds as one DICOM Segmentation, returned or stored back in the source's study.

The ``Dialogue`` below sees none of it: it gets the rendered picture as PNG and a ``RenderedSource``
(what the picture was made from, and the header without pixel data, which the store keeps beside the
session with its life). What is not DICOM passes through to the ``Dialogue`` unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from model.config import SHIPPED_TINY
from serving.dicom.pacs import PacsRegistry
from serving.dicom.pixels import DicomImage, DicomLimits, is_dicom, read_dicom
from serving.dicom.seg import Algorithm, SegExport, build_segmentation
from serving.dicom.voi import VoiChoice
from serving.errors import InvalidDicomOptions, SegmentationUnavailable, UnknownPacs
from serving.front.dialogue import Dialogue, RenderedSource
from serving.front.tenants import ANONYMOUS, Tenant
from serving.messages import DicomSource, Round, Session


@dataclass(frozen=True)
class DicomOptions:
    """How a DICOM image becomes the model's picture (the API's ``DicomOptions``)."""

    frame: int = 1
    """1-based frame of a multi-frame instance."""
    voi: VoiChoice = field(default_factory=VoiChoice)

    @property
    def asked(self) -> bool:
        return self.frame != 1 or self.voi != VoiChoice()


@dataclass(frozen=True)
class InstanceRef:
    """A DICOM instance on one of the server's configured PACS."""

    pacs: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Segmentation:
    """A session's DICOM SEG as Part-10 bytes, and which rounds it holds."""

    dicom: bytes
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    rounds: list[int]
    """The round of segment 1, 2, ... in order."""
    skipped_rounds: list[int]
    """Rounds left out: their answers had no mask."""


@dataclass(frozen=True)
class Export:
    """Where a session's SEG was stored, and what it holds (``segmentation.dicom`` is not kept: b"")."""

    destination: str
    segmentation: Segmentation


HASHED_WEIGHTS_BYTES = 512 * 2**20
"""Weight files up to this size are hashed at start; a larger one (a 7B model) is named by its size and time."""


def algorithm_of(checkpoint: str | Path | None) -> Algorithm:
    """The SEG's algorithm identification: the checkpoint's name and a digest of its weights (the model's and a
    LoRA adapter's: what made the masks, exactly), with the commit its recipe ran at when the manifest has it."""
    path = Path(checkpoint or SHIPPED_TINY)
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("adapter/*.safetensors")):
        stat = weights.stat()
        if stat.st_size <= HASHED_WEIGHTS_BYTES:
            digest.update(weights.read_bytes())
        else:
            digest.update(f"{weights.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    manifest = path / "manifest.json"  # read here: model.checkpoint brings torch, which the front does without
    commit = json.loads(manifest.read_text()).get("commit", "") if manifest.exists() else ""
    version = digest.hexdigest()[:12]
    return Algorithm(name=f"mediround-{path.name}"[:64], version=f"{version}+{commit[:12]}" if commit else version)


def _png(pixels: np.ndarray) -> bytes:
    """The picture as PNG: grey when its three channels are equal (a third of the bytes, the same picture)."""
    grey = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all())
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if grey else pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _source(image: DicomImage, pacs: str) -> DicomSource:
    """What the session keeps of ``image``: all of its identity, the part of its rendering the API reports."""
    i, r = image.identity, image.rendering
    return DicomSource(study_instance_uid=i.study_instance_uid, series_instance_uid=i.series_instance_uid,
                       sop_instance_uid=i.sop_instance_uid, sop_class_uid=i.sop_class_uid, modality=i.modality,
                       frame=i.frame, number_of_frames=i.number_of_frames, transfer_syntax_uid=r.transfer_syntax_uid,
                       photometric_interpretation=r.photometric_interpretation, rescale_slope=r.rescale_slope,
                       rescale_intercept=r.rescale_intercept, window_center=r.window_center,
                       window_width=r.window_width, window_source=r.window_source, inverted=r.inverted, pacs=pacs)


class DicomEdge:
    """Opens sessions on any accepted image (DICOM rendered here, the rest passed to the ``Dialogue``) and
    exports a DICOM session's rounds as a SEG; ``pacs`` names the PACS the server may fetch from and store to."""

    max_concurrent_work = 2
    """DICOM renders and SEG builds at once in one front process."""

    def __init__(self, dialogue: Dialogue, *, pacs: PacsRegistry | None = None, limits: DicomLimits | None = None,
                 algorithm: Algorithm | None = None):
        self.dialogue, self.pacs, self._limits = dialogue, pacs, limits
        self._work = asyncio.Semaphore(self.max_concurrent_work)
        self.algorithm = algorithm or algorithm_of(None)

    @property
    def limits(self) -> DicomLimits:
        """The given limits, else ``DicomLimits``' own with the dialogue's smallest side and aspect ratio."""
        if self._limits is None:
            lim = self.dialogue.limits
            self._limits = DicomLimits(min_side=lim.min_image_side, max_aspect_ratio=lim.max_aspect_ratio)
        return self._limits

    def _client(self, name: str, tenant: Tenant):
        """The PACS ``name``, if configured and ``tenant`` may use it; either way an unknown one, naming only the
        PACS this tenant may use (another tenant's PACS is not even named)."""
        if self.pacs is None or name not in self.pacs.names or not tenant.may_use_pacs(name):
            usable = [n for n in (self.pacs.names if self.pacs else []) if tenant.may_use_pacs(n)]
            raise UnknownPacs(f"no PACS named {name[:64]!r} is available to this caller (available: "
                              f"{', '.join(usable) or 'none'})")
        return self.pacs.client(name)

    async def _render(self, data: bytes, options: DicomOptions) -> Rendered:
        """``data`` read and rendered, off the event loop, at most ``max_concurrent_work`` at once (a DICOM
        instance may take seconds and a gigabyte to decode: a queue, not every core and all the memory)."""
        async with self._work:
            return await asyncio.to_thread(_rendered, data, options, self.limits)

    async def create_session(self, image: bytes = b"", metadata: dict[str, str] | None = None, ttl: int = 0, *,
                             instance: InstanceRef | None = None, options: DicomOptions | None = None,
                             tenant: Tenant = ANONYMOUS, request_id: str = "") -> Session:
        """A session on ``image`` (PNG, JPEG, TIFF or DICOM bytes) or on ``instance``, fetched from its PACS;
        ``request_id`` as ``Dialogue.create_session`` takes it."""
        options = options or DicomOptions()
        pacs = ""
        if instance is not None:
            pacs = instance.pacs
            image = await self._client(pacs, tenant).fetch_instance_async(
                instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid,
                max_bytes=self.limits.max_bytes)
        elif not is_dicom(image):
            _no_options(options)
            return await self.dialogue.create_session(image, metadata, ttl, tenant=tenant, request_id=request_id)
        r = await self._render(image, options)
        source = RenderedSource(sha256=r.source_sha256, size=r.image.pixels.shape[:2], picture_sha256=r.png_sha256,
                                dicom=_source(r.image, pacs), dicom_header=r.image.header)
        return await self.dialogue.create_session(r.png, metadata, ttl, tenant=tenant, source=source,
                                                  request_id=request_id)

    async def segment(self, image: bytes, question: str, *, options: DicomOptions | None = None,
                      tenant: Tenant = ANONYMOUS) -> Round:
        """One stateless round on ``image`` (DICOM rendered here first)."""
        options = options or DicomOptions()
        if not is_dicom(image):
            _no_options(options)
            return await self.dialogue.segment(image, question, tenant=tenant)
        r = await self._render(image, options)
        return await self.dialogue.segment(r.png, question, tenant=tenant,
                                           rendered=(r.png_sha256, r.image.pixels.shape[:2]))

    async def _dicom_session(self, session_id: str, tenant: Tenant) -> tuple[Session, DicomSource]:
        session = await self.dialogue.get_session(session_id, tenant=tenant)
        if session.dicom is None:
            raise SegmentationUnavailable("this session was opened on a PNG, JPEG or TIFF image: a DICOM SEG needs "
                                          "a DICOM source; its rounds' masks are in GetRound and ListRounds")
        return session, session.dicom

    async def _build(self, session: Session, dicom: DicomSource, tenant: Tenant) -> SegExport:
        header = await self.dialogue.store.dicom_header(session.session_id)
        rounds = await self.dialogue.list_rounds(session.session_id, tenant=tenant)
        async with self._work:
            return await asyncio.to_thread(
                lambda: build_segmentation(pydicom.dcmread(io.BytesIO(header)), rounds, session_id=session.session_id,
                                           algorithm=self.algorithm, frame=dicom.frame))

    async def segmentation(self, session_id: str, *, tenant: Tenant = ANONYMOUS) -> Segmentation:
        """The session's rounds as one DICOM SEG of its source."""
        session, dicom = await self._dicom_session(session_id, tenant)
        export = await self._build(session, dicom, tenant)
        buffer = io.BytesIO()
        await asyncio.to_thread(export.dataset.save_as, buffer, enforce_file_format=True)
        return _segmentation(export, buffer.getvalue())

    async def export(self, session_id: str, destination: str = "", *, tenant: Tenant = ANONYMOUS) -> Export:
        """Store the session's SEG in its source's study on ``destination`` (default: the PACS the source came
        from). Idempotent: the same rounds are the same SOP instance, which a PACS stores once."""
        session, dicom = await self._dicom_session(session_id, tenant)
        destination = destination or dicom.pacs
        if not destination:
            raise InvalidDicomOptions("the session's image was sent, not fetched from a PACS: name a destination "
                                      "PACS")
        client = self._client(destination, tenant)  # before the build: a PACS this caller may not use is refused now
        export = await self._build(session, dicom, tenant)
        await client.store_async(export.dataset)
        return Export(destination, _segmentation(export, b""))


@dataclass(frozen=True)
class Rendered:
    """A DICOM instance read (``image``), its picture as PNG, and the SHA-256s of both."""

    image: DicomImage
    png: bytes
    png_sha256: str
    source_sha256: str


def _rendered(data: bytes, options: DicomOptions, limits: DicomLimits) -> Rendered:
    image = read_dicom(data, frame=options.frame, voi=options.voi, limits=limits)
    png = _png(image.pixels)
    return Rendered(image, png, hashlib.sha256(png).hexdigest(), hashlib.sha256(data).hexdigest())


def _no_options(options: DicomOptions) -> None:
    if options.asked:
        raise InvalidDicomOptions("dicom_options apply to DICOM images only; this image is not DICOM (no 'DICM' "
                                  "after the 128-byte preamble)")


def _segmentation(export: SegExport, dicom: bytes) -> Segmentation:
    ds = export.dataset
    return Segmentation(dicom, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), export.sop_instance_uid,
                        export.segment_rounds, [s.number for s in export.skipped_rounds])
