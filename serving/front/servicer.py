"""The grpcio servicer of ``mediround.v1.MediRound``: convert proto <-> messages and call the ``Dialogue``.

Besides that, only what a call needs at the edge: admission (rounds in flight, the caller's deadline) and the
front's metrics. Validation, state and the model live behind ``serving.front.dialogue`` (DICOM behind
``serving.dicom.edge``); errors become status codes through ``serving.front.status``; the caller's tenant
comes from the server's interceptor (``serving.front.tenants.current_tenant``) and goes with every call.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
import traceback
import uuid
from dataclasses import asdict

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.dicom.edge import DicomEdge, DicomOptions, InstanceRef, Segmentation
from serving.dicom.voi import VoiChoice
from serving.errors import DeadlinePassed, Overloaded
from serving.front import metrics
from serving.front.dialogue import Dialogue
from serving.front.status import status_of
from serving.front.tenants import current_tenant
from serving.messages import Round, Session

log = logging.getLogger(__name__)


def _timestamp(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def session_pb(s: Session) -> pb.Session:
    return pb.Session(id=s.session_id, width=s.width, height=s.height, create_time=_timestamp(s.created),
                      expire_time=_timestamp(s.expires), round_count=s.round_count, metadata=s.metadata,
                      image_sha256=s.image_sha256, dicom=pb.DicomSource(**asdict(s.dicom)) if s.dicom else None)


def dicom_options(o: pb.DicomOptions) -> DicomOptions:
    return DicomOptions(frame=o.frame or 1, voi=VoiChoice.from_request(o.window_preset, o.window_center,
                                                                       o.window_width))


def instance_ref(r: pb.DicomInstanceRef) -> InstanceRef:
    return InstanceRef(r.pacs, r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid)


def segmentation_fields(s: Segmentation) -> dict:
    return {"study_instance_uid": s.study_instance_uid, "series_instance_uid": s.series_instance_uid,
            "sop_instance_uid": s.sop_instance_uid, "rounds": s.rounds, "skipped_rounds": s.skipped_rounds}


def round_pb(r: Round, session_id: str = "", *, with_mask: bool = True) -> pb.Round:
    t = r.timings
    msg = pb.Round(session_id=session_id, number=r.number, question=r.question, answer=r.answer,
                   mask_png=r.mask_png if with_mask else b"", has_mask=r.has_mask, quality=r.quality or 0.0,
                   corrected=r.corrected, reference_round=r.reference_round or 0,
                   request_id=r.request_id, create_time=_timestamp(r.created), served_by=r.served_by,
                   timings=pb.Timings(encode_ms=t.encode_ms, reason_ms=t.reason_ms, decode_ms=t.decode_ms,
                                      total_ms=t.total_ms, encoder_cache_hit=t.encoder_cache_hit))
    if r.box is not None:
        msg.box.CopyFrom(pb.Box(x_min=r.box[0], y_min=r.box[1], x_max=r.box[2], y_max=r.box[3]))
    return msg


async def _abort(context, method: str, e: Exception):
    """Map a domain error to its status code (once, here); anything unexpected is INTERNAL and logged."""
    code = status_of(e)
    metrics.ERRORS.labels(method=method, code=code.name).inc()
    if code is grpc.StatusCode.INTERNAL:
        # where it failed, not what it said: a message may quote a question or a DICOM header's values
        log.error("%s failed with %s at\n%s", method, type(e).__name__, "".join(traceback.format_tb(e.__traceback__)))
        await context.abort(code, f"internal error ({type(e).__name__}); the request was not applied")
    await context.abort(code, str(e))


def _status(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await _abort(context, method.__name__, e)

    return wrapper


class MediRoundServicer(pb_grpc.MediRoundServicer):
    """gRPC front of a ``Dialogue``; ``max_inflight`` bounds concurrent rounds, and a tenant's
    ``max_rounds_in_flight`` its own (beyond: RESOURCE_EXHAUSTED)."""

    def __init__(self, dialogue: Dialogue, *, edge: DicomEdge | None = None, max_inflight: int = 64):
        self.dialogue = dialogue
        self.edge = edge or DicomEdge(dialogue)
        self.max_inflight, self.inflight = max_inflight, 0
        self.tenant_inflight: collections.Counter[str] = collections.Counter()

    async def _bounded(self, context, coro_fn):
        tenant = current_tenant.get()
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"{self.inflight} rounds are in flight, the limit is {self.max_inflight}; retry "
                             "with backoff")
        if tenant.max_rounds_in_flight and self.tenant_inflight[tenant.name] >= tenant.max_rounds_in_flight:
            raise Overloaded(f"this tenant has {self.tenant_inflight[tenant.name]} rounds in flight, its limit; "
                             "retry with backoff")
        remaining = context.time_remaining()
        self.inflight += 1
        self.tenant_inflight[tenant.name] += 1
        try:
            with metrics.STAGE_SECONDS.labels(stage="round").time():
                async with asyncio.timeout(remaining) as deadline:
                    return await coro_fn()
        except TimeoutError as e:
            if deadline.expired():  # only the call's own deadline; any other timeout is not the caller's
                raise DeadlinePassed(f"the deadline passed before the round was answered ({remaining:.2f} s were "
                                     "left); it was not appended unless the deadline came during the append: a "
                                     "retry with the same request_id returns it if so") from e
            raise
        finally:
            self.inflight -= 1
            self.tenant_inflight[tenant.name] -= 1

    @_status
    async def CreateSession(self, request, context):
        by_reference = request.WhichOneof("source") == "dicom_instance"
        s = await self.edge.create_session(request.image, dict(request.metadata), request.ttl_seconds,
                                           instance=instance_ref(request.dicom_instance) if by_reference else None,
                                           options=dicom_options(request.dicom_options), tenant=current_tenant.get(),
                                           request_id=request.request_id)
        return session_pb(s)

    @_status
    async def GetSession(self, request, context):
        return session_pb(await self.dialogue.get_session(request.session_id, tenant=current_tenant.get()))

    @_status
    async def GetSessionImage(self, request, context):
        image, media_type = await self.dialogue.session_image(request.session_id, tenant=current_tenant.get())
        return pb.SessionImage(image=image, media_type=media_type)

    @_status
    async def DeleteSession(self, request, context):
        deleted = await self.dialogue.delete_session(request.session_id, tenant=current_tenant.get())
        return pb.DeleteSessionResponse(deleted=deleted)

    async def _round(self, request, context, on_answer=None) -> pb.Round:
        request_id = request.request_id or uuid.uuid4().hex
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        record = await self._bounded(context, lambda: self.dialogue.run_round(
            request.session_id, request.question, request.reference_round, request_id, on_answer, deadline,
            tenant=current_tenant.get()))
        metrics.ROUNDS.inc()
        metrics.ROUND_INDEX.observe(record.number)
        t = record.timings
        for stage, ms in (("encode", t.encode_ms), ("reason", t.reason_ms), ("decode", t.decode_ms)):
            metrics.STAGE_SECONDS.labels(stage=stage).observe(ms / 1e3)
        return round_pb(record, request.session_id)

    @_status
    async def CreateRound(self, request, context):
        return await self._round(request, context)

    async def StreamRound(self, request, context):
        """Yield the answer text as soon as the reasoning step has it, then the finished round."""
        answers: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.ensure_future(self._round(request, context, answers.put))
        while not task.done():
            getter = asyncio.ensure_future(answers.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield pb.RoundEvent(answer=getter.result())
            else:
                getter.cancel()
        try:
            yield pb.RoundEvent(round=task.result())
        except Exception as e:
            await _abort(context, "StreamRound", e)

    @_status
    async def GetRound(self, request, context):
        record = await self.dialogue.get_round(request.session_id, request.number, tenant=current_tenant.get())
        return round_pb(record, request.session_id)

    @_status
    async def ListRounds(self, request, context):
        rounds = await self.dialogue.list_rounds(request.session_id, tenant=current_tenant.get())
        return pb.ListRoundsResponse(rounds=[round_pb(r, request.session_id, with_mask=request.include_masks)
                                             for r in rounds])

    @_status
    async def Segment(self, request, context):
        tenant, options = current_tenant.get(), dicom_options(request.dicom_options)
        return round_pb(await self._bounded(context, lambda: self.edge.segment(request.image, request.question,
                                                                               options=options, tenant=tenant)))

    @_status
    async def GetSegmentation(self, request, context):
        s = await self.edge.segmentation(request.session_id, tenant=current_tenant.get())
        return pb.Segmentation(dicom=s.dicom, **segmentation_fields(s))

    @_status
    async def ExportSession(self, request, context):
        done = await self.edge.export(request.session_id, request.destination, tenant=current_tenant.get())
        return pb.ExportSessionResponse(destination=done.destination, **segmentation_fields(done.segmentation))
