"""Hostile bytes, before and after authentication: a deliberate 4xx before, exactly one dead letter
after — never RecursionError, UnicodeDecodeError or another crash (the reproductions of what a
flood of mutated bodies found)."""

from __future__ import annotations

import json

import pytest

from bridge.decode import MAX_DEPTH, DecodeFailure, decode
from bridge.errors import AuthenticationError, BadRequest
from bridge.inbound import InboundEvent, read_inbound
from bridge.normalize import Topics, dead_letter, normalize
from bridge.samples import sample
from bridge.verify import Verifier
from bridge_devtools.platform import Platform, compact

TOPICS = Topics.from_names(room_created="t", reserve_config_updated="t", third_party="t", dead_letter="dlq")
TOKEN = sample("vc.room.created_v1")["header"]["token"]
KEY = "ek-hostile"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [
        b'{"encrypt":"x","a":' + nested(5000) + b"}",
        b'{"a":' + nested(5000) + b"}",
        b'{"encrypt":"\xff"}',
        b'{"type":"url_verification","challenge":"\xc3\x28"}',
        b"\xff\xfe{}",
    ],
    ids=["deep-with-encrypt", "deep", "bad-utf8-encrypt", "bad-utf8-challenge", "bom-garbage"],
)
@pytest.mark.parametrize("encrypted", [False, True])
def test_unreadable_bodies_are_400_before_anything_else(body: bytes, encrypted: bool) -> None:
    verifier = Verifier(TOKEN, (KEY,) if encrypted else (), max_age_s=3600)
    with pytest.raises(BadRequest):
        verifier.verify(body, {}, now=0)


def test_unreadable_plaintext_inside_a_valid_signature_is_401_decrypted_not_json() -> None:
    platform = Platform(encrypt_key=KEY)
    for plaintext in (b'{"schema":"\xff"}', b'{"a":' + nested(5000) + b"}"):
        req = platform.request(None, raw_plaintext=plaintext)
        with pytest.raises(AuthenticationError) as info:
            Verifier(TOKEN, (KEY,), max_age_s=3600).verify(req.body, req.headers, now=platform.clock())
        assert info.value.reason == "decrypted_not_json"


def room_with(**extra: object) -> bytes:
    body = sample("vc.room.created_v1")
    raw = compact(body)
    # Splice raw bytes in: the values below are not representable through json.dumps.
    inner = b",".join(b'"%s":%s' % (k.encode(), v) for k, v in extra.items())
    return raw[:-1] + b"," + inner + b"}"


@pytest.mark.parametrize(
    "payload",
    [
        room_with(x=b'"\xff\xfe"'),  # invalid UTF-8 in a field the top level skips
        room_with(x=nested(900)),  # deeper than the interpreter's recursion limit allows to walk
        room_with(x=nested(MAX_DEPTH + 1)),  # deeper than the bridge carries
    ],
    ids=["bad-utf8-unknown-field", "deep-900", "deep-past-max"],
)
def test_authenticated_unreadable_payload_is_one_dead_letter_without_the_payload(payload: bytes) -> None:
    inbound = read_inbound(payload)
    assert isinstance(inbound, InboundEvent) and inbound.delivery_id
    with pytest.raises(DecodeFailure) as info:
        normalize(decode(inbound), TOPICS)
    assert info.value.reason == "invalid_event" and info.value.path == "$"
    rec = dead_letter(inbound, info.value, received_ms=1, topics=TOPICS)
    env = json.loads(rec.value)
    assert rec.topic == "dlq" and rec.key == inbound.delivery_id.encode()
    assert env["data"]["payload"] == {} and "sha256" in env["data"]["error"]
    assert TOKEN not in rec.value.decode()


def test_invalid_utf8_in_a_modelled_string_is_an_invalid_event_at_event() -> None:
    raw = compact(sample("vc.room.created_v1")).replace(b'"name":"', b'"name":"\xff', 1)
    inbound = read_inbound(raw)
    with pytest.raises(DecodeFailure) as info:
        decode(inbound)
    assert (info.value.reason, info.value.path) == ("invalid_event", "$.event")
    env = json.loads(dead_letter(inbound, info.value, received_ms=1, topics=TOPICS).value)
    assert env["data"]["payload"] == {}


def test_nesting_up_to_the_limit_is_carried() -> None:
    depth = MAX_DEPTH - 2  # the value sits one level below the payload root
    [rec] = normalize(decode(read_inbound(room_with(x=nested(depth)))), TOPICS)
    assert json.loads(rec.value)["data"]["_unmodelled"]["/x"] == json.loads(nested(depth))
