"""The one adapter for the platform's Open API (Feishu/Lark server API) of a self-built app.

Everything the bridge asks the platform over HTTP with a ``tenant_access_token`` goes through
:class:`LarkApi`: meeting rooms, room levels, reservation limits and the platform's event egress
IPs today; the long connection's count later, each as one :class:`Endpoint` and one method. Callers see typed
results (msgspec models) and one error tree; the token, the rate limits and the retries stay
inside.

What it does for each call (the pages it follows, in the platform docs' server-API guide):

- **Token** — ``POST /open-apis/auth/v3/tenant_access_token/internal`` with the app id and
  secret ("自建应用获取 tenant_access_token",
  https://open.feishu.cn/document/server-docs/authentication-management/access-token/tenant_access_token_internal):
  the answer's ``expire`` is seconds; the token is cached and fetched again
  :data:`REFRESH_EARLY_S` before it expires (the platform hands out a new token once less than
  30 min are left, while the old one stays valid); one fetch at a time, shared (its token or
  its error) by every call that needs a token meanwhile. An answer that says the token is
  invalid (:data:`INVALID_TOKEN_CODES`) makes the call fetch a new token once and try once more.
- **Rate limits** — one token bucket per endpoint and documented limit (the limits are per API,
  per app, per tenant: "频控策略",
  https://open.feishu.cn/document/server-docs/api-call-guide/frequency-control), sized so that
  no window of the limit's length ever sees more calls than it allows (:class:`TokenBucket`).
  Several processes with the same app share the platform's count; the rate-limit answer covers
  that case.
- **Retries** (tenacity): a rate-limit answer (HTTP 429 and/or code 99991400) is waited out for
  the ``x-ogw-ratelimit-reset`` seconds it names, then retried; HTTP 5xx, the API's own
  ``internal error`` codes, network errors and answers that are not JSON are retried with
  exponential backoff and jitter; anything else is raised at once. Each call is bounded by
  ``call_timeout_s`` in all (waits included); past it the last error is raised.
- **Errors** — every failure is a :class:`LarkApiError` carrying the platform's ``code`` (an
  :class:`ErrorCode` member when the docs name it), its ``msg``, the HTTP status and the request's
  log id (the ``X-Tt-Logid`` header, else the body's ``error.log_id``), and a ``name``:

  ```
  LarkApiError               any refusal (name: ErrorCode name, code_<n>, http_<status>), or data
                             that does not fit the model (bad_data, not retried)
  ├── LarkAuthError          the token endpoint refused the app, or a token stayed invalid
  ├── LarkRateLimited        rate-limit answers until the call's time was up
  ├── LarkServerError        5xx / internal-error codes until the call's time was up
  ├── LarkTransportError     network error, timeout of one attempt, an answer that is not JSON
  └── LarkDeadlineExceeded   the call's bound passed while it waited for its turn or a token
  ```

  The app secret and the token never appear in an error's text, a log line or a ``repr``.

Not safe to share between event loops; one instance per process (per app) is the intended use.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from bridge.logs import capped
from bridge.settings import Settings

__all__ = [
    "FEISHU_DOMAIN",
    "FIXED_ERROR_NAMES",
    "INVALID_TOKEN_CODES",
    "LARK_DOMAIN",
    "MAX_OUTBOUND_IP_PAGE_SIZE",
    "OUTBOUND_IP_LIST",
    "RATE_LIMIT_CODE",
    "REFRESH_EARLY_S",
    "RESERVE_SCOPE",
    "ROOM_GET",
    "ROOM_LEVEL_GET",
    "ROOM_LEVEL_LIST",
    "ROOM_LIST",
    "TENANT_TOKEN",
    "ApproveConfig",
    "Device",
    "Endpoint",
    "ErrorCode",
    "LarkApi",
    "LarkApiError",
    "LarkAuthError",
    "LarkDeadlineExceeded",
    "LarkRateLimited",
    "LarkServerError",
    "LarkTransportError",
    "Limit",
    "OutboundIpPage",
    "RateLimiter",
    "ReserveConfig",
    "ReserveScopeConfig",
    "Room",
    "RoomLevel",
    "RoomLevelPage",
    "RoomPage",
    "RoomStatus",
    "ScopeType",
    "SubscribeDepartment",
    "SubscribeUser",
    "TimeConfig",
    "TokenBucket",
]

log = logging.getLogger("bridge.lark_api")

FEISHU_DOMAIN: Final = "https://open.feishu.cn"
LARK_DOMAIN: Final = "https://open.larksuite.com"
#: Seconds before a token's expiry at which it is fetched again (the platform returns a new one
#: once less than 30 min are left).
REFRESH_EARLY_S: Final = 300.0
#: Largest ``page_size`` of the paged vc endpoints (the docs' 数据校验规则: 最大值 100).
MAX_PAGE_SIZE: Final = 100
#: Largest ``page_size`` of ``GET /open-apis/event/v1/outbound_ip`` (its page: 最大值 50).
MAX_OUTBOUND_IP_PAGE_SIZE: Final = 50
#: The response header with the request's log id (the docs' "调用 API" page; the SDK's ``X_TT_LOGID``).
LOG_ID_HEADER: Final = "X-Tt-Logid"
#: Seconds until a rate-limit window resets (频控策略), read from a rate-limit answer.
RATE_LIMIT_RESET_HEADER: Final = "x-ogw-ratelimit-reset"
#: The rate-limit answer's code (频控策略; 通用错误码: "request trigger frequency limit").
RATE_LIMIT_CODE: Final = 99991400
#: Longest a rate-limit answer is waited out for when it carries no usable reset header, seconds.
_DEFAULT_RESET_S: Final = 1.0


class ErrorCode(enum.IntEnum):
    """Platform ``code`` values the client names, with the page that documents each.

    The vc codes come from the error tables of the room, room level and reservation pages
    (https://open.feishu.cn/document/server-docs/vc-v1/room/list and siblings); the others from
    "通用错误码" (https://open.feishu.cn/document/server-docs/api-call-guide/generic-error-code).
    A code not listed here is still carried, as an ``int``, and named ``code_<n>``.
    """

    #: 0 — success.
    OK = 0
    #: vc: HTTP 500, internal error (retried).
    INTERNAL_ERROR = 121001
    #: vc: HTTP 400, not supported.
    NOT_SUPPORT = 121002
    #: vc: HTTP 400, a parameter out of range.
    PARAM_ERROR = 121003
    #: vc: HTTP 404, the data does not exist.
    DATA_NOT_EXIST = 121004
    #: vc: HTTP 404 (403 on reserve_scope), no permission for the operation.
    NO_PERMISSION = 121005
    #: vc: HTTP 404, a CAS conflict.
    DATA_CONFLICT = 121006
    #: vc reserve_scope: HTTP 400, no such room or level, or ``scope_type`` does not match it.
    INVALID_SCOPE_ID = 126001
    #: event outbound_ip: HTTP 400, a paging parameter is invalid ("获取事件出口 IP").
    EVENT_PARAM_INVALID = 1810001
    #: Generic: invalid parameter (e.g. a token request without ``app_id``).
    INVALID_PARAMETER = 10003
    #: Generic: get tenant access token fail.
    GET_TENANT_TOKEN_FAIL = 10013
    #: Generic: app unauthorized (the app is disabled).
    APP_UNAUTHORIZED = 10014
    #: Generic: wrong app secret.
    WRONG_APP_SECRET = 10015
    #: Generic: app_id and app_secret did not match.
    APP_ID_SECRET_MISMATCH = 20002
    #: Generic: the tenant access token passed is invalid.
    TENANT_TOKEN_INVALID = 20013
    #: Generic: HTTP 404 on the path (resource not find).
    RESOURCE_NOT_FOUND = 99991201
    #: Generic: request method doesn't match.
    METHOD_MISMATCH = 99991301
    #: Generic: request trigger frequency limit (HTTP 429, older APIs 400) (retried).
    RATE_LIMITED = 99991400
    #: Generic: the caller's IP is not in the app's allow-list.
    IP_DENIED = 99991401
    #: Generic: this month's API call quota has been exceeded.
    MONTHLY_QUOTA_EXCEEDED = 99991403
    #: Generic: Need a token (no ``Authorization``).
    NEED_A_TOKEN = 99991661
    #: Generic: app not in use (disabled).
    APP_NOT_IN_USE = 99991662
    #: Generic: invalid access token (the tenant_access_token expired).
    INVALID_ACCESS_TOKEN = 99991663
    #: Generic: invalid tenant code (tenant_access_token 非法).
    INVALID_TENANT_TOKEN = 99991665
    #: Generic: invalid token, must start with t-/u-.
    INVALID_TOKEN_FORMAT = 99991671
    #: Generic: access denied, one of the scopes is required (the app lacks the API's scope).
    SCOPE_REQUIRED = 99991672
    #: Generic: unauthorized app (not installed in the tenant).
    UNAUTHORIZED_APP = 99991673
    #: Generic: the token has no permission.
    TOKEN_NO_PERMISSION = 99991676


#: Codes after which the call fetches a new token once and tries once more (通用错误码: the
#: tenant_access_token expired, missing, 非法, malformed or invalid; the Go SDK refreshes on
#: 99991663 and 99991671 too).
INVALID_TOKEN_CODES: Final = frozenset(
    {
        ErrorCode.NEED_A_TOKEN,
        ErrorCode.INVALID_ACCESS_TOKEN,
        ErrorCode.INVALID_TENANT_TOKEN,
        ErrorCode.INVALID_TOKEN_FORMAT,
        ErrorCode.TENANT_TOKEN_INVALID,
    }
)
#: Codes that are the server's trouble: retried like HTTP 5xx.
_SERVER_CODES: Final = frozenset({ErrorCode.INTERNAL_ERROR})


#: The fixed :attr:`LarkApiError.name` values beside the :class:`ErrorCode` names and the
#: ``code_<n>``, ``http_<status>`` and ``transport_<ExceptionType>`` families (a bounded set, for
#: metric labels).
FIXED_ERROR_NAMES: Final = ("bad_data", "deadline_exceeded", "not_json", "page_token_loop", "no_answer")


def _code_name(code: int | None, http_status: int | None) -> str:
    if code is not None and code != 0:
        try:
            return ErrorCode(code).name
        except ValueError:
            return f"code_{code}"
    return f"http_{http_status}" if http_status is not None else "no_answer"


class LarkApiError(Exception):
    """A call to the Open API that failed (module docstring: the tree).

    Attributes:
        name: the failure's name: the :class:`ErrorCode` member's name, ``code_<n>`` for a code
            the client does not know, ``http_<status>`` when the answer had no code, or a fixed
            identifier (``transport_<ExceptionType>``, ``not_json``, ``deadline_exceeded``).
        code: the platform's ``code`` (an :class:`ErrorCode` when known), or None.
        msg: the platform's ``msg`` (capped, with any secret or token masked), or ``""``.
        http_status: the HTTP status, or None when no answer came.
        log_id: the request's log id (``X-Tt-Logid``), or None.
        endpoint: the :attr:`Endpoint.name` of the call (``vc.room.list`` …).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        code: int | None = None,
        msg: str = "",
        http_status: int | None = None,
        log_id: str | None = None,
        name: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.code: int | None = code
        if code is not None:
            with contextlib.suppress(ValueError):
                self.code = ErrorCode(code)
        self.msg = msg
        self.http_status = http_status
        self.log_id = log_id
        self.name = name or _code_name(code, http_status)
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [f"{self.endpoint}: {self.name}"]
        details = []
        if self.code is not None:
            details.append(f"code {int(self.code)}")
        if self.http_status is not None:
            details.append(f"HTTP {self.http_status}")
        if self.log_id:
            details.append(f"log id {self.log_id}")
        if details:
            parts.append(f" ({', '.join(details)})")
        if self.msg:
            parts.append(f": {self.msg}")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text()!r})"


