"""Our request builder and verifier agree with the official SDK (lark-oapi) on every decision.

A few hundred generated requests — valid ones and ones with the faults both implementations
check (wrong signing key, tampered body, wrong token, corrupted ciphertext) — go through the
SDK's own ``EventDispatcherHandler.do`` and through :class:`bridge.verify.Verifier`. Faults the
SDK does not check (freshness, plaintext with a key set) are covered in ``test_verify.py``.

For the room and room-level kinds the SDK has typed models (``lark_oapi.api.vc.v1``): ours have
their field names and types, and both read each documented sample field for field.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any, List, get_args, get_origin  # noqa: UP035 - the SDK's annotations use typing.List

import lark_oapi as lark
import msgspec
import pytest
from lark_oapi.api.vc import v1 as vc
from lark_oapi.core.utils.decryptor import AESCipher
from msgspec import inspect as mi

from bridge import envelope as ev
from bridge.decode import decode
from bridge.errors import AuthenticationError
from bridge.inbound import InboundEvent, read_inbound
from bridge.samples import SAMPLE_TYPES, sample_bytes
from bridge.verify import HEADER_SIGNATURE, Handshake, Verifier, decrypt, encrypt
from bridge_devtools.platform import Platform, compact
from tests.support.credentials import KEY, TOKEN
from tests.support.samples import sample_event

FAULTS = ("none", "wrong_key_signature", "tampered_body", "wrong_token", "corrupt_ciphertext", "handshake")


def _sdk_handler() -> lark.EventDispatcherHandler:
    builder = lark.EventDispatcherHandler.builder(KEY, TOKEN, lark.LogLevel.CRITICAL)
    builder.register_p2_customized_event("vc.room.created_v1", lambda e: None)
    builder.register_p2_customized_event("vc.reserve_config.updated_v1", lambda e: None)
    builder.register_p1_customized_event("third_party_meeting_room_event_created", lambda e: None)
    _register_typed(builder, lambda e: None)
    return builder.build()


#: The SDK's typed registration and event class of each room and room-level kind
#: (``lark_oapi.api.vc.v1``; docs/protocol.md §9.4-§9.8).
SDK_TYPED = {
    ev.ROOM_UPDATED: ("register_p2_vc_room_updated_v1", vc.P2VcRoomUpdatedV1),
    ev.ROOM_DELETED: ("register_p2_vc_room_deleted_v1", vc.P2VcRoomDeletedV1),
    ev.ROOM_LEVEL_CREATED: ("register_p2_vc_room_level_created_v1", vc.P2VcRoomLevelCreatedV1),
    ev.ROOM_LEVEL_UPDATED: ("register_p2_vc_room_level_updated_v1", vc.P2VcRoomLevelUpdatedV1),
    ev.ROOM_LEVEL_DELETED: ("register_p2_vc_room_level_deleted_v1", vc.P2VcRoomLevelDeletedV1),
}


def _register_typed(builder: Any, handle: Callable[[Any], None]) -> None:
    for method, _ in SDK_TYPED.values():
        getattr(builder, method)(handle)


def _sdk_accepts(handler: lark.EventDispatcherHandler, body: bytes, headers: dict[str, str]) -> bool:
    req = lark.RawRequest()
    req.uri = "/webhook/event"
    req.headers = headers
    req.body = body
    return handler.do(req).status_code == 200


def _payload(rng: random.Random, kind: str) -> dict:
    return sample_event(kind, event_id=f"{rng.getrandbits(128):032x}")


def test_sdk_and_bridge_make_the_same_decisions() -> None:
    rng = random.Random(20261120)
    handler = _sdk_handler()
    platform = Platform(encrypt_key=KEY)
    verifier = Verifier(TOKEN, (KEY,), max_age_s=3600)
    tally: dict[tuple[str, bool], int] = {}
    for i in range(300):
        fault = FAULTS[i % len(FAULTS)]
        payload = _payload(rng, rng.choice(SAMPLE_TYPES))
        if fault == "wrong_token":
            if "header" in payload:
                payload["header"]["token"] = "not-the-token"
            else:
                payload["token"] = "not-the-token"
        if fault == "handshake":
            req = platform.handshake(TOKEN, f"challenge-{i}")
        else:
            req = platform.request(payload, sign_key="other key" if fault == "wrong_key_signature" else None)
        body, headers = req.body, dict(req.headers)
        if fault == "tampered_body":
            enc = json.loads(body)["encrypt"]
            body = compact({"encrypt": encrypt(compact(payload) + b" ", KEY)}) if i % 2 else body + b" "
            assert json.loads(body)["encrypt"] != enc or body.endswith(b" ")
        if fault == "corrupt_ciphertext":
            raw = bytearray(base64.b64decode(json.loads(body)["encrypt"]))
            raw[-1] ^= 0x5A  # breaks the last block: padding (or the JSON) no longer checks out
            body = compact({"encrypt": base64.b64encode(bytes(raw)).decode()})
            from bridge.verify import sign

            ts, nonce = headers["X-Lark-Request-Timestamp"], headers["X-Lark-Request-Nonce"]
            headers[HEADER_SIGNATURE] = sign(ts, nonce, KEY, body)  # validly signed garbage
        sdk = _sdk_accepts(handler, body, headers)
        try:
            auth = verifier.verify(body, headers, now=float(headers.get("X-Lark-Request-Timestamp", 0) or 0) or 1e9)
            ours = True
            if fault == "handshake":
                assert auth == Handshake(f"challenge-{i}")
        except AuthenticationError:
            ours = False
        if fault == "corrupt_ciphertext":
            # Where we differ on purpose: validly signed garbage is authentic (only the encrypt
            # key's holder can sign), and no retry can mend it — the SDK fails the request (the
            # platform retries it for hours), we hand it on as an event with a defect, which
            # becomes one dead letter.
            assert not sdk and isinstance(auth, InboundEvent) and auth.defect is not None, (i, fault)
            ours = False
        assert sdk == ours, (i, fault)
        assert ours == (fault in ("none", "handshake")), (i, fault)
        tally[(fault, ours)] = tally.get((fault, ours), 0) + 1
    assert sum(tally.values()) == 300 and len(tally) == len(FAULTS)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 100, 1000])
def test_sdk_decrypts_what_we_encrypt_and_back(length: int) -> None:
    plaintext = bytes(random.Random(length).getrandbits(8) for _ in range(length))
    # Ours → SDK (the SDK decodes to str: use UTF-8-safe text for it).
    text = plaintext.hex()[:length]
    assert AESCipher(KEY).decrypt_str(encrypt(text.encode(), KEY)) == text
    # The SDK has no encrypt; check our decrypt against its decrypt on the same ciphertext.
    token = encrypt(plaintext, KEY)
    assert decrypt(token, KEY) == AESCipher(KEY).decrypt(base64.b64decode(token))


# ---- the room and room-level kinds: the SDK's typed models and ours ---------------------------------


def _sdk_shape(tp: Any) -> Any:
    """A model of the SDK (its ``_types``) as a comparable tree: ``{field: shape}``,
    ``["list", shape]`` or a scalar's name."""
    if get_origin(tp) in (list, List):  # noqa: UP006
        return ["list", _sdk_shape(get_args(tp)[0])]
    if isinstance(tp, type) and hasattr(tp, "_types"):
        return {name: _sdk_shape(t) for name, t in tp._types.items()}
    return tp.__name__


