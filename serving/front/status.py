"""Every error the front can meet, mapped once to its gRPC status code (the detail is the error's message).

Order matters only where one error kind derives from another; anything not listed is INTERNAL.
"""

from __future__ import annotations

import grpc

from model.questions import QuestionError, ReferenceRoundError
from serving.errors import (
    DeadlinePassed,
    ImageTooLarge,
    InvalidDicomOptions,
    InvalidImage,
    InvalidInstanceReference,
    InvalidMetadata,
    InvalidSessionId,
    InvalidTTL,
    Overloaded,
    PacsInstanceNotFound,
    PacsRefused,
    PacsUnavailable,
    RequestIdReused,
    SegmentationUnavailable,
    StepUnavailable,
    UnknownPacs,
)
from serving.store import Conflict, RoundNotFound, SessionBusy, SessionNotFound, StoreUnavailable, TooManySessions

STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (RoundNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidImage, grpc.StatusCode.INVALID_ARGUMENT),  # InvalidDicom too
    (InvalidSessionId, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidTTL, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidMetadata, grpc.StatusCode.INVALID_ARGUMENT),
    (TooManySessions, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ImageTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),  # DicomTooLarge too
    (QuestionError, grpc.StatusCode.INVALID_ARGUMENT),
    (ReferenceRoundError, grpc.StatusCode.FAILED_PRECONDITION),
    (RequestIdReused, grpc.StatusCode.ALREADY_EXISTS),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StepUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (SessionBusy, grpc.StatusCode.ABORTED),
    (Conflict, grpc.StatusCode.ABORTED),
    (DeadlinePassed, grpc.StatusCode.DEADLINE_EXCEEDED),
    (InvalidDicomOptions, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownPacs, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidInstanceReference, grpc.StatusCode.INVALID_ARGUMENT),
    (PacsInstanceNotFound, grpc.StatusCode.NOT_FOUND),
    (PacsUnavailable, grpc.StatusCode.UNAVAILABLE),
    (PacsRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (SegmentationUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for ``error`` (INTERNAL for anything unexpected)."""
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
