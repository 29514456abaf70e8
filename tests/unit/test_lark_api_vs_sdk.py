"""The fake Open API and our client's models agree with the official SDK (lark-oapi).

Three checks, before the fake is trusted to test the client:

1. every JSON answer of the fake parses into the SDK's own response class of that API
   (``lark_oapi.api.vc.v1`` ``ListRoomResponse``, ``GetRoomResponse``, ``ListRoomLevelResponse``,
   ``GetRoomLevelResponse``, ``ReserveScopeReserveConfigResponse``; ``lark_oapi.api.event.v1``
   ``ListOutboundIpResponse``; the token manager's
   ``AccessTokenResponse``), with no key the SDK does not know and every value of the type the
   SDK declares — except the differences listed in :data:`DOCS_VS_SDK`, where the docs (which
   the fake follows) and the SDK's generated types disagree;
2. our msgspec models have the SDK's fields, no more and no fewer (except :data:`SDK_ONLY`);
3. the SDK's own client gets a token from the fake and lists rooms, levels and the event egress
   IPs through it.
"""

from __future__ import annotations

import asyncio
import json
import typing
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import lark_oapi as lark
import msgspec
import pytest
from lark_oapi.api.event.v1 import ListOutboundIpRequest, ListOutboundIpResponse
from lark_oapi.api.event.v1.model import list_outbound_ip_response_body as sdk_outbound_ip_page
from lark_oapi.api.vc.v1 import (
    GetRoomLevelRequest,
    GetRoomLevelResponse,
    GetRoomResponse,
    ListRoomLevelResponse,
    ListRoomRequest,
    ListRoomResponse,
    ReserveScopeReserveConfigResponse,
)
from lark_oapi.api.vc.v1.model import approval_config as sdk_approval_config
from lark_oapi.api.vc.v1.model import device as sdk_device
from lark_oapi.api.vc.v1.model import list_room_level_response_body as sdk_level_page
from lark_oapi.api.vc.v1.model import list_room_response_body as sdk_room_page
from lark_oapi.api.vc.v1.model import reserve_scope_config as sdk_reserve_scope_config
from lark_oapi.api.vc.v1.model import reserve_scope_reserve_config_response_body as sdk_reserve
from lark_oapi.api.vc.v1.model import room as sdk_room
from lark_oapi.api.vc.v1.model import room_level as sdk_room_level
from lark_oapi.api.vc.v1.model import room_status as sdk_room_status
from lark_oapi.api.vc.v1.model import subscribe_department as sdk_subscribe_department
from lark_oapi.api.vc.v1.model import subscribe_user as sdk_subscribe_user
from lark_oapi.api.vc.v1.model import time_config as sdk_time_config
from lark_oapi.core.model import BaseResponse
from lark_oapi.core.model.error import Error
from lark_oapi.core.token.access_token_response import AccessTokenResponse

from bridge import lark_api as ours
from bridge_devtools.lark_api import DOC_RESERVE_CONFIG, FakeLarkApi

#: Where the docs (and so the fake) and the SDK's declared types differ: ``path → (docs, SDK)``.
#: The SDK does not convert on parsing, so its objects simply hold the strings; our client
#: decodes the numeric strings leniently into ints and keeps the ids as strings.
DOCS_VS_SDK: dict[str, tuple[str, str]] = {
    "data.room.room_status.disable_start_time": ("string (unix s)", "int"),
    "data.room.room_status.disable_end_time": ("string (unix s)", "int"),
    "data.rooms[].room_status.disable_start_time": ("string (unix s)", "int"),
    "data.rooms[].room_status.disable_end_time": ("string (unix s)", "int"),
    "data.time_config.opening_hour": ("string (s)", "int"),
    "data.time_config.start_time": ("string (s)", "int"),
    "data.time_config.end_time": ("string (s)", "int"),
    "data.approve_config.approvers[].user_id": ("string (ou_…)", "int"),
    "data.reserve_scope_config.allow_users[].user_id": ("string (ou_…)", "int"),
    "data.reserve_scope_config.allow_depts[].department_id": ("string (od-…)", "int"),
}
#: Fields the SDK declares that the docs' answers do not list (our models leave them out).
SDK_ONLY: dict[type, set[str]] = {
    sdk_subscribe_user.SubscribeUser: {"user_name"},
    sdk_subscribe_department.SubscribeDepartment: {"department_name"},
}
_BASE_KEYS = {"code", "msg", "error"}
#: The token answer's fields, which ``AccessTokenResponse`` sets in ``__init__`` (typed
#: ``Optional[str]`` / ``Optional[int]``) rather than declaring in ``_types``.
_TOKEN_TYPES: dict[str, type] = {"tenant_access_token": str, "app_access_token": str, "expire": int}


