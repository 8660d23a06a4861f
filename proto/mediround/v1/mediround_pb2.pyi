import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Session(_message.Message):
    __slots__ = ("id", "width", "height", "create_time", "expire_time", "round_count", "metadata", "image_sha256")
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
    id: str
    width: int
    height: int
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    round_count: int
    metadata: _containers.ScalarMap[str, str]
    image_sha256: str
    def __init__(self, id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., round_count: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., image_sha256: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("session_id", "index", "question", "answer", "mask_png", "has_mask", "box", "quality", "corrected", "reference_round", "request_id", "timings", "create_time", "served_by")
    class ServedByEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
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
    index: int
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
    def __init__(self, session_id: _Optional[str] = ..., index: _Optional[int] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., mask_png: _Optional[bytes] = ..., has_mask: _Optional[bool] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., quality: _Optional[float] = ..., corrected: _Optional[bool] = ..., reference_round: _Optional[int] = ..., request_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., served_by: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("image", "metadata", "ttl_seconds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    metadata: _containers.ScalarMap[str, str]
    ttl_seconds: int
    def __init__(self, image: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("session_id", "index")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    index: int
    def __init__(self, session_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("image", "question")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    question: str
    def __init__(self, image: _Optional[bytes] = ..., question: _Optional[str] = ...) -> None: ...