def _our_shape(info: Any) -> Any:
    """The same tree from one of our msgspec models (``_unmodelled`` left out)."""
    if isinstance(info, mi.StructType):
        return {f.encode_name: _our_shape(f.type) for f in info.fields if f.encode_name != "_unmodelled"}
    if isinstance(info, mi.ListType):
        return ["list", _our_shape(info.item_type)]
    if isinstance(info, mi.UnionType):
        (member,) = (t for t in info.types if not isinstance(t, mi.NoneType))
        return _our_shape(member)
    if isinstance(info, mi.Metadata):
        return _our_shape(info.type)
    scalars: dict[type, str] = {mi.StrType: "str", mi.IntType: "int", mi.BoolType: "bool", mi.FloatType: "float"}
    return scalars[type(info)]


@pytest.mark.parametrize("kind", SDK_TYPED)
def test_our_models_have_the_sdks_field_names_and_types(kind: str) -> None:
    _, event_class = SDK_TYPED[kind]
    sdk = _sdk_shape(event_class._types["event"])
    ours = _our_shape(mi.type_info(ev.DATA_TYPES[kind]))
    if kind == ev.ROOM_DELETED:
        # The one difference (docs/protocol.md §9.5): the doc page's deleted room has room_id alone,
        # the SDK reuses its whole room model; our model is the page's, a subset of the SDK's.
        assert ours == {"room": {"room_id": "str"}}
        assert sdk["room"]["room_id"] == "str"
        assert sdk["room"] == _our_shape(mi.type_info(ev.Room))
    else:
        # The SDK annotates room_status.disable_*_time as int, like our envelope (on the wire
        # they are numeric strings: docs/protocol.md §9.2).
        assert sdk == ours


@pytest.mark.parametrize("kind", SDK_TYPED)
def test_the_sdk_parses_each_sample_as_the_bridge_does(kind: str) -> None:
    method, event_class = SDK_TYPED[kind]
    seen: list[Any] = []
    builder = lark.EventDispatcherHandler.builder("", TOKEN, lark.LogLevel.CRITICAL)
    getattr(builder, method)(seen.append)
    body = compact(sample_event(kind))
    assert _sdk_accepts(builder.build(), body, {})
    [event] = seen
    assert isinstance(event, event_class)
    assert (event.schema, event.header.event_type, event.header.event_id) == (
        "2.0",
        kind,
        json.loads(sample_bytes(kind))["header"]["event_id"],
    )
    # The SDK keeps every documented field (it drops the ones its model lacks) ...
    sdk_event = json.loads(lark.JSON.marshal(event.event))
    assert sdk_event == json.loads(sample_bytes(kind))["event"]
    # ... and so does the bridge, nothing left unmodelled; only the numeric strings became integers.
    data = msgspec.to_builtins(decode(read_inbound(body)).data)
    assert "_unmodelled" not in data
    if kind == ev.ROOM_UPDATED:
        status = sdk_event["room"]["room_status"]
        for field in ("disable_start_time", "disable_end_time"):
            status[field] = int(status[field])
    assert data == sdk_event
