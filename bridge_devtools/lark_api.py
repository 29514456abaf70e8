"""A fake Lark / Feishu Open API (the server API of a self-built app), for tests and demos.

An aiohttp app that answers as the platform docs describe (the pages are named in
:mod:`bridge.lark_api`), in-process (:attr:`FakeLarkApi.app` for aiohttp's test server, or
:meth:`FakeLarkApi.start` on ``127.0.0.1``) or as a small server
(``python -m bridge_devtools.lark_api --port 8089 --rooms 2000 --levels 50``):

- ``POST /open-apis/auth/v3/tenant_access_token/internal`` — checks ``app_id`` / ``app_secret``;
  answers ``{"code": 0, "msg": "ok", "tenant_access_token": "t-…", "expire": <seconds>}``: the
  current token while at least 30 min of it are left (``expire`` = what is left), else a new one
  valid :attr:`~FakeLarkApi.token_ttl_s` (the old one stays valid until its own end);
- ``GET /open-apis/vc/v1/rooms`` (``page_size`` ≤ 100, ``page_token``, ``room_level_id``),
  ``GET /open-apis/vc/v1/rooms/:room_id``, ``GET /open-apis/vc/v1/room_levels``
  (``room_level_id`` parent, paged), ``GET /open-apis/vc/v1/room_levels/:room_level_id``
  (``0`` = the tenant's level), ``GET /open-apis/vc/v1/reserve_configs/reserve_scope``
  (``scope_id``, ``scope_type`` 1 level / 2 room), ``GET /open-apis/event/v1/outbound_ip``
  (``page_size`` ≤ 50, ``page_token``; the platform's event egress addresses): each needs
  ``Authorization: Bearer <token>``;
- every answer carries an ``X-Tt-Logid`` header; an error answer ``{"code", "msg", "error":
  {"log_id", "troubleshooter"}}`` with the HTTP status of the page's error table;
- the documented rate limits (1000/min and 50/s; 100/min for reserve_scope), counted per
  endpoint over sliding windows on :attr:`~FakeLarkApi.clock`: over them, HTTP 429,
  ``{"code": 99991400, "msg": "request trigger frequency limit"}`` and the headers
  ``x-ogw-ratelimit-limit`` / ``x-ogw-ratelimit-reset`` (seconds) ("频控策略").

State a test changes: :meth:`~FakeLarkApi.add_level`, :meth:`~FakeLarkApi.add_room`,
:meth:`~FakeLarkApi.update_room`, :meth:`~FakeLarkApi.remove_room`,
:meth:`~FakeLarkApi.set_reserve_config`, :meth:`~FakeLarkApi.populate`,
:attr:`~FakeLarkApi.outbound_ips` (a list; :meth:`~FakeLarkApi.set_outbound_ips`). Faults:
:meth:`~FakeLarkApi.rate_limit_next`, :meth:`~FakeLarkApi.fail_next` (a 5xx),
:meth:`~FakeLarkApi.answer_next` (any code), :meth:`~FakeLarkApi.expire_tokens`,
:meth:`~FakeLarkApi.clear_faults`. Every request is
recorded in :attr:`~FakeLarkApi.calls`.

The fake's own choices, where the docs say nothing:

- wrong credentials: HTTP 400 ``{"code": 10014, "msg": "app secret invalid"}``; a body without
  ``app_id`` / ``app_secret``: HTTP 400 code 10003;
- no ``Authorization``: HTTP 400 code 99991661 (Need a token); an unknown or expired token:
  HTTP 400 code 99991663;
- ``page_size`` defaults to 20; ``page_token`` is the offset of the page's first item in the
  current listing (the docs' examples are such numbers); a bad one is 121003;
- ``room_level_id`` empty lists the rooms (levels) directly under the tenant's level, not the
  whole tree; an unknown level is 404 / 121004;
- the tenant's level has its own ``omb_…`` id (``0`` is an alias for it in the ``get`` path),
  ``parent_id`` ``""`` and ``path`` ``[]``; a level's ``path`` is its ancestors from the
  tenant's level down to its parent, a room's is its level's path plus its level;
- a scope without reservation limits set answers ``{}`` as ``data``;
- outbound_ip: ``page_size`` defaults to 10 and must be 1-50 (else 400 / 1810001, the page's one
  error code), ``page_token`` is an offset as above; no rate limit is enforced (its page names
  none); the default list is the three addresses the platform announced in December 2024
  ("飞书开放平台事件与回调新增出口 IP") and a documentation range.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from aiohttp import web

__all__ = [
    "BAD_CREDENTIALS_CODE",
    "LIMITS",
    "RATE_LIMIT_CODE",
    "Call",
    "FakeLarkApi",
]

TOKEN_PATH: Final = "/open-apis/auth/v3/tenant_access_token/internal"  # noqa: S105 - a path, not a secret
#: The fake's answer ``code`` to a wrong app id or secret (the docs name none for this endpoint).
BAD_CREDENTIALS_CODE: Final = 10014
RATE_LIMIT_CODE: Final = 99991400
#: The documented limits, ``(calls, seconds)``, per endpoint name (the pages' 接口频率限制).
LIMITS: Final[Mapping[str, tuple[tuple[int, float], ...]]] = {
    "vc.room.list": ((1000, 60.0), (50, 1.0)),
    "vc.room.get": ((1000, 60.0), (50, 1.0)),
    "vc.room_level.list": ((1000, 60.0), (50, 1.0)),
    "vc.room_level.get": ((1000, 60.0), (50, 1.0)),
    "vc.reserve_config.reserve_scope": ((100, 60.0),),
}
#: A token is handed out again while at least this many seconds of it are left (the token page).
REUSE_ABOVE_S: Final = 1800.0
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 20
MAX_OUTBOUND_IP_PAGE_SIZE: Final = 50
DEFAULT_OUTBOUND_IP_PAGE_SIZE: Final = 10
#: The outbound_ip page's error code for a bad paging parameter.
OUTBOUND_IP_PARAM_CODE: Final = 1810001
#: The fake's egress addresses until a test sets others.
DEFAULT_OUTBOUND_IPS: Final = ("101.126.59.7", "101.126.59.8", "101.126.59.9", "203.0.113.0/28")
MAX_RECORDS: Final = 100_000
_USER_ID_TYPES: Final = frozenset({"open_id", "union_id", "user_id"})


#: The docs' example answer of reserve_configs/reserve_scope (查询会议室预定限制): a config tests can set.
DOC_RESERVE_CONFIG: Final[Mapping[str, Any]] = {
    "approve_config": {
        "approval_switch": 1,
        "approval_condition": 1,
        "meeting_duration": 3,
        "approvers": [{"user_id": "ou_a27b0xxxc98f856"}],
    },
    "time_config": {
        "if_cover_child_scope": True,
        "time_switch": 1,
        "days_in_advance": 30,
        "opening_hour": "27900",
        "start_time": "0",
        "end_time": "86400",
        "max_duration": 24,
    },
    "reserve_scope_config": {
        "if_cover_child_scope": True,
        "allow_all_users": 0,
        "allow_users": [{"user_id": "ou_a27bxxx8f856"}],
        "allow_depts": [{"department_id": "od-47d8b5xxxcc5f61a"}],
    },
}


@dataclass(frozen=True, slots=True)
class Call:
    """One request the fake answered: ``endpoint`` (``vc.room.list`` …, ``auth.tenant_access_token``,
    or ``unknown``), ``query``, ``token`` (the bearer token sent, or None), the answer's HTTP
    ``status`` and ``code``, its ``log_id``, and ``at`` on the fake's clock (seconds)."""

    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    token: str | None
    status: int
    code: int
    log_id: str
    at: float


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int
    code: int
    msg: str
    headers: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None  # None: any vc endpoint


