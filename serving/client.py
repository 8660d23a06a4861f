"""A small Python client of the MediRound gRPC API (what ``mediround demo`` and ``mediround chat`` use).

    with MediRoundClient("127.0.0.1:50051") as client:
        session = client.create_session("scan.png")   # or "scan.dcm"
        r1 = client.ask(session.id, "Segment the liver.")
        mask = client.mask(r1)            # (H, W) bool
"""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from mediround.v1 import mediround_pb2 as pb
from mediround.v1 import mediround_pb2_grpc as pb_grpc
from serving.retries import Backoff, retry

RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
"""What a ``CreateSession`` is sent again after (with the same request id): the reply may have been lost."""
CREATE_BACKOFF = Backoff(first_s=0.5, longest_s=2.0, retries=2)
ROUND_BACKOFF = Backoff(first_s=0.5, longest_s=4.0, budget_s=60.0, jitter=0.5)
"""When a ``CreateRound`` answered UNAVAILABLE is sent again (the same request id: it appends once). The server
says UNAVAILABLE when its model steps did not answer within its budget, a lost replica or a queue of new images
at the encoder; the work under way goes on, so a retry usually finds it done."""


def _lost_reply(error: Exception) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in RETRIED_CODES


def _unavailable(error: Exception) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class MediRoundClient:
    """Blocking client; ``token`` adds bearer-token metadata, ``root_certificates`` switches to TLS."""

    def __init__(self, address: str, *, token: str | None = None, root_certificates: bytes | None = None,
                 timeout: float = 120.0, max_message_bytes: int = 64 * 2**20,
                 create_backoff: Backoff = CREATE_BACKOFF, round_backoff: Backoff = ROUND_BACKOFF):
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if root_certificates is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.MediRoundStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout, self.create_backoff, self.round_backoff = timeout, create_backoff, round_backoff

    def _call(self, method: str, request, timeout: float | None = None):
        return getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=self.metadata)

    def create_session(self, image: bytes | str | Path, metadata: dict[str, str] | None = None,
                       ttl_seconds: int = 0, *, dicom_options: pb.DicomOptions | None = None,
                       request_id: str | None = None) -> pb.Session:
        """A session on PNG, JPEG, TIFF or DICOM bytes (or a file of them); ``dicom_options`` pick a DICOM
        image's frame and window, e.g. ``pb.DicomOptions(window_preset="ct-abdomen")``.

        Sent with ``request_id`` (a fresh one by default) and sent again with the same id after a lost reply
        (``create_backoff``): the server makes one session however many times it arrives."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        return self._create(pb.CreateSessionRequest(image=data, metadata=metadata or {}, ttl_seconds=ttl_seconds,
                                                    dicom_options=dicom_options,
                                                    request_id=request_id or uuid.uuid4().hex))

    def create_session_from_pacs(self, pacs: str, study_uid: str, series_uid: str, sop_instance_uid: str, *,
                                 metadata: dict[str, str] | None = None, ttl_seconds: int = 0,
                                 dicom_options: pb.DicomOptions | None = None,
                                 request_id: str | None = None) -> pb.Session:
        """A session on an instance the server fetches from ``pacs``, one of the PACS it is configured with;
        sent again after a lost reply as ``create_session`` is."""
        ref = pb.DicomInstanceRef(pacs=pacs, study_instance_uid=study_uid, series_instance_uid=series_uid,
                                  sop_instance_uid=sop_instance_uid)
        return self._create(pb.CreateSessionRequest(dicom_instance=ref, metadata=metadata or {},
                                                    ttl_seconds=ttl_seconds, dicom_options=dicom_options,
                                                    request_id=request_id or uuid.uuid4().hex))

    def _create(self, request: pb.CreateSessionRequest) -> pb.Session:
        return retry(lambda: self._call("CreateSession", request), _lost_reply, self.create_backoff)

    def ask(self, session_id: str, question: str, *, reference_round: int = 0, request_id: str | None = None,
            timeout: float | None = None) -> pb.Round:
        """Append one round; ``reference_round`` is 1-based (0: resolved from the question). Sent again with the
        same request id after UNAVAILABLE (``round_backoff``), within ``timeout`` in all."""
        request = pb.CreateRoundRequest(session_id=session_id, question=question, reference_round=reference_round,
                                        request_id=request_id or uuid.uuid4().hex)
        deadline = time.monotonic() + (timeout or self.timeout)
        return retry(lambda: self._call("CreateRound", request, max(1e-3, deadline - time.monotonic())),
                     _unavailable, self.round_backoff, deadline=deadline)

    def stream(self, session_id: str, question: str, **kwargs):
        """Yield ``RoundEvent``s: the answer text, then the round."""
        request = pb.CreateRoundRequest(session_id=session_id, question=question, request_id=uuid.uuid4().hex,
                                        **kwargs)
        yield from self.stub.StreamRound(request, timeout=self.timeout, metadata=self.metadata)

    def rounds(self, session_id: str, include_masks: bool = False) -> list[pb.Round]:
        return list(self._call("ListRounds", pb.ListRoundsRequest(session_id=session_id,
                                                                  include_masks=include_masks)).rounds)

    def get_round(self, session_id: str, number: int) -> pb.Round:
        """Round ``number`` (1-based) of the session."""
        return self._call("GetRound", pb.GetRoundRequest(session_id=session_id, number=number))

    def session(self, session_id: str) -> pb.Session:
        return self._call("GetSession", pb.GetSessionRequest(session_id=session_id))

    def image(self, session_id: str) -> pb.SessionImage:
        """The session's image as stored (for DICOM, the picture rendered from it) and its media type."""
        return self._call("GetSessionImage", pb.GetSessionImageRequest(session_id=session_id))

    def delete(self, session_id: str) -> bool:
        return self._call("DeleteSession", pb.DeleteSessionRequest(session_id=session_id)).deleted

    def segmentation(self, session_id: str) -> pb.Segmentation:
        """The session's rounds as one DICOM SEG (``.dicom`` is the Part-10 file); DICOM sessions only."""
        return self._call("GetSegmentation", pb.GetSegmentationRequest(session_id=session_id))

    def export(self, session_id: str, destination: str = "") -> pb.ExportSessionResponse:
        """Store the session's SEG in its source's study on ``destination`` (default: the PACS it came from)."""
        return self._call("ExportSession", pb.ExportSessionRequest(session_id=session_id, destination=destination))

    def segment(self, image: bytes | str | Path, question: str) -> pb.Round:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        return self._call("Segment", pb.SegmentRequest(image=data, question=question))

    @staticmethod
    def mask(round_: pb.Round) -> np.ndarray | None:
        """The round's mask as (H, W) bool, or None when the answer had no mask."""
        if not round_.has_mask:
            return None
        return np.asarray(Image.open(io.BytesIO(round_.mask_png))) > 0

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> MediRoundClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def readable_answer(answer: str) -> str:
    """An answer for people: ``[mask]`` where the model said ``[SEG]`` (the raw token is never shown)."""
    return answer.replace("[SEG]", "[mask]")