def mismatches(sdk_type: Any, value: Any, path: str) -> list[str]:
    """Where ``value`` (parsed JSON) does not fit the SDK's declared ``sdk_type``: a key the SDK
    class does not know (it would drop it silently), or a value of another type."""
    origin = typing.get_origin(sdk_type)
    if origin in (list, typing.List):  # noqa: UP006 - the SDK declares typing.List
        if not isinstance(value, list):
            return [f"{path}: list expected"]
        (item_type,) = typing.get_args(sdk_type)
        return [m for item in value for m in mismatches(item_type, item, path + "[]")]
    if sdk_type in (str, int, bool, float):
        ok = isinstance(value, sdk_type) and not (sdk_type is int and isinstance(value, bool))
        if sdk_type is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [path]
    types: dict[str, Any] = getattr(sdk_type, "_types", {})
    if sdk_type is AccessTokenResponse:
        assert all(hasattr(AccessTokenResponse({}), key) for key in _TOKEN_TYPES)
        types = {**types, **_TOKEN_TYPES}
    if not isinstance(value, dict):
        return [f"{path}: object expected"]
    found = []
    base = issubclass(sdk_type, BaseResponse)
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if base and key == "error":
            found += mismatches(Error, item, where)  # BaseResponse leaves it a dict; Error is its class
            continue
        if base and key in _BASE_KEYS:
            continue
        if key not in types:
            found.append(f"{where}: unknown to the SDK")
            continue
        found += mismatches(types[key], item, where)
    return found


@pytest.fixture
async def fake() -> AsyncIterator[FakeLarkApi]:
    async with FakeLarkApi(f"cli_{uuid.uuid4().hex[:16]}", "sdk-cross-check-secret") as api:
        level = api.add_level("HQ", custom_group_id="10000")
        sub = api.add_level("Floor 1", level["room_level_id"])
        for i in range(3):
            api.add_room(
                f"测试会议室 {i}",
                sub["room_level_id"],
                description="测试会议室描述",
                custom_room_id=str(1234 + i),
                device=[{"name": "电话"}],
                room_status={
                    "status": True,
                    "schedule_status": True,
                    "disable_start_time": "1652356050",
                    "disable_end_time": "1652442450",
                    "disable_reason": "测试占用",
                    "contact_ids": ["ou_3ec3f6a28a0d08c45d895276e8e5e19b"],
                    "disable_notice": True,
                    "resume_notice": True,
                },
            )
        api.set_reserve_config(level["room_level_id"], DOC_RESERVE_CONFIG)
        yield api


