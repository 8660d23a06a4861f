import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Session(_message.Message):
    __slots__ = ("id", "width", "height", "create_time", "expire_time", "round_count", "metadata", "image_sha256", "dicom")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    DICOM_FIELD_NUMBER: _ClassVar[int]
    id: str
    width: int
    height: int
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    round_count: int
    metadata: _containers.ScalarMap[str, str]
    image_sha256: str
    dicom: DicomSource
    def __init__(self, id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., round_count: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., image_sha256: _Optional[str] = ..., dicom: _Optional[_Union[DicomSource, _Mapping]] = ...) -> None: ...

class DicomSource(_message.Message):
    __slots__ = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid", "modality", "frame", "number_of_frames", "transfer_syntax_uid", "photometric_interpretation", "rescale_slope", "rescale_intercept", "window_center", "window_width", "window_source", "inverted", "pacs")
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_CLASS_UID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SYNTAX_UID_FIELD_NUMBER: _ClassVar[int]
    PHOTOMETRIC_INTERPRETATION_FIELD_NUMBER: _ClassVar[int]
    RESCALE_SLOPE_FIELD_NUMBER: _ClassVar[int]
    RESCALE_INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CENTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_WIDTH_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SOURCE_FIELD_NUMBER: _ClassVar[int]
    INVERTED_FIELD_NUMBER: _ClassVar[int]
    PACS_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    frame: int
    number_of_frames: int
    transfer_syntax_uid: str
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    window_center: float
    window_width: float
    window_source: str
    inverted: bool
    pacs: str
    def __init__(self, study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., sop_class_uid: _Optional[str] = ..., modality: _Optional[str] = ..., frame: _Optional[int] = ..., number_of_frames: _Optional[int] = ..., transfer_syntax_uid: _Optional[str] = ..., photometric_interpretation: _Optional[str] = ..., rescale_slope: _Optional[float] = ..., rescale_intercept: _Optional[float] = ..., window_center: _Optional[float] = ..., window_width: _Optional[float] = ..., window_source: _Optional[str] = ..., inverted: _Optional[bool] = ..., pacs: _Optional[str] = ...) -> None: ...

class DicomInstanceRef(_message.Message):
    __slots__ = ("pacs", "study_instance_uid", "series_instance_uid", "sop_instance_uid")
    PACS_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    pacs: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    def __init__(self, pacs: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ...) -> None: ...

class DicomOptions(_message.Message):
    __slots__ = ("frame", "window_preset", "window_center", "window_width")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_PRESET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CENTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_WIDTH_FIELD_NUMBER: _ClassVar[int]
    frame: int
    window_preset: str
    window_center: float
    window_width: float
    def __init__(self, frame: _Optional[int] = ..., window_preset: _Optional[str] = ..., window_center: _Optional[float] = ..., window_width: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: int
    y_min: int
    x_max: int
    y_max: int
    def __init__(self, x_min: _Optional[int] = ..., y_min: _Optional[int] = ..., x_max: _Optional[int] = ..., y_max: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("encode_ms", "reason_ms", "decode_ms", "total_ms", "encoder_cache_hit")
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    encode_ms: float
    reason_ms: float
    decode_ms: float
    total_ms: float
    encoder_cache_hit: bool
    def __init__(self, encode_ms: _Optional[float] = ..., reason_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., encoder_cache_hit: _Optional[bool] = ...) -> None: ...

class Round(_message.Message):
    __slots__ = ("session_id", "number", "question", "answer", "mask_png", "has_mask", "box", "quality", "corrected", "reference_round", "request_id", "timings", "create_time", "served_by")
    class ServedByEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    HAS_MASK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROUND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    number: int
    question: str
    answer: str
    mask_png: bytes
    has_mask: bool
    box: Box
    quality: float
    corrected: bool
    reference_round: int
    request_id: str
    timings: Timings
    create_time: _timestamp_pb2.Timestamp
    served_by: _containers.ScalarMap[str, str]
    def __init__(self, session_id: _Optional[str] = ..., number: _Optional[int] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., mask_png: _Optional[bytes] = ..., has_mask: _Optional[bool] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., quality: _Optional[float] = ..., corrected: _Optional[bool] = ..., reference_round: _Optional[int] = ..., request_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., served_by: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("image", "dicom_instance", "dicom_options", "metadata", "ttl_seconds", "request_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DICOM_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    DICOM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    dicom_instance: DicomInstanceRef
    dicom_options: DicomOptions
    metadata: _containers.ScalarMap[str, str]
    ttl_seconds: int
    request_id: str
    def __init__(self, image: _Optional[bytes] = ..., dicom_instance: _Optional[_Union[DicomInstanceRef, _Mapping]] = ..., dicom_options: _Optional[_Union[DicomOptions, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionImageRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionImage(_message.Message):
    __slots__ = ("image", "media_type")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    media_type: str
    def __init__(self, image: _Optional[bytes] = ..., media_type: _Optional[str] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CreateRoundRequest(_message.Message):
    __slots__ = ("session_id", "question", "reference_round", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROUND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    question: str
    reference_round: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., question: _Optional[str] = ..., reference_round: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RoundEvent(_message.Message):
    __slots__ = ("answer", "round")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    answer: str
    round: Round
    def __init__(self, answer: _Optional[str] = ..., round: _Optional[_Union[Round, _Mapping]] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("session_id", "number")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    number: int
    def __init__(self, session_id: _Optional[str] = ..., number: _Optional[int] = ...) -> None: ...

class ListRoundsRequest(_message.Message):
    __slots__ = ("session_id", "include_masks")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MASKS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    include_masks: bool
    def __init__(self, session_id: _Optional[str] = ..., include_masks: _Optional[bool] = ...) -> None: ...

class ListRoundsResponse(_message.Message):
    __slots__ = ("rounds",)
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[Round]
    def __init__(self, rounds: _Optional[_Iterable[_Union[Round, _Mapping]]] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("image", "question", "dicom_options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    DICOM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    question: str
    dicom_options: DicomOptions
    def __init__(self, image: _Optional[bytes] = ..., question: _Optional[str] = ..., dicom_options: _Optional[_Union[DicomOptions, _Mapping]] = ...) -> None: ...

class GetSegmentationRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Segmentation(_message.Message):
    __slots__ = ("dicom", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "rounds", "skipped_rounds")
    DICOM_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    dicom: bytes
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    rounds: _containers.RepeatedScalarFieldContainer[int]
    skipped_rounds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dicom: _Optional[bytes] = ..., study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., rounds: _Optional[_Iterable[int]] = ..., skipped_rounds: _Optional[_Iterable[int]] = ...) -> None: ...

class ExportSessionRequest(_message.Message):
    __slots__ = ("session_id", "destination")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    destination: str
    def __init__(self, session_id: _Optional[str] = ..., destination: _Optional[str] = ...) -> None: ...

class ExportSessionResponse(_message.Message):
    __slots__ = ("destination", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "rounds", "skipped_rounds")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    destination: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    rounds: _containers.RepeatedScalarFieldContainer[int]
    skipped_rounds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, destination: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., rounds: _Optional[_Iterable[int]] = ..., skipped_rounds: _Optional[_Iterable[int]] = ...) -> None: ...
