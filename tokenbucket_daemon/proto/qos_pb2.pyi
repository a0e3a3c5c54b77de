from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobTag(_message.Message):
    __slots__ = ("job_id", "user", "account", "caller")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user: str
    account: str
    caller: Caller
    def __init__(self, job_id: _Optional[str] = ..., user: _Optional[str] = ..., account: _Optional[str] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class Caller(_message.Message):
    __slots__ = ("uid", "gid", "groups")
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    uid: int
    gid: int
    groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, uid: _Optional[int] = ..., gid: _Optional[int] = ..., groups: _Optional[_Iterable[int]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpenSessionReply(_message.Message):
    __slots__ = ("session_id", "key", "expires_ns", "data_port", "window", "lifetime_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    key: bytes
    expires_ns: int
    data_port: int
    window: int
    lifetime_seconds: int
    def __init__(self, session_id: _Optional[bytes] = ..., key: _Optional[bytes] = ..., expires_ns: _Optional[int] = ..., data_port: _Optional[int] = ..., window: _Optional[int] = ..., lifetime_seconds: _Optional[int] = ...) -> None: ...

class WriteChunk(_message.Message):
    __slots__ = ("tag", "tier", "path", "offset", "data", "fsync")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FSYNC_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    offset: int
    data: bytes
    fsync: bool
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., fsync: _Optional[bool] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("bytes_written",)
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    def __init__(self, bytes_written: _Optional[int] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "offset", "length", "chunk_size")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    offset: int
    length: int
    chunk_size: int
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class ReadChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("tag", "tier", "path")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class StatReply(_message.Message):
    __slots__ = ("size", "mode", "mtime_ns", "is_dir", "nlink", "uid", "gid", "atime_ns", "ctime_ns")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    NLINK_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    CTIME_NS_FIELD_NUMBER: _ClassVar[int]
    size: int
    mode: int
    mtime_ns: int
    is_dir: bool
    nlink: int
    uid: int
    gid: int
    atime_ns: int
    ctime_ns: int
    def __init__(self, size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., is_dir: _Optional[bool] = ..., nlink: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., atime_ns: _Optional[int] = ..., ctime_ns: _Optional[int] = ...) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "mode", "exclusive")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    mode: int
    exclusive: bool
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ..., exclusive: _Optional[bool] = ...) -> None: ...

class CreateReply(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class UnlinkRequest(_message.Message):
    __slots__ = ("tag", "tier", "path")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class UnlinkReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MkdirRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "mode", "parents")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    mode: int
    parents: bool
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ..., parents: _Optional[bool] = ...) -> None: ...

class MkdirReply(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class RmdirRequest(_message.Message):
    __slots__ = ("tag", "tier", "path")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class RmdirReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReaddirRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "page_token", "max_entries")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    page_token: str
    max_entries: int
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., page_token: _Optional[str] = ..., max_entries: _Optional[int] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "is_dir", "size", "mode", "uid", "gid", "mtime_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_dir: bool
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    def __init__(self, name: _Optional[str] = ..., is_dir: _Optional[bool] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., mtime_ns: _Optional[int] = ...) -> None: ...

class ReaddirReply(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RenameRequest(_message.Message):
    __slots__ = ("tag", "tier", "src", "dst")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    src: str
    dst: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ...) -> None: ...

class RenameReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TruncateRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "size")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    size: int
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class TruncateReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FsyncRequest(_message.Message):
    __slots__ = ("tag", "tier", "path")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class FsyncReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatfsRequest(_message.Message):
    __slots__ = ("tag", "tier")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ...) -> None: ...

class StatfsReply(_message.Message):
    __slots__ = ("total_bytes", "free_bytes", "total_files", "free_files", "name_max")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FILES_FIELD_NUMBER: _ClassVar[int]
    FREE_FILES_FIELD_NUMBER: _ClassVar[int]
    NAME_MAX_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    free_bytes: int
    total_files: int
    free_files: int
    name_max: int
    def __init__(self, total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., total_files: _Optional[int] = ..., free_files: _Optional[int] = ..., name_max: _Optional[int] = ...) -> None: ...