async def _answers(fake: FakeLarkApi) -> dict[str, tuple[type, dict[str, Any], str]]:
    """``name → (SDK response class, parsed JSON, X-Tt-Logid)`` of one answer per API."""
    top = next(lv for lv in fake.levels.values() if lv["name"] == "HQ")
    sub = next(lv for lv in fake.levels.values() if lv["name"] == "Floor 1")
    room = next(iter(fake.rooms.values()))
    out: dict[str, tuple[type, dict[str, Any], str]] = {}
    async with aiohttp.ClientSession(fake.url) as s:
        async with s.post(
            "/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": fake.app_id, "app_secret": fake.app_secret},
        ) as resp:
            token_answer = await resp.json()
            out["token"] = (AccessTokenResponse, token_answer, resp.headers["X-Tt-Logid"])
        auth = {"Authorization": f"Bearer {token_answer['tenant_access_token']}"}
        gets = {
            "rooms_page": (
                ListRoomResponse,
                "/open-apis/vc/v1/rooms",
                {"room_level_id": sub["room_level_id"], "page_size": "2"},
            ),
            "rooms_last": (
                ListRoomResponse,
                "/open-apis/vc/v1/rooms",
                {"room_level_id": sub["room_level_id"], "page_token": "2"},
            ),
            "room": (GetRoomResponse, f"/open-apis/vc/v1/rooms/{room['room_id']}", {}),
            "levels": (ListRoomLevelResponse, "/open-apis/vc/v1/room_levels", {}),
            "level": (GetRoomLevelResponse, f"/open-apis/vc/v1/room_levels/{top['room_level_id']}", {}),
            "reserve": (
                ReserveScopeReserveConfigResponse,
                "/open-apis/vc/v1/reserve_configs/reserve_scope",
                {"scope_id": top["room_level_id"], "scope_type": "1"},
            ),
            "error": (GetRoomResponse, "/open-apis/vc/v1/rooms/omm_missing", {}),
            "outbound_ips_page": (ListOutboundIpResponse, "/open-apis/event/v1/outbound_ip", {"page_size": "2"}),
            "outbound_ips_last": (ListOutboundIpResponse, "/open-apis/event/v1/outbound_ip", {"page_token": "2"}),
        }
        for name, (cls, path, query) in gets.items():
            async with s.get(path, params=query, headers=auth) as resp:
                out[name] = (cls, await resp.json(), resp.headers["X-Tt-Logid"])
    return out


async def test_every_answer_of_the_fake_parses_into_the_sdks_response_class(fake) -> None:
    answers = await _answers(fake)
    found: set[str] = set()
    for name, (cls, body, log_id) in answers.items():
        parsed = cls(body)  # the SDK's own parsing (lark_oapi.core.construct.init)
        assert parsed.code == body["code"] and parsed.msg == body["msg"], name
        for problem in mismatches(cls, body, ""):
            assert problem in DOCS_VS_SDK, f"{name}: {problem}"
            found.add(problem)
        if name == "error":
            assert not parsed.success() and parsed.code == 121004
            assert Error(body["error"]).log_id == log_id  # the body's error.log_id is the header's
        else:
            assert parsed.success(), name
    assert found == set(DOCS_VS_SDK)  # each listed difference is real, and there are no others

    rooms = answers["rooms_page"][0](answers["rooms_page"][1])
    assert rooms.data.has_more is True and rooms.data.page_token == "2" and len(rooms.data.rooms) == 2
    assert rooms.data.rooms[0].room_status.contact_ids == ["ou_3ec3f6a28a0d08c45d895276e8e5e19b"]
    last = answers["rooms_last"][0](answers["rooms_last"][1])
    assert last.data.has_more is False and last.data.page_token is None and len(last.data.rooms) == 1
    ips = answers["outbound_ips_page"][0](answers["outbound_ips_page"][1])
    assert ips.data.has_more is True and ips.data.page_token == "2" and ips.data.ip_list == fake.outbound_ips[:2]
    ips_last = answers["outbound_ips_last"][0](answers["outbound_ips_last"][1])
    assert ips_last.data.has_more is False and ips_last.data.page_token is None
    assert ips_last.data.ip_list == fake.outbound_ips[2:]
    token = AccessTokenResponse(answers["token"][1])
    assert token.tenant_access_token.startswith("t-") and token.expire == 7200


