"""The schema-registry module on its own: subjects, the wire prefix, one schema per topic, the
settings that configure it, and how each registry answer maps to a reason (a fake registry of
ours, served by aiohttp on loopback; the real one is in tests/integration/test_registry.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge import envelope as ev
from bridge.normalize import Topics
from bridge.registry import WIRE_PREFIX_BYTES, RegistryClient, RegistryError, schema_texts, subject_of, wire_prefix
from bridge.settings import SettingsError, load_settings
from tests.support.credentials import TOKEN

TOPICS = Topics.from_names(
    room_created="r",
    room_updated="ru",
    room_deleted="rd",
    room_level_created="lc",
    room_level_updated="lu",
    room_level_deleted="ld",
    reserve_config_updated="c",
    third_party="t",
    dead_letter="d",
)


def test_subjects_and_the_wire_prefix_follow_confluents_conventions() -> None:
    assert subject_of("lark.vc.room.created_v1") == "lark.vc.room.created_v1-value"
    assert wire_prefix(1) == b"\x00\x00\x00\x00\x01" and len(wire_prefix(1)) == WIRE_PREFIX_BYTES
    assert wire_prefix(2**32 - 1) == b"\x00\xff\xff\xff\xff"
    with pytest.raises(OverflowError):
        wire_prefix(2**32)


def test_one_schema_per_topic_and_the_third_party_topics_covers_its_three_types() -> None:
    texts = {topic: json.loads(text) for topic, text in schema_texts(TOPICS).items()}
    assert set(texts) == {"r", "ru", "rd", "lc", "lu", "ld", "c", "t", "d"}
    for lark_type, topic in TOPICS.by_type.items():
        if lark_type not in ev.THIRD_PARTY_TYPES:
            assert texts[topic]["properties"]["type"] == {
                "const": lark_type,
                "description": "The Lark event type, verbatim.",
            }
    assert texts["t"]["properties"]["type"]["enum"] == list(ev.THIRD_PARTY_TYPES)
    assert texts["d"]["properties"]["type"]["enum"] == [ev.DEAD_LETTER_TYPE]
    shared = Topics.from_names(
        room_created="x",
        room_updated="x",
        room_deleted="rd",
        room_level_created="lc",
        room_level_updated="lu",
        room_level_deleted="ld",
        reserve_config_updated="c",
        third_party="t",
        dead_letter="d",
    )
    with pytest.raises(ValueError, match="no single schema"):
        schema_texts(shared)
    with pytest.raises(ValueError, match="dead-letter topic"):
        schema_texts(
            Topics.from_names(
                room_created="r",
                room_updated="ru",
                room_deleted="rd",
                room_level_created="lc",
                room_level_updated="lu",
                room_level_deleted="ld",
                reserve_config_updated="c",
                third_party="t",
                dead_letter="r",
            )
        )


def settings(**env: str) -> Any:
    return load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN, **env})


def test_registry_settings_are_checked_without_echoing_values() -> None:
    ok = settings(BRIDGE_SCHEMA_REGISTRY_URL="https://sr.example.com/apis/ccompat/v7/")
    assert ok.schema_registry_url == "https://sr.example.com/apis/ccompat/v7" and ok.schema_registry_auto_register
    assert settings(BRIDGE_SCHEMA_REGISTRY_URL="").schema_registry_url is None  # Helm's "unset"
    for bad in ("ftp://sr.example.com", "sr.example.com:8081"):
        with pytest.raises(SettingsError, match="BRIDGE_SCHEMA_REGISTRY_URL"):
            settings(BRIDGE_SCHEMA_REGISTRY_URL=bad)
    with pytest.raises(SettingsError) as info:
        settings(BRIDGE_SCHEMA_REGISTRY_URL="https://user:hunter2@sr.example.com")
    assert "hunter2" not in str(info.value) and "BRIDGE_SCHEMA_REGISTRY_USERNAME" in str(info.value)
    with pytest.raises(SettingsError, match="go together"):
        settings(BRIDGE_SCHEMA_REGISTRY_URL="https://sr.example.com", BRIDGE_SCHEMA_REGISTRY_USERNAME="u")
    with pytest.raises(SettingsError, match="one schema per topic"):
        settings(
            BRIDGE_SCHEMA_REGISTRY_URL="https://sr.example.com",
            BRIDGE_TOPIC_ROOM_CREATED="all",
            BRIDGE_TOPIC_RESERVE_CONFIG_UPDATED="all",
        )
    with pytest.raises(SettingsError, match="one schema per topic"):
        settings(
            BRIDGE_SCHEMA_REGISTRY_URL="https://sr.example.com",
            BRIDGE_TOPIC_ROOM_LEVEL_UPDATED="levels",
            BRIDGE_TOPIC_ROOM_LEVEL_DELETED="levels",
        )
    with_password = settings(
        BRIDGE_SCHEMA_REGISTRY_URL="https://sr.example.com",
        BRIDGE_SCHEMA_REGISTRY_USERNAME="u",
        BRIDGE_SCHEMA_REGISTRY_PASSWORD="pw-9f2e",
    )
    assert "pw-9f2e" in with_password.secret_values() and "pw-9f2e" not in repr(with_password)


class FakeRegistry:
    """Answers every call with ``status`` and ``body``; remembers the requests it got."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path_qs, dict(request.headers), await request.json()))
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return web.Response(text=text, status=self.status, content_type="application/json")


