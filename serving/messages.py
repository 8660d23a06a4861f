"""The service's messages: what passes between the gRPC servicer, the ``Dialogue``, the model's three
steps and the store. Plain dataclasses, no torch, no Ray, no gRPC, so every process can import them.

Rounds are counted as users count them: ``number`` and ``reference_round`` are 1-based round
numbers (the model's 0-based round indexes stay inside the model steps).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class DicomSource:
    """A DICOM source's identity and the rendering that made the model's picture of it: all of the edge's
    ``serving.dicom.pixels.DicomIdentity`` and the part of its ``DicomRendering`` the API reports (the proto's
    ``DicomSource``), under the same names; ``serving.dicom.edge`` builds it from them."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    frame: int
    """1-based frame of the instance the picture is of."""
    number_of_frames: int
    transfer_syntax_uid: str
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    window_center: float
    window_width: float
    window_source: str
    """"header", "header VOI LUT", "preset:<name>", "explicit", "full range" or "none" (colour)."""
    inverted: bool
    """MONOCHROME1, inverted so the picture shows as a viewer shows it."""
    pacs: str = ""
    """The configured PACS it was fetched from; "" when its bytes were sent."""


@dataclass
class Session:
    """One stored dialogue on one image."""

    session_id: str
    image_sha256: str
    width: int
    height: int
    created: float
    expires: float
    ttl: int
    round_count: int
    """Rounds appended so far; a round is appended only onto the count it was computed from."""
    metadata: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    """The tenant that created it; only that tenant sees it ("" when the server runs without tokens)."""
    image_key: str = ""
    """The image's name in the store and the encoders' caches (``serving.store.content_key``)."""
    dicom: DicomSource | None = None
    """Set for a session opened on DICOM; its header (no pixel data) is stored beside it."""


@dataclass
class RoundTimings:
    """Where a round's time went, in milliseconds."""

    encode_ms: float = 0.0
    reason_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    encoder_cache_hit: bool = False


@dataclass
class Round:
    """One round as stored and answered."""

    number: int
    """1-based position in its session."""
    question: str
    """The normalised question (what the prompt was built from)."""
    answer: str
    answer_ids: list[int]
    reference_round: int | None
    """1-based number of the round whose mask fed the reference tokens; None: no reference."""
    mask_png: bytes
    """Single-channel 8-bit PNG, foreground 255; empty when the round has no mask (no [SEG], or it found nothing)."""
    box: tuple[int, int, int, int] | None
    quality: float | None
    corrected: bool
    has_mask: bool
    seg_vector: list[float] | None
    """The uncorrected SAM prompt (lets a later round re-judge it)."""
    request_id: str = ""
    timings: RoundTimings = field(default_factory=RoundTimings)
    created: float = 0.0
    served_by: dict[str, str] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray | None:
        """(H, W) bool; None for a round without a mask (no [SEG], or it found nothing)."""
        return decode_mask(self.mask_png) if self.mask_png else None

    def prior(self) -> PriorTurn:
        """What the reasoning step needs of this round in a later one."""
        return PriorTurn(question=self.question, reference_round=self.reference_round,
                         answer_ids=tuple(self.answer_ids))


@dataclass(frozen=True)
class PriorTurn:
    """An earlier round as the reasoning step sees it: enough to tell whether the key/value cache it
    holds is this dialogue's (a rebuild reads the stored rounds themselves)."""

    question: str
    reference_round: int | None
    answer_ids: tuple[int, ...]


@dataclass
class Encoding:
    """An image's encoding as the steps pass it on: ``ref`` is the encoding itself in one process and
    a Ray object reference between processes (put once, fetched where it is used)."""

    ref: object
    cache_hit: bool
    image_key: str = ""
    """The image's name in the store and the caches (``serving.store.content_key``)."""


@dataclass
class ReasonRequest:
    """The language step of the next round of a dialogue."""

    session_id: str | None
    """None for a stateless round: nothing is kept."""
    encoding: Encoding
    question: str
    reference_round: int | None
    """Resolved by the dialogue (1-based); None: no reference."""
    history: list[PriorTurn]
    """What the reasoning step needs of each of the session's stored rounds, oldest first."""
    reference_mask_png: bytes = b""
    """The referenced round's mask (empty without a reference)."""


@dataclass
class ReasonedTurn:
    """What the language step produced: the answer and, when it said [SEG], the SAM prompt."""

    answer: str
    answer_ids: list[int]
    seg_vector: list[float] | None
    reference_round: int | None
    replica: str = "local"


@dataclass
class MaskRequest:
    """A [SEG] vector to judge, correct and decode on its image."""

    encoding: Encoding
    seg_vector: list[float]


@dataclass
class DecodedMask:
    """The segmentation step's answer."""

    mask_png: bytes
    box: tuple[int, int, int, int] | None
    quality: float
    corrected: bool


@dataclass
class EncoderStats:
    """An image-encoder replica's counters."""

    computed: int
    """Images run through the encoders."""
    cached: int
    """Encodings held in the replica's LRU now."""


@dataclass
class ReasonerStats:
    """A Reasoner replica's counters."""

    reused: int
    """Rounds that found their dialogue's key/value cache on the replica."""
    rebuilt: int
    """Rounds that built it: first rounds and rebuilds from the store."""
    dialogues: int
    batches: int


@dataclass
class CachedData:
    """What one replica holds of one session: its image's encoding, its dialogue's key/value cache."""

    replica: str
    image: bool
    dialogue: bool


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) bool -> single-channel 8-bit PNG, foreground 255."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", compress_level=1)  # no int64 copy
    return buf.getvalue()


def decode_mask(png: bytes) -> np.ndarray:
    """A mask PNG -> (H, W) bool."""
    return np.asarray(Image.open(io.BytesIO(png))) > 0