class LarkAuthError(LarkApiError):
    """The token endpoint refused the app (wrong secret, app disabled …), or a token was still
    invalid after one refresh. No retry mends it; the credentials or the app's state must change."""


class LarkRateLimited(LarkApiError):
    """The platform kept answering "rate limited" until the call's time was up.

    Attributes:
        reset_s: the last answer's ``x-ogw-ratelimit-reset``, seconds, or None.
    """

    def __init__(self, *, reset_s: float | None = None, **kwargs: Any) -> None:
        self.reset_s = reset_s
        super().__init__(**kwargs)


class LarkServerError(LarkApiError):
    """HTTP 5xx or an internal-error code, still so after retries until the call's time was up."""


class LarkTransportError(LarkApiError):
    """No usable answer: a network error, an attempt that timed out, or a body that is not a JSON
    object with an integer ``code``."""


class LarkDeadlineExceeded(LarkApiError):
    """The call's time bound passed while it waited for its turn under the rate limits."""


# ---- models (msgspec) ------------------------------------------------------------------------
# Field names are Lark's. Numeric strings of the docs (``disable_start_time``, ``opening_hour`` …)
# are decoded leniently (``strict=False``), so they arrive as integers whether the platform sends
# "1652356050" (the docs) or 1652356050 (the SDK's types).


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """A facility of a room: ``name`` ("电话")."""

    name: str | None = None


class RoomStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A room's status ("查询会议室详情" · ``room_status``).

    ``status``: enabled now; ``schedule_status``: enabled in future; ``disable_start_time`` /
    ``disable_end_time``: unix seconds (end 0 = disabled for good); ``contact_ids``: user ids of
    the type the call asked for; ``disable_notice`` / ``resume_notice``: notify on disabling /
    on re-enabling.
    """

    status: bool | None = None
    schedule_status: bool | None = None
    disable_start_time: int | None = None
    disable_end_time: int | None = None
    disable_reason: str | None = None
    contact_ids: list[str] | None = None
    disable_notice: bool | None = None
    resume_notice: bool | None = None


class Room(msgspec.Struct, frozen=True, kw_only=True):
    """A meeting room ("查询会议室详情", https://open.feishu.cn/document/server-docs/vc-v1/room/get).

    ``room_id`` (``omm_…``); ``capacity``: people; ``display_id``: the id shown to users;
    ``custom_room_id``: the tenant's own id; ``room_level_id``: its level (``omb_…``); ``path``:
    level ids above it; ``device``: facilities.
    """

    room_id: str
    name: str | None = None
    capacity: int | None = None
    description: str | None = None
    display_id: str | None = None
    custom_room_id: str | None = None
    room_level_id: str | None = None
    path: list[str] | None = None
    room_status: RoomStatus | None = None
    device: list[Device] | None = None


class RoomLevel(msgspec.Struct, frozen=True, kw_only=True):
    """A room level ("查询会议室层级详情", https://open.feishu.cn/document/server-docs/vc-v1/room_level/get).

    ``room_level_id`` (``omb_…``); ``parent_id``: the level above; ``path``: level ids from the
    top down to the parent; ``has_child``: it has sub-levels; ``custom_group_id``: the tenant's
    own id.
    """

    room_level_id: str
    name: str | None = None
    parent_id: str | None = None
    path: list[str] | None = None
    has_child: bool | None = None
    custom_group_id: str | None = None


class RoomPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``GET /open-apis/vc/v1/rooms``: ``rooms``, ``has_more``, and ``page_token``
    (present only when ``has_more``)."""

    rooms: list[Room] | None = None
    page_token: str | None = None
    has_more: bool = False


class RoomLevelPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``GET /open-apis/vc/v1/room_levels``: ``items``, ``has_more``, and
    ``page_token`` (present only when ``has_more``)."""

    items: list[RoomLevel] | None = None
    page_token: str | None = None
    has_more: bool = False


class OutboundIpPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``GET /open-apis/event/v1/outbound_ip`` ("获取事件出口 IP"): ``ip_list``, the
    addresses (or ranges) the platform pushes events from, as text; ``has_more``; and
    ``page_token`` (present only when ``has_more``)."""

    ip_list: list[str] | None = None
    page_token: str | None = None
    has_more: bool = False


class _RoomAnswer(msgspec.Struct, frozen=True, kw_only=True):
    room: Room


class _RoomLevelAnswer(msgspec.Struct, frozen=True, kw_only=True):
    room_level: RoomLevel


class ScopeType(enum.IntEnum):
    """A reservation scope: ``LEVEL`` (1, a room level) or ``ROOM`` (2, a room)."""

    LEVEL = 1
    ROOM = 2


class SubscribeUser(msgspec.Struct, frozen=True, kw_only=True):
    """An approver or a user allowed to book: ``user_id`` of the type the call asked for."""

    user_id: str | None = None


class SubscribeDepartment(msgspec.Struct, frozen=True, kw_only=True):
    """A department allowed to book: ``department_id`` (an open_department_id, ``od-…``)."""

    department_id: str | None = None


class ApproveConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Booking approval (the answer's ``approve_config``).

    ``approval_switch``: 0 off, 1 on; ``approval_condition``: 0 every booking, 1 those longer than
    ``meeting_duration`` (hours, 0.1-99); ``approvers``: at least one when on.
    """

    approval_switch: int | None = None
    approval_condition: int | None = None
    meeting_duration: float | None = None
    approvers: list[SubscribeUser] | None = None


class TimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Booking times (the answer's ``time_config``).

    ``if_cover_child_scope``: applies to sub-levels and rooms; ``time_switch``: 0 off, 1 on;
    ``days_in_advance``: days (1-730); ``opening_hour``, ``start_time``, ``end_time``: seconds
    since midnight (0-86400); ``max_duration``: hours (1-99).
    """

    if_cover_child_scope: bool | None = None
    time_switch: int | None = None
    days_in_advance: int | None = None
    opening_hour: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    max_duration: int | None = None


class ReserveScopeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Who may book (the answer's ``reserve_scope_config``).

    ``if_cover_child_scope``: applies to sub-levels and rooms; ``allow_all_users``: 0 some
    (``allow_users`` / ``allow_depts``), 1 everyone.
    """

    if_cover_child_scope: bool | None = None
    allow_all_users: int | None = None
    allow_users: list[SubscribeUser] | None = None
    allow_depts: list[SubscribeDepartment] | None = None


class ReserveConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A scope's booking limits ("查询会议室预定限制",
    https://open.feishu.cn/document/server-docs/vc-v1/scope_config/reserve_scope): the ``data``
    of ``GET /open-apis/vc/v1/reserve_configs/reserve_scope``."""

    approve_config: ApproveConfig | None = None
    time_config: TimeConfig | None = None
    reserve_scope_config: ReserveScopeConfig | None = None


class _ErrorDetail(msgspec.Struct, kw_only=True):
    """An error answer's ``error`` object: the "调用 API" page spells its log id ``logid``, the
    SDK's ``Error`` model and answers seen in the wild ``log_id``; both are read."""

    log_id: str | None = None
    logid: str | None = None


class _Head(msgspec.Struct, kw_only=True):
    """Every answer: ``code``, ``msg``, ``data`` (kept raw), ``error`` (troubleshooting)."""

    code: int
    msg: str = ""
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    error: _ErrorDetail | None = None


class _TokenAnswer(msgspec.Struct, kw_only=True):
    code: int
    msg: str = ""
    tenant_access_token: str | None = None
    expire: int | None = None
    error: _ErrorDetail | None = None


_T = TypeVar("_T")
_HEAD = msgspec.json.Decoder(_Head)
_TOKEN_ANSWER = msgspec.json.Decoder(_TokenAnswer, strict=False)
_DATA_DECODERS: Final[Mapping[type[Any], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls, strict=False)
    for cls in (RoomPage, RoomLevelPage, _RoomAnswer, _RoomLevelAnswer, ReserveConfig, OutboundIpPage)
}


# ---- endpoints and rate limits -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """A documented rate limit: at most ``calls`` calls in ``per_s`` seconds."""

    calls: int
    per_s: float


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API: ``method``, ``path`` (``{name}`` placeholders for path parameters), its documented
    ``limits``, a short ``name`` for logs and errors, and the ``doc`` page it follows."""

    name: str
    method: str
    path: str
    limits: tuple[Limit, ...]
    doc: str


_LEVEL_4: Final = (Limit(1000, 60.0), Limit(50, 1.0))  # 频控策略 level 4: 1000/min and 50/s
_DOCS: Final = "https://open.feishu.cn/document/server-docs/"

#: No limit documented for the token endpoint.
TENANT_TOKEN: Final = Endpoint(
    "auth.tenant_access_token",
    "POST",
    "/open-apis/auth/v3/tenant_access_token/internal",
    (),
    _DOCS + "authentication-management/access-token/tenant_access_token_internal",
)
ROOM_LIST: Final = Endpoint("vc.room.list", "GET", "/open-apis/vc/v1/rooms", _LEVEL_4, _DOCS + "vc-v1/room/list")
ROOM_GET: Final = Endpoint("vc.room.get", "GET", "/open-apis/vc/v1/rooms/{room_id}", _LEVEL_4, _DOCS + "vc-v1/room/get")
ROOM_LEVEL_LIST: Final = Endpoint(
    "vc.room_level.list", "GET", "/open-apis/vc/v1/room_levels", _LEVEL_4, _DOCS + "vc-v1/room_level/list"
)
ROOM_LEVEL_GET: Final = Endpoint(
    "vc.room_level.get",
    "GET",
    "/open-apis/vc/v1/room_levels/{room_level_id}",
    _LEVEL_4,
    _DOCS + "vc-v1/room_level/get",
)
#: 100/min (频控策略 level 3), unlike the other vc reads.
RESERVE_SCOPE: Final = Endpoint(
    "vc.reserve_config.reserve_scope",
    "GET",
    "/open-apis/vc/v1/reserve_configs/reserve_scope",
    (Limit(100, 60.0),),
    _DOCS + "vc-v1/scope_config/reserve_scope",
)
#: The page ("获取事件出口 IP", https://open.feishu.cn/document/server-docs/event-subscription-guide/list;
#: permission ``event:ip_list``, tenant_access_token) names no rate limit, nor does the SDK:
#: this assumes 频控策略 level 3 (100/min), the strictest common read tier — a refresh every few
#: hours asks for a page or two — and the rate-limit answer is waited out all the same.
OUTBOUND_IP_LIST: Final = Endpoint(
    "event.outbound_ip.list",
    "GET",
    "/open-apis/event/v1/outbound_ip",
    (Limit(100, 60.0),),
    _DOCS + "event-subscription-guide/list",
)
_ENDPOINTS: Final = (ROOM_LIST, ROOM_GET, ROOM_LEVEL_LIST, ROOM_LEVEL_GET, RESERVE_SCOPE, OUTBOUND_IP_LIST)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """A token bucket: holds up to ``capacity`` tokens, refilled at ``rate_per_s``, full at first.

    Over any interval of ``t`` seconds it lets at most ``capacity + rate_per_s · t`` calls
    through. :meth:`for_limit` sizes it so that this is exactly the documented limit over the
    limit's window, whichever way the platform counts (sliding or fixed windows).
    """

    __slots__ = ("_at", "_tokens", "capacity", "rate_per_s")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        if capacity < 1 or rate_per_s <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and rate_per_s > 0")
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self._tokens = float(capacity)
        self._at = now

    @classmethod
    def for_limit(cls, limit: Limit, now: float) -> TokenBucket:
        """The bucket for "``limit.calls`` per ``limit.per_s`` seconds": a burst of a tenth of
        the calls (at least 1) and a refill of the rest over the window, so that
        ``capacity + rate · per_s == calls`` (e.g. 1000/min → 100 at once, then 15/s; 50/s →
        5 at once, then 45/s)."""
        capacity = max(1, limit.calls // 10)
        if capacity >= limit.calls:
            return cls(limit.calls, limit.calls / limit.per_s, now)
        return cls(capacity, (limit.calls - capacity) / limit.per_s, now)

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now

    def wait_s(self, now: float) -> float:
        """Seconds from ``now`` until one token is there (0 when one is)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate_per_s

    def take(self, now: float) -> None:
        """Take one token (call when :meth:`wait_s` is 0)."""
        self._refill(now)
        self._tokens -= 1.0


class RateLimiter:
    """The buckets of one endpoint; callers take their turn in arrival order.

    Args:
        limits: the endpoint's documented limits (none: no wait).
        clock: seconds, monotonic (injectable for tests).
        sleep: waits that many seconds (injectable for tests).
    """

    __slots__ = ("_buckets", "_clock", "_lock", "_sleep")

    def __init__(self, limits: tuple[Limit, ...], *, clock: Clock, sleep: Sleep) -> None:
        now = clock()
        self._buckets = tuple(TokenBucket.for_limit(limit, now) for limit in limits)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self, deadline: float) -> bool:
        """Wait for a token of every bucket and take them.

        Args:
            deadline: on the clock; no wait goes past it.

        Returns:
            True once the tokens are taken; False when they would come only after ``deadline``
            (nothing taken).
        """
        if not self._buckets:
            return True
        async with _bounded(self._lock, deadline - self._clock()) as held:
            while held:
                now = self._clock()
                wait = max(bucket.wait_s(now) for bucket in self._buckets)
                if wait <= 0:
                    for bucket in self._buckets:
                        bucket.take(now)
                    return True
                if now + wait > deadline:
                    return False
                await self._sleep(wait)
        return False


@contextlib.asynccontextmanager
async def _bounded(lock: asyncio.Lock, timeout_s: float) -> AsyncIterator[bool]:
    """Hold ``lock`` if it comes within ``timeout_s`` seconds: yields True when held, False when
    the wait ran out (so that no caller waits past its own bound behind another)."""
    try:
        if lock.locked():
            await asyncio.wait_for(lock.acquire(), timeout=max(0.0, timeout_s))
        else:
            await lock.acquire()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


# ---- the client --------------------------------------------------------------------------------


class _Token:
    """A tenant_access_token and when to fetch the next; its value never shows in a repr."""

    __slots__ = ("refresh_at", "value")

    def __init__(self, value: str, refresh_at: float) -> None:
        self.value = value
        self.refresh_at = refresh_at

    def __repr__(self) -> str:
        return f"_Token(refresh_at={self.refresh_at:.0f})"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, LarkRateLimited | LarkServerError | LarkTransportError)


class LarkApi:
    """The Open API client of one self-built app (module docstring: token, limits, retries, errors).

    Args:
        session: the aiohttp session the calls use (owned by the caller).
        app_id: the App ID (``cli_…``).
        app_secret: the App Secret.
        domain: the Open Platform's base URL: :data:`FEISHU_DOMAIN` (default) or
            :data:`LARK_DOMAIN`, or a test server's.
        call_timeout_s: seconds one public call may take in all: attempts, waits for the rate
            limits, retries and the token fetch it needs (default 30).
        attempt_timeout_s: seconds one HTTP request may take (default 10).
        backoff_first_s: the first wait before retrying a 5xx or a network error, seconds; each
            next one doubles, up to ``backoff_max_s`` (defaults 0.5 and 8), plus up to a quarter
            of the first as jitter.
        refresh_early_s: seconds before a token's expiry at which it is fetched again (default
            :data:`REFRESH_EARLY_S`).
        clock: monotonic seconds (default ``time.monotonic``); token expiry, rate limits and
            the call's bound are measured on it.
        sleep: waits that many seconds (default ``asyncio.sleep``); tests pass one that moves
            their clock instead.
    """

    __slots__ = (
        "_app_id",
        "_app_secret",
        "_attempt_timeout_s",
        "_backoff_first_s",
        "_backoff_max_s",
        "_call_timeout_s",
        "_clock",
        "_domain",
        "_fetching",
        "_limiters",
        "_refresh_early_s",
        "_session",
        "_sleep",
        "_token",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_id: str,
        app_secret: SecretStr | str,
        domain: str = FEISHU_DOMAIN,
        call_timeout_s: float = 30.0,
        attempt_timeout_s: float = 10.0,
        backoff_first_s: float = 0.5,
        backoff_max_s: float = 8.0,
        refresh_early_s: float = REFRESH_EARLY_S,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self._app_id = app_id
        self._app_secret = app_secret if isinstance(app_secret, SecretStr) else SecretStr(app_secret)
        self._domain = domain.rstrip("/")
        self._call_timeout_s = call_timeout_s
        self._attempt_timeout_s = attempt_timeout_s
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s
        self._refresh_early_s = refresh_early_s
        self._clock = clock
        self._sleep = sleep
        self._limiters = {ep.name: RateLimiter(ep.limits, clock=clock, sleep=sleep) for ep in _ENDPOINTS}
        self._token: _Token | None = None
        self._fetching: asyncio.Future[_Token] | None = None

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings, **options: Any) -> LarkApi:
        """The client of the app the settings name (``BRIDGE_LARK_APP_ID``,
        ``BRIDGE_LARK_APP_SECRET``, ``BRIDGE_LARK_DOMAIN``); ``options`` as for the constructor.

        Raises:
            ValueError: the app id or secret is not set.
        """
        if not settings.lark_app_id or settings.lark_app_secret is None:
            raise ValueError("BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET are required for the Open API")
        return cls(
            session,
            app_id=settings.lark_app_id,
            app_secret=settings.lark_app_secret,
            domain=settings.lark_domain,
            **options,
        )

    def __repr__(self) -> str:
        return f"LarkApi(app_id={self._app_id!r}, domain={self._domain!r})"

    # ---- public calls ------------------------------------------------------------------------

    async def get_room(self, room_id: str, *, user_id_type: str | None = None) -> Room:
        """``GET /open-apis/vc/v1/rooms/:room_id`` ("查询会议室详情",
        https://open.feishu.cn/document/server-docs/vc-v1/room/get; 1000/min and 50/s).

        Args:
            room_id: ``omm_…``.
            user_id_type: ``open_id`` (the platform's default), ``union_id`` or ``user_id``: the
                type of ``room_status.contact_ids``.

        Returns:
            The room.

        Raises:
            LarkApiError: ``DATA_NOT_EXIST`` (121004, HTTP 404) for an unknown room, and the rest
                of the tree (module docstring).
        """
        answer = await self._call(
            ROOM_GET, _RoomAnswer, path_params={"room_id": room_id}, query=_query(user_id_type=user_id_type)
        )
        return answer.room

    async def list_rooms_page(
        self,
        *,
        room_level_id: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        page_token: str | None = None,
        user_id_type: str | None = None,
    ) -> RoomPage:
        """One page of ``GET /open-apis/vc/v1/rooms`` ("查询会议室列表",
        https://open.feishu.cn/document/server-docs/vc-v1/room/list; 1000/min and 50/s).

        Args:
            room_level_id: the level whose rooms to list; None (sent empty) for the tenant's.
            page_size: 1-100 rooms per page (default 100).
            page_token: the previous page's ``page_token``; None for the first page.
            user_id_type: as for :meth:`get_room`.

        Returns:
            The page: ``rooms``, ``has_more``, ``page_token`` (only when ``has_more``).

        Raises:
            ValueError: ``page_size`` outside 1-100.
            LarkApiError: the tree (module docstring).
        """
        _check_page_size(page_size)
        return await self._call(
            ROOM_LIST,
            RoomPage,
            query=_query(
                page_size=page_size, page_token=page_token, room_level_id=room_level_id, user_id_type=user_id_type
            ),
        )

    async def list_rooms(
        self, *, room_level_id: str | None = None, page_size: int = MAX_PAGE_SIZE, user_id_type: str | None = None
    ) -> AsyncIterator[Room]:
        """Every room of one level (or of the tenant), page after page (:meth:`list_rooms_page`).

        Yields:
            Each :class:`Room` in the platform's order; the next page is asked for only when the
            caller gets past the current one.

        Raises:
            LarkApiError: as :meth:`list_rooms_page`, or ``page_token_loop`` when the platform
                hands back the same token with ``has_more`` twice in a row.
        """

        async def page(token: str | None) -> tuple[Sequence[Room] | None, bool, str | None]:
            p = await self.list_rooms_page(
                room_level_id=room_level_id, page_size=page_size, page_token=token, user_id_type=user_id_type
            )
            return p.rooms, p.has_more, p.page_token

        async for room in _paged(ROOM_LIST, page):
            yield room

    async def get_room_level(self, room_level_id: str) -> RoomLevel:
        """``GET /open-apis/vc/v1/room_levels/:room_level_id`` ("查询会议室层级详情",
        https://open.feishu.cn/document/server-docs/vc-v1/room_level/get; 1000/min and 50/s).

        Args:
            room_level_id: ``omb_…``, or ``"0"`` for the tenant's own (top) level.

        Returns:
            The level.

        Raises:
            LarkApiError: ``DATA_NOT_EXIST`` (121004) for an unknown level, and the rest of the tree.
        """
        answer = await self._call(ROOM_LEVEL_GET, _RoomLevelAnswer, path_params={"room_level_id": room_level_id})
        return answer.room_level

    async def list_room_levels_page(
        self, *, room_level_id: str | None = None, page_size: int = MAX_PAGE_SIZE, page_token: str | None = None
    ) -> RoomLevelPage:
        """One page of ``GET /open-apis/vc/v1/room_levels`` ("查询会议室层级列表",
        https://open.feishu.cn/document/server-docs/vc-v1/room_level/list; 1000/min and 50/s):
        the sub-levels of ``room_level_id`` (None, sent empty: the tenant's top levels).

        Args:
            room_level_id: the parent level, or None.
            page_size: 1-100 levels per page (default 100).
            page_token: the previous page's ``page_token``; None for the first page.

        Returns:
            The page: ``items``, ``has_more``, ``page_token`` (only when ``has_more``).

        Raises:
            ValueError: ``page_size`` outside 1-100.
            LarkApiError: the tree (module docstring).
        """
        _check_page_size(page_size)
        return await self._call(
            ROOM_LEVEL_LIST,
            RoomLevelPage,
            query=_query(room_level_id=room_level_id, page_size=page_size, page_token=page_token),
        )

    async def list_room_levels(
        self, *, room_level_id: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[RoomLevel]:
        """Every direct sub-level of ``room_level_id`` (None: the tenant's top levels), page after
        page (:meth:`list_room_levels_page`).

        Yields:
            Each :class:`RoomLevel` in the platform's order.
        """

        async def page(token: str | None) -> tuple[Sequence[RoomLevel] | None, bool, str | None]:
            p = await self.list_room_levels_page(room_level_id=room_level_id, page_size=page_size, page_token=token)
            return p.items, p.has_more, p.page_token

        async for level in _paged(ROOM_LEVEL_LIST, page):
            yield level

    async def walk_room_levels(self, room_level_id: str | None = None) -> AsyncIterator[RoomLevel]:
        """Every level below ``room_level_id`` (None: the whole tree from the tenant's top),
        breadth first; a level's sub-levels are listed only when its ``has_child`` is true.

        Yields:
            Each :class:`RoomLevel` once (a level seen twice is not walked again).
        """
        queue: list[str | None] = [room_level_id]
        seen: set[str] = set()
        while queue:
            parent = queue.pop(0)
            async for level in self.list_room_levels(room_level_id=parent):
                if level.room_level_id in seen:
                    continue
                seen.add(level.room_level_id)
                yield level
                if level.has_child:
                    queue.append(level.room_level_id)

    async def all_rooms(self, *, user_id_type: str | None = None) -> AsyncIterator[Room]:
        """Every room of the tenant: those listed for the tenant (``room_level_id`` empty), then
        those of each level of the tree (:meth:`walk_room_levels`).

        The docs leave open whether the tenant's list holds every room or only those at the top;
        this covers both, and yields each ``room_id`` once.

        Yields:
            Each :class:`Room` once.
        """
        seen: set[str] = set()
        async for room in self.list_rooms(user_id_type=user_id_type):
            if room.room_id not in seen:
                seen.add(room.room_id)
                yield room
        async for level in self.walk_room_levels():
            async for room in self.list_rooms(room_level_id=level.room_level_id, user_id_type=user_id_type):
                if room.room_id not in seen:
                    seen.add(room.room_id)
                    yield room

    async def get_reserve_config(
        self, scope_id: str, scope_type: ScopeType, *, user_id_type: str | None = None
    ) -> ReserveConfig:
        """``GET /open-apis/vc/v1/reserve_configs/reserve_scope`` ("查询会议室预定限制",
        https://open.feishu.cn/document/server-docs/vc-v1/scope_config/reserve_scope; 100/min):
        the booking limits of a room or a level — what ``vc.reserve_config.updated_v1`` says
        changed.

        Args:
            scope_id: a room (``omm_…``) or a level (``omb_…``).
            scope_type: :attr:`ScopeType.LEVEL` or :attr:`ScopeType.ROOM`, matching ``scope_id``.
            user_id_type: the type of the user ids in the answer (default ``open_id``).

        Returns:
            ``approve_config``, ``time_config``, ``reserve_scope_config``.

        Raises:
            LarkApiError: ``INVALID_SCOPE_ID`` (126001) when there is no such room or level or
                ``scope_type`` does not match it, and the rest of the tree.
        """
        return await self._call(
            RESERVE_SCOPE,
            ReserveConfig,
            query=_query(scope_id=scope_id, scope_type=str(int(scope_type)), user_id_type=user_id_type),
        )

    async def list_outbound_ips_page(
        self, *, page_size: int = MAX_OUTBOUND_IP_PAGE_SIZE, page_token: str | None = None
    ) -> OutboundIpPage:
        """One page of ``GET /open-apis/event/v1/outbound_ip`` ("获取事件出口 IP",
        https://open.feishu.cn/document/server-docs/event-subscription-guide/list; permission
        ``event:ip_list``; no documented rate limit, see :data:`OUTBOUND_IP_LIST`): the egress
        addresses the platform pushes events to the app's request URL from. They change; the
        platform recommends fetching them again regularly (every 6 h).

        Args:
            page_size: 1-50 entries per page (default 50).
            page_token: the previous page's ``page_token``; None for the first page.

        Returns:
            The page: ``ip_list``, ``has_more``, ``page_token`` (only when ``has_more``).

        Raises:
            ValueError: ``page_size`` outside 1-50.
            LarkApiError: ``SCOPE_REQUIRED`` (99991672) when the app lacks ``event:ip_list``,
                ``EVENT_PARAM_INVALID`` (1810001) for a bad page token, and the rest of the tree.
        """
        if not 1 <= page_size <= MAX_OUTBOUND_IP_PAGE_SIZE:
            raise ValueError(f"page_size must be 1-{MAX_OUTBOUND_IP_PAGE_SIZE}, got {page_size}")
        return await self._call(
            OUTBOUND_IP_LIST, OutboundIpPage, query=_query(page_size=page_size, page_token=page_token)
        )

    async def list_outbound_ips(self, *, page_size: int = MAX_OUTBOUND_IP_PAGE_SIZE) -> AsyncIterator[str]:
        """Every egress address of the platform's event pushes, page after page
        (:meth:`list_outbound_ips_page`).

        Yields:
            Each entry of ``ip_list`` as the platform wrote it (an IPv4 or IPv6 address, or a
            CIDR range), in the platform's order; parsing them is the caller's (see
            :mod:`bridge.allowlist`).

        Raises:
            LarkApiError: as :meth:`list_outbound_ips_page`, or ``page_token_loop`` when the
                platform hands back the same token with ``has_more`` twice in a row.
        """

        async def page(token: str | None) -> tuple[Sequence[str] | None, bool, str | None]:
            p = await self.list_outbound_ips_page(page_size=page_size, page_token=token)
            return p.ip_list, p.has_more, p.page_token

        async for entry in _paged(OUTBOUND_IP_LIST, page):
            yield entry

    # ---- the machinery -----------------------------------------------------------------------

    async def _call(
        self,
        endpoint: Endpoint,
        data_type: type[_T],
        *,
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> _T:
        """One call with its token, its turn under the limits and its retries, bounded by
        ``call_timeout_s``; returns the answer's ``data`` decoded as ``data_type``."""
        deadline = self._clock() + self._call_timeout_s
        path = endpoint.path.format_map({k: _path_segment(v) for k, v in (path_params or {}).items()})
        retrying = AsyncRetrying(
            # A failed token fetch was retried already, within the same bound.
            retry=retry_if_exception(lambda e: _retryable(e) and getattr(e, "endpoint", "") != TENANT_TOKEN.name),
            wait=self._wait,
            stop=lambda state: self._clock() + state.upcoming_sleep >= deadline,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                raw, log_id = await self._attempt(endpoint, path, query or {}, deadline)
                try:
                    return _DATA_DECODERS[data_type].decode(raw)  # type: ignore[no-any-return]
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # Not retried: the same data would not decode the next time either.
                    why = capped(str(exc)) or ""
                    raise LarkApiError(
                        endpoint=endpoint.name, http_status=200, log_id=log_id, name="bad_data", msg=why
                    ) from None
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _attempt(
        self, endpoint: Endpoint, path: str, query: Mapping[str, str], deadline: float
    ) -> tuple[bytes, str | None]:
        """One try (and, after an invalid-token answer, one more with a new token); the
        answer's raw ``data`` when its ``code`` is 0, and its log id."""
        token = await self._current_token(deadline)
        for last in (False, True):
            if not await self._limiters[endpoint.name].acquire(deadline):
                raise LarkDeadlineExceeded(endpoint=endpoint.name, name="deadline_exceeded")
            status, headers, body = await self._send(endpoint, path, query, token.value, deadline)
            head, log_id = self._head(endpoint, status, headers, body)
            if head.code in INVALID_TOKEN_CODES and not last:
                log.info(
                    "lark api: %s answered %s (log id %s); fetching a new token",
                    endpoint.name,
                    _code_name(head.code, status),
                    log_id,
                )
                token = await self._refresh_token(token, deadline)
                continue
            if head.code != 0 or status != 200:
                raise self._error(endpoint, status, headers, head, log_id)
            return bytes(head.data) or b"{}", log_id
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, endpoint: Endpoint, path: str, query: Mapping[str, str], token: str | None, deadline: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The HTTP request; ``(status, headers, body)``. Errors name only the exception type:
        aiohttp's text may hold the URL, and nothing of the request's headers may leak."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise LarkDeadlineExceeded(endpoint=endpoint.name, name="deadline_exceeded")
        headers = {"Content-Type": "application/json; charset=utf-8"}
        body: bytes | None = None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        else:
            body = msgspec.json.encode({"app_id": self._app_id, "app_secret": self._app_secret.get_secret_value()})
        try:
            async with self._session.request(
                endpoint.method,
                self._domain + path,
                params=query or None,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=min(self._attempt_timeout_s, remaining)),
            ) as resp:
                return resp.status, dict(resp.headers), await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise LarkTransportError(endpoint=endpoint.name, name=f"transport_{type(exc).__name__}") from None

    def _head(
        self, endpoint: Endpoint, status: int, headers: Mapping[str, str], body: bytes
    ) -> tuple[_Head, str | None]:
        """The answer's ``code``/``msg``/``data`` and its log id; an answer that is not a JSON
        object with an integer ``code`` is a :class:`LarkTransportError` (a 5xx one a
        :class:`LarkServerError`, a 429 one :class:`LarkRateLimited`)."""
        log_id = _header(headers, LOG_ID_HEADER)
        try:
            head = _HEAD.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            if status == 429:
                raise LarkRateLimited(
                    endpoint=endpoint.name, http_status=status, log_id=log_id, reset_s=_reset_s(headers)
                ) from None
            if status >= 500:
                raise LarkServerError(endpoint=endpoint.name, http_status=status, log_id=log_id) from None
            raise LarkTransportError(
                endpoint=endpoint.name, http_status=status, log_id=log_id, name="not_json"
            ) from None
        if log_id is None and head.error is not None:
            log_id = head.error.log_id or head.error.logid
        return head, log_id

    def _error(
        self,
        endpoint: Endpoint,
        status: int,
        headers: Mapping[str, str],
        head: _Head | _TokenAnswer,
        log_id: str | None,
    ) -> LarkApiError:
        """The exception for a refusal (``code`` ≠ 0 or HTTP ≠ 200)."""
        fields: dict[str, Any] = {
            "endpoint": endpoint.name,
            "code": head.code if head.code != 0 else None,
            "msg": self._scrub(head.msg),
            "http_status": status,
            "log_id": log_id,
        }
        if status == 429 or head.code == RATE_LIMIT_CODE:
            return LarkRateLimited(reset_s=_reset_s(headers), **fields)
        if status >= 500 or head.code in _SERVER_CODES:
            return LarkServerError(**fields)
        if endpoint is TENANT_TOKEN or head.code in INVALID_TOKEN_CODES:
            return LarkAuthError(**fields)
        return LarkApiError(**fields)

    def _scrub(self, text: str) -> str:
        """The platform's ``msg``, capped, with the secret and the token masked should it ever
        echo them."""
        secret = self._app_secret.get_secret_value()
        for value in (secret, self._token.value if self._token is not None else ""):
            if value:
                text = text.replace(value, "***")
        return capped(text) or ""

    # ---- the token -----------------------------------------------------------------------------

    async def _current_token(self, deadline: float) -> _Token:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        return await self._refresh_token(token, deadline)

    async def _refresh_token(self, stale: _Token | None, deadline: float) -> _Token:
        """A token newer than ``stale``: the one another caller fetched meanwhile, the fetch in
        flight (one at a time: every caller that needs a token meanwhile shares it, its result
        or its error), or a new fetch, bounded by the caller's ``deadline``."""
        current = self._token
        if current is not None and current is not stale and self._clock() < current.refresh_at:
            return current
        if self._fetching is None:
            fetching = asyncio.ensure_future(self._fetch_and_keep(deadline))
            fetching.add_done_callback(self._fetched)
            self._fetching = fetching
        try:
            return await asyncio.wait_for(asyncio.shield(self._fetching), timeout=max(0.0, deadline - self._clock()))
        except TimeoutError:
            raise LarkDeadlineExceeded(endpoint=TENANT_TOKEN.name, name="deadline_exceeded") from None

    def _fetched(self, fetching: asyncio.Future[_Token]) -> None:
        if self._fetching is fetching:
            self._fetching = None
        if not fetching.cancelled():
            fetching.exception()  # retrieved: callers that gave up waiting leave no warning behind

    async def _fetch_and_keep(self, deadline: float) -> _Token:
        value, expire_s = await self._fetch_token(deadline)
        # Refresh early, but never so early that a short-lived token is fetched on every call.
        lifetime = max(expire_s - self._refresh_early_s, expire_s / 2)
        self._token = _Token(value, self._clock() + lifetime)
        log.info("lark api: new tenant_access_token, valid for %d s", expire_s)
        return self._token

    async def _fetch_token(self, deadline: float) -> tuple[str, int]:
        """``POST /open-apis/auth/v3/tenant_access_token/internal``, retried like any call."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=self._wait,
            stop=lambda state: self._clock() + state.upcoming_sleep >= deadline,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                status, headers, body = await self._send(TENANT_TOKEN, TENANT_TOKEN.path, {}, None, deadline)
                log_id = _header(headers, LOG_ID_HEADER)
                try:
                    answer = _TOKEN_ANSWER.decode(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    head, log_id = self._head(TENANT_TOKEN, status, headers, body)  # raises for non-JSON
                    raise self._error(TENANT_TOKEN, status, headers, head, log_id) from None
                if answer.code != 0 or status != 200 or not answer.tenant_access_token or not answer.expire:
                    if log_id is None and answer.error is not None:
                        log_id = answer.error.log_id or answer.error.logid
                    raise self._error(TENANT_TOKEN, status, headers, answer, log_id)
                return answer.tenant_access_token, answer.expire
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    # ---- retries -------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next try: a rate-limit answer's reset header (or 1 s), else
        exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, LarkRateLimited):
            return exc.reset_s if exc.reset_s is not None and exc.reset_s > 0 else _DEFAULT_RESET_S
        step = self._backoff_first_s * 2 ** max(0, state.attempt_number - 1)
        jitter = random.uniform(0, self._backoff_first_s / 4)  # noqa: S311 - jitter, not a secret
        return float(min(self._backoff_max_s, step) + jitter)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, LarkApiError):
            log.warning("lark api: %s; retrying in %.1f s", exc, state.upcoming_sleep)


def _query(**params: str | int | None) -> dict[str, str]:
    return {k: str(v) for k, v in params.items() if v is not None}


def _path_segment(value: str) -> str:
    return quote(value, safe="")


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1-{MAX_PAGE_SIZE}, got {page_size}")


async def _paged(
    endpoint: Endpoint, page: Callable[[str | None], Awaitable[tuple[Sequence[_T] | None, bool, str | None]]]
) -> AsyncIterator[_T]:
    """Every item of a paged listing: ``page(token)`` fetches one page (None: the first) and gives
    its ``(items, has_more, page_token)``; the next page is asked for only once the caller got past
    the current one.

    Raises:
        LarkApiError: ``page_token_loop`` when the platform hands back the same token with
            ``has_more`` twice in a row, and whatever ``page`` raises.
    """
    token: str | None = None
    while True:
        items, has_more, next_token = await page(token)
        for item in items or ():
            yield item
        if not has_more or not next_token:
            return
        if next_token == token:
            raise LarkApiError(endpoint=endpoint.name, name="page_token_loop")
        token = next_token


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _reset_s(headers: Mapping[str, str]) -> float | None:
    """``x-ogw-ratelimit-reset`` in seconds, or None when absent or not a number ≥ 0."""
    value = _header(headers, RATE_LIMIT_RESET_HEADER)
    try:
        reset = float(value) if value is not None else None
    except ValueError:
        return None
    return reset if reset is not None and 0 <= reset < 3600 else None