async def answer(status: int, body: Any, call: str = "register", **client: Any) -> Any:
    fake = FakeRegistry(status, body)
    async with TestServer(fake.app) as server:
        async with RegistryClient(str(server.make_url("/apis/ccompat/v7")), **client) as registry:
            if call == "register":
                result: Any = await registry.register("a.b-value", '{"type":"object"}')
            elif call == "lookup":
                result = await registry.lookup("a.b-value", '{"type":"object"}')
            else:
                result = await registry.is_compatible("a.b-value", '{"type":"object"}')
    return result, fake.requests


async def test_register_sends_a_json_schema_and_returns_the_id() -> None:
    schema_id, requests = await answer(200, {"id": 7}, username="u", password="p")
    assert schema_id == 7
    [(method, path, headers, body)] = requests
    assert (method, path) == ("POST", "/apis/ccompat/v7/subjects/a.b-value/versions")
    assert body == {"schemaType": "JSON", "schema": '{"type":"object"}'}
    assert headers["Authorization"] == "Basic dTpw" and headers["Content-Type"].startswith(
        "application/vnd.schemaregistry.v1+json"
    )


@pytest.mark.parametrize(
    ("status", "body", "call", "reason"),
    [
        (401, {"error_code": 401, "message": "Unauthorized"}, "register", "registry_unauthorized"),
        (403, {"error_code": 403, "message": "Forbidden"}, "register", "registry_unauthorized"),
        (
            409,
            {"error_code": 409, "message": "Schema being registered is incompatible"},
            "register",
            "schema_incompatible",
        ),
        (422, {"error_code": 42201, "message": "Invalid schema"}, "register", "schema_invalid"),
        (404, {"error_code": 40403, "message": "Schema not found"}, "lookup", "schema_not_registered"),
        (500, "<html>oops</html>", "register", "registry_unreachable"),
        (200, {"no": "id"}, "register", "registry_error"),
        (200, {"id": -1}, "register", "registry_error"),
        (200, "not json", "register", "registry_error"),
        (418, {"message": "teapot"}, "register", "registry_error"),
    ],
)
async def test_each_answer_maps_to_a_reason(status: int, body: Any, call: str, reason: str) -> None:
    with pytest.raises(RegistryError) as info:
        await answer(status, body, call)
    assert info.value.reason == reason
    if isinstance(body, dict) and "message" in body and status != 200:
        assert body["message"] in info.value.message


async def test_compatibility_answers_and_a_new_subject_accepts_anything() -> None:
    assert (await answer(200, {"is_compatible": True}, "check"))[0] == (True, [])
    verdict, requests = await answer(200, {"is_compatible": False, "messages": ["removed: time"]}, "check")
    assert verdict == (False, ["removed: time"])
    assert requests[0][1] == "/apis/ccompat/v7/compatibility/subjects/a.b-value/versions/latest?verbose=true"
    assert (await answer(404, {"error_code": 40401, "message": "Subject not found"}, "check"))[0] == (True, [])


async def test_an_unreachable_registry_is_a_reason_not_a_crash() -> None:
    from bridge_devtools.broker import free_port

    async with RegistryClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as registry:
        with pytest.raises(RegistryError) as info:
            await registry.register("s-value", "{}")
    assert info.value.reason == "registry_unreachable"