class _Answer(Exception):
    """An error answer, raised inside a handler and turned into the response by ``_handle``."""

    def __init__(self, status: int, code: int, msg: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = dict(headers or {})


class FakeLarkApi:
    """The platform's Open API side; see the module docstring.

    Args:
        app_id, app_secret: the credentials the token endpoint accepts.
        clock: monotonic seconds for token lifetimes and rate-limit windows (default
            ``time.monotonic``); tests share theirs with the client under test.
        token_ttl_s: lifetime of a new token, seconds (default 7200, the documented maximum).
        enforce_rate_limits: answer 429 over the documented limits (default True).
    """

    def __init__(
        self,
        app_id: str = "cli_fake_app",
        app_secret: str = "fake-app-secret",  # noqa: S107 - the fake's own test credential
        *,
        clock: Callable[[], float] = time.monotonic,
        token_ttl_s: int = 7200,
        enforce_rate_limits: bool = True,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.enforce_rate_limits = enforce_rate_limits
        self.tenant_level_id = "omb_" + secrets.token_hex(16)
        self.levels: dict[str, dict[str, Any]] = {
            self.tenant_level_id: {
                "room_level_id": self.tenant_level_id,
                "name": "tenant",
                "parent_id": "",
                "path": [],
                "has_child": False,
                "custom_group_id": "",
            }
        }
        self.rooms: dict[str, dict[str, Any]] = {}
        self.reserve_configs: dict[tuple[int, str], dict[str, Any]] = {}
        #: What ``GET /open-apis/event/v1/outbound_ip`` lists, in order (a test may change it).
        self.outbound_ips: list[str] = list(DEFAULT_OUTBOUND_IPS)
        self.calls: list[Call] = []
        #: Tokens handed out, token → expiry on :attr:`clock`.
        self.tokens: dict[str, float] = {}
        self._current_token: str | None = None
        self._faults: collections.deque[_Fault] = collections.deque()
        self._windows: dict[tuple[str, int], collections.deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self.app = web.Application()
        self.app.router.add_post(TOKEN_PATH, self._token)
        self.app.router.add_get("/open-apis/vc/v1/rooms", self._list_rooms)
        self.app.router.add_get("/open-apis/vc/v1/rooms/{room_id}", self._get_room)
        self.app.router.add_get("/open-apis/vc/v1/room_levels", self._list_levels)
        self.app.router.add_get("/open-apis/vc/v1/room_levels/{room_level_id}", self._get_level)
        self.app.router.add_get("/open-apis/vc/v1/reserve_configs/reserve_scope", self._reserve_scope)
        self.app.router.add_get("/open-apis/event/v1/outbound_ip", self._outbound_ip)

    # ---- running -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host``:``port`` (0: a port chosen by the OS; see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._host = host
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLarkApi:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The base URL (the client's ``domain``) once :meth:`start` ran."""
        if self._port is None:
            raise RuntimeError("the fake Open API is not started")
        return f"http://{self._host}:{self._port}"

    # ---- state ---------------------------------------------------------------------------------

    def add_level(
        self,
        name: str,
        parent_id: str | None = None,
        *,
        room_level_id: str | None = None,
        custom_group_id: str | None = None,
    ) -> dict[str, Any]:
        """A new level under ``parent_id`` (None: the tenant's level); returns its record (the
        JSON the fake answers, a live dict)."""
        parent = self.levels[parent_id or self.tenant_level_id]
        level_id = room_level_id or "omb_" + secrets.token_hex(16)
        record = {
            "room_level_id": level_id,
            "name": name,
            "parent_id": parent["room_level_id"],
            "path": [*parent["path"], parent["room_level_id"]],
            "has_child": False,
            "custom_group_id": custom_group_id or "",
        }
        parent["has_child"] = True
        self.levels[level_id] = record
        return record

    def add_room(
        self, name: str, room_level_id: str | None = None, *, room_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A new room in ``room_level_id`` (None: the tenant's level); ``fields`` override the
        defaults (``capacity``, ``room_status`` …). Returns its record (a live dict)."""
        level = self.levels[room_level_id or self.tenant_level_id]
        rid = room_id or "omm_" + secrets.token_hex(16)
        record: dict[str, Any] = {
            "room_id": rid,
            "name": name,
            "capacity": 10,
            "description": "",
            "display_id": "FM" + str(int(hashlib.sha256(rid.encode()).hexdigest()[:8], 16)),
            "custom_room_id": "",
            "room_level_id": level["room_level_id"],
            "path": [*level["path"], level["room_level_id"]],
            "room_status": {
                "status": True,
                "schedule_status": True,
                "disable_start_time": "0",
                "disable_end_time": "0",
                "disable_reason": "",
                "contact_ids": [],
                "disable_notice": False,
                "resume_notice": False,
            },
            "device": [],
        }
        record.update(fields)
        self.rooms[rid] = record
        return record

    def update_room(self, room_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a room (``name="…"``, ``capacity=…``); returns its record."""
        self.rooms[room_id].update(fields)
        return self.rooms[room_id]

    def remove_room(self, room_id: str) -> None:
        """Delete a room."""
        del self.rooms[room_id]

    def set_reserve_config(self, scope_id: str, config: Mapping[str, Any]) -> None:
        """The reservation limits of a room (``omm_…``) or level: the answer's ``data``
        (``approve_config``, ``time_config``, ``reserve_scope_config``)."""
        self.reserve_configs[(self._scope_type_of(scope_id), scope_id)] = copy.deepcopy(dict(config))

    def set_outbound_ips(self, entries: list[str] | tuple[str, ...]) -> None:
        """What the outbound_ip listing answers from now on (addresses or CIDRs, as text)."""
        self.outbound_ips = list(entries)

    def populate(self, *, rooms: int, levels: int, top_levels: int = 5) -> None:
        """Build a tree: ``levels`` levels (``top_levels`` under the tenant; the others three to
        a parent, in order, so 50 levels are 5 at the top, 15 under them and 30 a level deeper)
        and ``rooms`` rooms spread round-robin over the tenant's level and every level."""
        created: list[str] = []
        for i in range(levels):
            parent = None if i < top_levels else created[(i - top_levels) // 3]
            created.append(self.add_level(f"level {i}", parent, custom_group_id=str(1000 + i))["room_level_id"])
        homes: list[str | None] = [None, *created]
        for i in range(rooms):
            self.add_room(f"room {i}", homes[i % len(homes)], custom_room_id=str(i), capacity=4 + i % 20)

    # ---- faults --------------------------------------------------------------------------------

    def rate_limit_next(self, n: int = 1, *, reset_s: int = 1, endpoint: str | None = None) -> None:
        """The next ``n`` API calls (of ``endpoint``, or any) get the rate-limit answer with
        ``x-ogw-ratelimit-reset: reset_s``."""
        headers = {"x-ogw-ratelimit-limit": "50", "x-ogw-ratelimit-reset": str(reset_s)}
        self._faults.append(_Fault(n, 429, RATE_LIMIT_CODE, "request trigger frequency limit", headers, endpoint))

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        code: int = 121001,
        msg: str = "internal error",
        endpoint: str | None = None,
    ) -> None:
        """The next ``n`` API calls (of ``endpoint``, or any) get HTTP ``status`` with ``code``."""
        self._faults.append(_Fault(n, status, code, msg, {}, endpoint))

    def answer_next(
        self,
        code: int,
        msg: str,
        *,
        status: int = 400,
        n: int = 1,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``n`` calls (of ``endpoint``, or any API call) get ``{"code", "msg"}`` with
        HTTP ``status``; ``endpoint="auth.tenant_access_token"`` targets the token endpoint."""
        self._faults.append(_Fault(n, status, code, msg, dict(headers or {}), endpoint))

    @property
    def faults_pending(self) -> int:
        """Faulty answers still to be served."""
        return sum(f.remaining for f in self._faults)

    def clear_faults(self) -> None:
        """Drop the faults not served yet."""
        self._faults.clear()

    def expire_tokens(self) -> None:
        """Every token handed out so far becomes invalid at once (API calls with it get 99991663)."""
        self.tokens.clear()
        self._current_token = None

    def api_calls(self, endpoint: str | None = None) -> list[Call]:
        """The recorded calls other than the token endpoint's (or only ``endpoint``'s)."""
        if endpoint is not None:
            return [c for c in self.calls if c.endpoint == endpoint]
        return [c for c in self.calls if c.endpoint != "auth.tenant_access_token"]

    # ---- handlers ------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            self._take_fault("auth.tenant_access_token")
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("app_id"), str) or "app_secret" not in body:
                raise _Answer(400, 10003, "invalid param")
            if body["app_id"] != self.app_id or body["app_secret"] != self.app_secret:
                raise _Answer(400, BAD_CREDENTIALS_CODE, "app secret invalid")
            now = self.clock()
            current = self._current_token
            if current is not None and self.tokens.get(current, 0) - now >= REUSE_ABOVE_S:
                return {"tenant_access_token": current, "expire": int(self.tokens[current] - now)}
            token = "t-" + secrets.token_hex(20)
            self.tokens[token] = now + self.token_ttl_s
            self._current_token = token
            return {"tenant_access_token": token, "expire": self.token_ttl_s}

        return await self._handle(request, "auth.tenant_access_token", answer, top_level=True)

    async def _list_rooms(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            level_id = self._level_param(request.query.get("room_level_id", ""))
            self._user_id_type(request)
            rooms = [r for r in self.rooms.values() if r["room_level_id"] == level_id]
            items, token, more = self._page(request, rooms)
            return {"rooms": items, **({"page_token": token} if more else {}), "has_more": more}

        return await self._handle(request, "vc.room.list", answer)

    async def _get_room(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            self._user_id_type(request)
            room = self.rooms.get(request.match_info["room_id"])
            if room is None:
                raise _Answer(404, 121004, "data not exist")
            return {"room": room}

        return await self._handle(request, "vc.room.get", answer)

    async def _list_levels(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            level_id = self._level_param(request.query.get("room_level_id", ""))
            children = [
                lv
                for lv in self.levels.values()
                if lv["parent_id"] == level_id and lv["room_level_id"] != self.tenant_level_id
            ]
            items, token, more = self._page(request, children)
            return {"items": items, **({"page_token": token} if more else {}), "has_more": more}

        return await self._handle(request, "vc.room_level.list", answer)

    async def _get_level(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            wanted = request.match_info["room_level_id"]
            level = self.levels.get(self.tenant_level_id if wanted == "0" else wanted)
            if level is None:
                raise _Answer(404, 121004, "data not exist")
            return {"room_level": level}

        return await self._handle(request, "vc.room_level.get", answer)

    async def _reserve_scope(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            self._user_id_type(request)
            scope_id = request.query.get("scope_id", "")
            scope_type = request.query.get("scope_type", "")
            if not scope_id or scope_type not in ("1", "2"):
                raise _Answer(400, 121003, "param error")
            known = scope_id in self.levels if scope_type == "1" else scope_id in self.rooms
            if not known:
                raise _Answer(
                    400,
                    126001,
                    "invalid room or level id, check itself or whether the scope_type corresponds to it",
                )
            return dict(self.reserve_configs.get((int(scope_type), scope_id), {}))

        return await self._handle(request, "vc.reserve_config.reserve_scope", answer)

    async def _outbound_ip(self, request: web.Request) -> web.Response:
        async def answer() -> dict[str, Any]:
            try:
                size = int(request.query.get("page_size", DEFAULT_OUTBOUND_IP_PAGE_SIZE))
                start = int(request.query.get("page_token") or 0)
            except ValueError:
                raise _Answer(400, OUTBOUND_IP_PARAM_CODE, "param is invalid") from None
            entries = self.outbound_ips
            if not 1 <= size <= MAX_OUTBOUND_IP_PAGE_SIZE or not 0 <= start <= len(entries):
                raise _Answer(400, OUTBOUND_IP_PARAM_CODE, "param is invalid")
            end = start + size
            more = end < len(entries)
            return {"ip_list": entries[start:end], **({"page_token": str(end)} if more else {}), "has_more": more}

        return await self._handle(request, "event.outbound_ip.list", answer)

    # ---- the common path -----------------------------------------------------------------------

    async def _handle(
        self,
        request: web.Request,
        endpoint: str,
        answer: Callable[[], Any],
        *,
        top_level: bool = False,
    ) -> web.Response:
        log_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()
        token = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        status, code, headers = 200, 0, {"X-Tt-Logid": log_id}
        try:
            if endpoint != "auth.tenant_access_token":
                self._take_fault(endpoint)
                self._check_token(token)
                self._check_rate(endpoint)
            data = await answer()
            body: dict[str, Any] = (
                {"code": 0, "msg": "ok", **data} if top_level else {"code": 0, "msg": "success", "data": data}
            )
        except _Answer as refusal:
            status, code = refusal.status, refusal.code
            headers.update(refusal.headers)
            body = {
                "code": code,
                "msg": refusal.msg,
                "error": {
                    "log_id": log_id,
                    "troubleshooter": f"https://open.feishu.cn/search?from=openapi&log_id={log_id}&code={code}",
                },
            }
        if len(self.calls) >= MAX_RECORDS:
            del self.calls[: MAX_RECORDS // 10]
        self.calls.append(
            Call(endpoint, request.method, request.path, dict(request.query), token, status, code, log_id, self.clock())
        )
        return web.Response(
            status=status,
            body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers=headers,
            content_type="application/json",
            charset="utf-8",
        )

    def _take_fault(self, endpoint: str) -> None:
        for fault in self._faults:
            if fault.endpoint == endpoint or (fault.endpoint is None and endpoint != "auth.tenant_access_token"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                raise _Answer(fault.status, fault.code, fault.msg, fault.headers)

    def _check_token(self, token: str | None) -> None:
        if token is None:
            raise _Answer(400, 99991661, "Need a token")
        if self.tokens.get(token, float("-inf")) <= self.clock():
            raise _Answer(
                400, 99991663, "Invalid access token for authorization. Please make a request with token attached."
            )

    def _check_rate(self, endpoint: str) -> None:
        if not self.enforce_rate_limits:
            return
        now = self.clock()
        windows = []
        for i, (calls, per_s) in enumerate(LIMITS.get(endpoint, ())):
            window = self._windows.setdefault((endpoint, i), collections.deque())
            while window and window[0] <= now - per_s:
                window.popleft()
            if len(window) >= calls:
                reset = max(1, int(window[0] + per_s - now + 0.999))
                raise _Answer(
                    429,
                    RATE_LIMIT_CODE,
                    "request trigger frequency limit",
                    {"x-ogw-ratelimit-limit": str(calls), "x-ogw-ratelimit-reset": str(reset)},
                )
            windows.append(window)
        for window in windows:
            window.append(now)

    def _level_param(self, value: str) -> str:
        level_id = value or self.tenant_level_id
        if level_id == "0":
            level_id = self.tenant_level_id
        if level_id not in self.levels:
            raise _Answer(404, 121004, "data not exist")
        return level_id

    @staticmethod
    def _user_id_type(request: web.Request) -> None:
        if request.query.get("user_id_type", "open_id") not in _USER_ID_TYPES:
            raise _Answer(400, 121003, "param error")

    @staticmethod
    def _page(request: web.Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, bool]:
        try:
            size = int(request.query.get("page_size", DEFAULT_PAGE_SIZE))
            start = int(request.query.get("page_token") or 0)
        except ValueError:
            raise _Answer(400, 121003, "param error") from None
        if not 1 <= size <= MAX_PAGE_SIZE or not 0 <= start <= len(items):
            raise _Answer(400, 121003, "param error")
        end = start + size
        return items[start:end], str(end), end < len(items)

    def _scope_type_of(self, scope_id: str) -> int:
        if scope_id in self.levels:
            return 1
        if scope_id in self.rooms:
            return 2
        raise KeyError(scope_id)


def main(argv: list[str] | None = None) -> None:
    """``python -m bridge_devtools.lark_api``: serve a populated fake until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--app-id", default="cli_fake_app")
    parser.add_argument("--app-secret", default="fake-app-secret")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeLarkApi(args.app_id, args.app_secret)
        fake.populate(rooms=args.rooms, levels=args.levels, top_levels=min(5, args.levels))
        await fake.start(args.host, args.port)
        print(f"fake Lark Open API on http://{args.host}:{args.port} (app {args.app_id})", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await fake.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