async def test_our_models_decode_the_same_answers_as_the_sdk(fake) -> None:
    answers = await _answers(fake)
    page = msgspec.json.decode(json.dumps(answers["rooms_page"][1]["data"]), type=ours.RoomPage, strict=False)
    sdk_page = ListRoomResponse(answers["rooms_page"][1]).data
    assert [r.room_id for r in page.rooms or ()] == [r.room_id for r in sdk_page.rooms]
    assert [r.device[0].name for r in page.rooms or () if r.device] == [r.device[0].name for r in sdk_page.rooms]
    assert page.rooms and page.rooms[0].room_status and page.rooms[0].room_status.disable_start_time == 1652356050
    levels = msgspec.json.decode(json.dumps(answers["levels"][1]["data"]), type=ours.RoomLevelPage, strict=False)
    sdk_levels = ListRoomLevelResponse(answers["levels"][1]).data.items
    assert [(lv.room_level_id, lv.parent_id, lv.path, lv.has_child) for lv in levels.items or ()] == [
        (lv.room_level_id, lv.parent_id, lv.path, lv.has_child) for lv in sdk_levels
    ]
    reserve = msgspec.json.decode(json.dumps(answers["reserve"][1]["data"]), type=ours.ReserveConfig, strict=False)
    sdk_reserve_body = ReserveScopeReserveConfigResponse(answers["reserve"][1]).data
    assert reserve.approve_config and reserve.approve_config.approvers
    assert reserve.approve_config.approvers[0].user_id == sdk_reserve_body.approve_config.approvers[0].user_id
    assert reserve.time_config and reserve.time_config.opening_hour == int(sdk_reserve_body.time_config.opening_hour)
    ips = msgspec.json.decode(
        json.dumps(answers["outbound_ips_page"][1]["data"]), type=ours.OutboundIpPage, strict=False
    )
    sdk_ips = ListOutboundIpResponse(answers["outbound_ips_page"][1]).data
    assert (ips.ip_list, ips.page_token, ips.has_more) == (sdk_ips.ip_list, sdk_ips.page_token, sdk_ips.has_more)


@pytest.mark.parametrize(
    ("model", "sdk_class"),
    [
        (ours.Room, sdk_room.Room),
        (ours.RoomStatus, sdk_room_status.RoomStatus),
        (ours.Device, sdk_device.Device),
        (ours.RoomLevel, sdk_room_level.RoomLevel),
        (ours.RoomPage, sdk_room_page.ListRoomResponseBody),
        (ours.RoomLevelPage, sdk_level_page.ListRoomLevelResponseBody),
        (ours.ReserveConfig, sdk_reserve.ReserveScopeReserveConfigResponseBody),
        (ours.ApproveConfig, sdk_approval_config.ApprovalConfig),
        (ours.TimeConfig, sdk_time_config.TimeConfig),
        (ours.ReserveScopeConfig, sdk_reserve_scope_config.ReserveScopeConfig),
        (ours.SubscribeUser, sdk_subscribe_user.SubscribeUser),
        (ours.SubscribeDepartment, sdk_subscribe_department.SubscribeDepartment),
        (ours.OutboundIpPage, sdk_outbound_ip_page.ListOutboundIpResponseBody),
    ],
)
def test_our_models_have_the_sdks_fields(model: type, sdk_class: type) -> None:
    ours_fields = {f.name for f in msgspec.structs.fields(model)}
    assert ours_fields == set(sdk_class._types) - SDK_ONLY.get(sdk_class, set())  # type: ignore[attr-defined]


async def test_the_sdks_client_works_against_the_fake(fake) -> None:
    sub = next(lv for lv in fake.levels.values() if lv["name"] == "Floor 1")

    def sdk_calls() -> tuple[Any, Any, Any]:
        client = (
            lark.Client.builder()
            .app_id(fake.app_id)
            .app_secret(fake.app_secret)
            .domain(fake.url)
            .log_level(lark.LogLevel.CRITICAL)
            .build()
        )
        rooms = client.vc.v1.room.list(
            ListRoomRequest.builder().room_level_id(sub["room_level_id"]).page_size(100).build()
        )
        level = client.vc.v1.room_level.get(GetRoomLevelRequest.builder().room_level_id("0").build())
        ips = client.event.v1.outbound_ip.list(ListOutboundIpRequest.builder().page_size(50).build())
        return rooms, level, ips

    rooms, level, ips = await asyncio.to_thread(sdk_calls)
    assert rooms.success(), (rooms.code, rooms.msg)
    assert sorted(r.room_id for r in rooms.data.rooms) == sorted(fake.rooms)
    assert rooms.get_log_id() == fake.calls[-3].log_id
    assert level.success() and level.data.room_level.room_level_id == fake.tenant_level_id
    assert ips.success() and ips.data.ip_list == fake.outbound_ips and ips.data.has_more is False
    assert ips.get_log_id() == fake.calls[-1].log_id
    assert [c.endpoint for c in fake.calls] == [
        "auth.tenant_access_token",
        "vc.room.list",
        "vc.room_level.get",
        "event.outbound_ip.list",
    ]