class SetattrRequest(_message.Message):
    __slots__ = ("tag", "tier", "path", "mode", "uid", "gid", "atime_ns", "mtime_ns", "atime_now", "mtime_now")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    ATIME_NOW_FIELD_NUMBER: _ClassVar[int]
    MTIME_NOW_FIELD_NUMBER: _ClassVar[int]
    tag: JobTag
    tier: str
    path: str
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    atime_now: bool
    mtime_now: bool
    def __init__(self, tag: _Optional[_Union[JobTag, _Mapping]] = ..., tier: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., atime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., atime_now: _Optional[bool] = ..., mtime_now: _Optional[bool] = ...) -> None: ...

class SetattrReply(_message.Message):
    __slots__ = ("stat",)
    STAT_FIELD_NUMBER: _ClassVar[int]
    stat: StatReply
    def __init__(self, stat: _Optional[_Union[StatReply, _Mapping]] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("kind", "value")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Selector.Kind]
        JOB: _ClassVar[Selector.Kind]
        USER: _ClassVar[Selector.Kind]
        ACCOUNT: _ClassVar[Selector.Kind]
        DEFAULT: _ClassVar[Selector.Kind]
    KIND_UNSPECIFIED: Selector.Kind
    JOB: Selector.Kind
    USER: Selector.Kind
    ACCOUNT: Selector.Kind
    DEFAULT: Selector.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    kind: Selector.Kind
    value: str
    def __init__(self, kind: _Optional[_Union[Selector.Kind, str]] = ..., value: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("selector", "tier", "limit_bps", "reservation_bps", "weight", "burst_bytes", "updated_ns", "origin", "scope")
    class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCOPE_DAEMON: _ClassVar[Policy.Scope]
        SCOPE_GROUP: _ClassVar[Policy.Scope]
    SCOPE_DAEMON: Policy.Scope
    SCOPE_GROUP: Policy.Scope
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BPS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_BPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BURST_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_NS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    tier: str
    limit_bps: float
    reservation_bps: float
    weight: float
    burst_bytes: int
    updated_ns: int
    origin: str
    scope: Policy.Scope
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., tier: _Optional[str] = ..., limit_bps: _Optional[float] = ..., reservation_bps: _Optional[float] = ..., weight: _Optional[float] = ..., burst_bytes: _Optional[int] = ..., updated_ns: _Optional[int] = ..., origin: _Optional[str] = ..., scope: _Optional[_Union[Policy.Scope, str]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("selector", "tier")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    tier: str
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., tier: _Optional[str] = ...) -> None: ...

class DeletePolicyReply(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesReply(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("job_id", "user", "account", "tier", "bandwidth_bps", "limit_bps")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BPS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user: str
    account: str
    tier: str
    bandwidth_bps: float
    limit_bps: float
    def __init__(self, job_id: _Optional[str] = ..., user: _Optional[str] = ..., account: _Optional[str] = ..., tier: _Optional[str] = ..., bandwidth_bps: _Optional[float] = ..., limit_bps: _Optional[float] = ...) -> None: ...

class ReserveReply(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("job_id", "tier", "max_classes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MAX_CLASSES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tier: str
    max_classes: int
    def __init__(self, job_id: _Optional[str] = ..., tier: _Optional[str] = ..., max_classes: _Optional[int] = ...) -> None: ...

class WatchStatsRequest(_message.Message):
    __slots__ = ("interval_ms", "job_id")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    job_id: str
    def __init__(self, interval_ms: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class SetEnforcementRequest(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class SetEnforcementReply(_message.Message):
    __slots__ = ("enabled", "released")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    released: int
    def __init__(self, enabled: _Optional[bool] = ..., released: _Optional[int] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("time_ns", "daemon_id", "classes", "tiers", "enforcing", "truncated", "total_classes")
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CLASSES_FIELD_NUMBER: _ClassVar[int]
    time_ns: int
    daemon_id: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassStats]
    tiers: _containers.RepeatedCompositeFieldContainer[TierStats]
    enforcing: bool
    truncated: bool
    total_classes: int
    def __init__(self, time_ns: _Optional[int] = ..., daemon_id: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassStats, _Mapping]]] = ..., tiers: _Optional[_Iterable[_Union[TierStats, _Mapping]]] = ..., enforcing: _Optional[bool] = ..., truncated: _Optional[bool] = ..., total_classes: _Optional[int] = ...) -> None: ...

class ClassStats(_message.Message):
    __slots__ = ("tag", "tier", "selector", "bytes_read", "bytes_written", "requests", "queued", "in_flight", "wait_seconds_total", "rate_bps", "tokens", "limit_bps", "reservation_bps", "weight", "rejected")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BPS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_BPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    tag: str
    tier: str
    selector: str
    bytes_read: int
    bytes_written: int
    requests: int
    queued: int
    in_flight: int
    wait_seconds_total: float
    rate_bps: float
    tokens: float
    limit_bps: float
    reservation_bps: float
    weight: float
    rejected: int
    def __init__(self, tag: _Optional[str] = ..., tier: _Optional[str] = ..., selector: _Optional[str] = ..., bytes_read: _Optional[int] = ..., bytes_written: _Optional[int] = ..., requests: _Optional[int] = ..., queued: _Optional[int] = ..., in_flight: _Optional[int] = ..., wait_seconds_total: _Optional[float] = ..., rate_bps: _Optional[float] = ..., tokens: _Optional[float] = ..., limit_bps: _Optional[float] = ..., reservation_bps: _Optional[float] = ..., weight: _Optional[float] = ..., rejected: _Optional[int] = ...) -> None: ...

class TierStats(_message.Message):
    __slots__ = ("tier", "root", "bytes_read", "bytes_written", "requests", "in_flight", "queued", "bandwidth_bps", "emulated_device_bps")
    TIER_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    EMULATED_DEVICE_BPS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    root: str
    bytes_read: int
    bytes_written: int
    requests: int
    in_flight: int
    queued: int
    bandwidth_bps: float
    emulated_device_bps: float
    def __init__(self, tier: _Optional[str] = ..., root: _Optional[str] = ..., bytes_read: _Optional[int] = ..., bytes_written: _Optional[int] = ..., requests: _Optional[int] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., bandwidth_bps: _Optional[float] = ..., emulated_device_bps: _Optional[float] = ...) -> None: ...

class DemandReport(_message.Message):
    __slots__ = ("daemon_id", "time_ns", "jobs")
    DAEMON_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    daemon_id: str
    time_ns: int
    jobs: _containers.RepeatedCompositeFieldContainer[JobDemand]
    def __init__(self, daemon_id: _Optional[str] = ..., time_ns: _Optional[int] = ..., jobs: _Optional[_Iterable[_Union[JobDemand, _Mapping]]] = ...) -> None: ...

class JobDemand(_message.Message):
    __slots__ = ("job_id", "tier", "demand_bps", "queued_bytes", "served_bps", "fraction")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    DEMAND_BPS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVED_BPS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tier: str
    demand_bps: float
    queued_bytes: int
    served_bps: float
    fraction: float
    def __init__(self, job_id: _Optional[str] = ..., tier: _Optional[str] = ..., demand_bps: _Optional[float] = ..., queued_bytes: _Optional[int] = ..., served_bps: _Optional[float] = ..., fraction: _Optional[float] = ...) -> None: ...

class FractionUpdate(_message.Message):
    __slots__ = ("leader", "fractions")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    leader: str
    fractions: _containers.RepeatedCompositeFieldContainer[JobFraction]
    def __init__(self, leader: _Optional[str] = ..., fractions: _Optional[_Iterable[_Union[JobFraction, _Mapping]]] = ...) -> None: ...

class JobFraction(_message.Message):
    __slots__ = ("job_id", "tier", "fraction")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tier: str
    fraction: float
    def __init__(self, job_id: _Optional[str] = ..., tier: _Optional[str] = ..., fraction: _Optional[float] = ...) -> None: ...

class FractionAck(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    def __init__(self, applied: _Optional[int] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPeersReply(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("daemon_id", "address")
    DAEMON_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    daemon_id: str
    address: str
    def __init__(self, daemon_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...
