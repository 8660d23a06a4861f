"""Domain errors: what the dialogue, the model steps and the DICOM edge raise. No gRPC here.

The store raises its own (``serving.store``, and ``RequestIdReused`` for a session), the questions theirs
(``model.questions``); the front maps all of them to status codes once, in ``serving.front.status``, with the
error's message as the detail.
"""

from __future__ import annotations


class InvalidImage(ValueError):
    """Image bytes that are not a PNG (8/16-bit), JPEG, TIFF or DICOM image, or have a bad size."""


class ImageTooLarge(ValueError):
    """An image over the configured byte or pixel limits."""


class InvalidSessionId(ValueError):
    """A session id the server did not make (ids are refused before the store is touched)."""


class InvalidMetadata(ValueError):
    """Session metadata over the configured entry or byte limits."""


class InvalidTTL(ValueError):
    """A session lifetime below zero or above the configured maximum."""


class RequestIdReused(ValueError):
    """A request id that already made a round or a session, sent again with a different request."""


class StepUnavailable(ConnectionError):
    """A model step's replica died or could not be reached mid-round; nothing was applied, a retry is safe."""


class Overloaded(RuntimeError):
    """The service has more rounds in flight than it accepts."""


class DeadlinePassed(RuntimeError):
    """The call's own deadline passed before its round finished (other timeouts are internal errors)."""



# DICOM input (serving.dicom.pixels); the first two are kinds of InvalidImage / ImageTooLarge.
class InvalidDicom(InvalidImage):
    """DICOM Part-10 bytes that are not an image the service decodes: truncated, no pixel data, a non-image or
    unknown SOP class, a transfer syntax or photometric interpretation without a decoder here."""


class DicomTooLarge(ImageTooLarge):
    """A DICOM instance over the configured byte, side or frame limits (checked from its header)."""


class InvalidDicomOptions(ValueError):
    """DICOM options the image cannot take: a frame it does not have, an unknown window preset, a window width
    of 0 or less, a window on a colour image or a CT preset on a non-CT one."""



# The PACS (DICOMweb) edge: serving/dicom/pacs.py raises these; their messages name the endpoint by its
# configured name only, never its address, credentials or the instance's UIDs.


class UnknownPacs(ValueError):
    """A PACS endpoint name this server has not configured (the message lists the names it has)."""


class InvalidInstanceReference(ValueError):
    """A study / series / SOP instance UID that is not a DICOM UID (digits and dots, at most 64 characters)."""


class PacsInstanceNotFound(LookupError):
    """The PACS has no instance with the referenced UIDs."""


class PacsUnavailable(ConnectionError):
    """The PACS could not be reached, timed out, or answered 5xx / 429 after the retries; a retry later may work."""


class PacsRefused(RuntimeError):
    """The PACS refused the server's credentials or an instance it stored, or answered what is not DICOM:
    the server's configuration or the PACS needs fixing, a retry will not help."""



# The DICOM SEG export (serving/dicom/seg.py).
class SegmentationUnavailable(RuntimeError):
    """No DICOM Segmentation can be made of these rounds: the source lacks what a SEG must reference (a frame of
    reference and plane geometry for CT / MR / multi-frame images, its UIDs, its pixel spacing where it has a
    patient coordinate system) or no round has a mask. The rounds' PNG masks are unaffected."""
