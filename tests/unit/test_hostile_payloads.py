"""Hostile bytes, before and after authentication: a deliberate 4xx before, exactly one dead letter
after — never RecursionError, UnicodeDecodeError or another crash (the reproductions of what a
flood of mutated bodies found)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.decode import MAX_DEPTH, decode
from bridge.errors import AuthenticationError, BadRequest, DeadLetterCause
from bridge.inbound import InboundEvent, read_inbound
from bridge.normalize import Topics, dead_letter, normalize
from bridge.samples import SAMPLE_TYPES, sample
from bridge.verify import Verifier
from bridge_devtools.platform import Platform, compact
from tests.support.samples import with_token
from tests.support.schemas import dead_letter_validator, envelope_validators

TOPICS = Topics.single("t", dead_letter="dlq")
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


def test_unreadable_plaintext_inside_a_valid_signature_is_one_dead_letter_per_payload() -> None:
    platform = Platform(encrypt_key=KEY)
    for plaintext in (b'{"schema":"\xff"}', b'{"a":' + nested(5000) + b"}"):
        req = platform.request(None, raw_plaintext=plaintext)
        event = Verifier(TOKEN, (KEY,), max_age_s=3600).verify(req.body, req.headers, now=platform.clock())
        assert isinstance(event, InboundEvent) and event.payload == plaintext
        with pytest.raises(DeadLetterCause) as info:
            decode(event)
        assert info.value.reason == "invalid_event"
        record = dead_letter(event, info.value, received_ms=0, topics=TOPICS)
        value = json.loads(record.value)
        assert value["id"] == event.dedup_key() == "sha256:" + hashlib.sha256(plaintext).hexdigest()
        assert dict(record.headers)["lark_event_id"] == event.dedup_key().encode()
        assert "payload not carried" in value["data"]["error"] and value["data"]["payload"] == {}


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
    assert isinstance(inbound, InboundEvent) and inbound.event_id
    with pytest.raises(DeadLetterCause) as info:
        normalize(decode(inbound), TOPICS)
    assert info.value.reason == "invalid_event" and info.value.path == "$"
    rec = dead_letter(inbound, info.value, received_ms=1, topics=TOPICS)
    env = json.loads(rec.value)
    assert rec.topic == "dlq" and rec.key == inbound.event_id.encode()
    assert env["data"]["payload"] == {} and "sha256" in env["data"]["error"]
    assert TOKEN not in rec.value.decode()


def test_invalid_utf8_in_a_modelled_string_is_an_invalid_event_at_event() -> None:
    raw = compact(sample("vc.room.created_v1")).replace(b'"name":"', b'"name":"\xff', 1)
    inbound = read_inbound(raw)
    with pytest.raises(DeadLetterCause) as info:
        decode(inbound)
    assert (info.value.reason, info.value.path) == ("invalid_event", "$.event")
    env = json.loads(dead_letter(inbound, info.value, received_ms=1, topics=TOPICS).value)
    assert env["data"]["payload"] == {}


NEW_KIND_STRINGS = [
    ("vc.room.updated_v1", b'"name":"'),
    ("vc.room.deleted_v1", b'"room_id":"'),
    ("vc.room_level.created_v1", b'"name":"'),
    ("vc.room_level.updated_v1", b'"custom_group_id":"'),
    ("vc.room_level.deleted_v1", b'"room_level_id":"'),
]


@pytest.mark.parametrize(("kind", "field"), NEW_KIND_STRINGS, ids=[k for k, _ in NEW_KIND_STRINGS])
def test_invalid_utf8_in_a_modelled_string_of_the_room_and_level_kinds(kind: str, field: bytes) -> None:
    raw = compact(sample(kind)).replace(field, field + b"\xff", 1)
    inbound = read_inbound(raw)
    assert isinstance(inbound, InboundEvent) and inbound.lark_type == kind
    with pytest.raises(DeadLetterCause) as info:
        decode(inbound)
    assert (info.value.reason, info.value.path) == ("invalid_event", "$.event")
    rec = dead_letter(inbound, info.value, received_ms=1, topics=TOPICS)
    env = json.loads(rec.value)
    assert (rec.topic, rec.lark_type, env["data"]["payload"]) == ("dlq", kind, {})
    dead_letter_validator().validate(env)


@pytest.mark.parametrize("depth", [900, MAX_DEPTH + 1])
@pytest.mark.parametrize("kind", [k for k, _ in NEW_KIND_STRINGS])
def test_a_deep_unknown_field_inside_the_event_of_the_room_and_level_kinds_is_one_dead_letter(
    kind: str, depth: int
) -> None:
    raw = compact(sample(kind)).replace(b'"event":{', b'"event":{"x":' + nested(depth) + b",", 1)
    inbound = read_inbound(raw)
    assert isinstance(inbound, InboundEvent) and inbound.event_id
    with pytest.raises(DeadLetterCause) as info:
        normalize(decode(inbound), TOPICS)
    assert info.value.reason == "invalid_event"
    rec = dead_letter(inbound, info.value, received_ms=1, topics=TOPICS)
    env = json.loads(rec.value)
    assert env["data"]["payload"] == {} and "sha256" in env["data"]["error"]
    assert TOKEN not in rec.value.decode()
    dead_letter_validator().validate(env)


def test_nesting_up_to_the_limit_is_carried() -> None:
    depth = MAX_DEPTH - 2  # the value sits one level below the payload root
    [rec] = normalize(decode(read_inbound(room_with(x=nested(depth)))), TOPICS)
    assert json.loads(rec.value)["data"]["_unmodelled"]["/x"] == json.loads(nested(depth))


# ---- byte-level mutation: the outcome is always 4xx, records, or one dead letter -------------

VALIDATORS = envelope_validators()
DLQ = dead_letter_validator()
SEED_PLAINTEXTS = [compact(with_token(sample(t), TOKEN)) for t in SAMPLE_TYPES]


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_PLAINTEXTS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        else:
            j = draw(st.integers(i, min(len(data), i + 64)))
            data[i:i] = data[i:j] * draw(st.integers(1, 3))
    return bytes(data)


def outcome_of(verifier: Verifier, body: bytes, headers: dict[str, str], now: float) -> str:
    """'4xx', 'records' or 'dead_letter' — and the records are schema-valid; anything else raises.

    The token must not reach a record wherever it sat under a ``token`` key (a mutation that
    renamed the key, e.g. to ``oken``, made it an ordinary value, carried like any other)."""
    try:
        verified = verifier.verify(body, headers, now=now)
    except (BadRequest, AuthenticationError):
        return "4xx"
    if not isinstance(verified, InboundEvent):
        return "handshake"
    token = TOKEN.encode()
    if verified.payload.count(token) != verified.payload.count(b'"token":"' + token):
        token = b"\x00never-in-a-record"
    try:
        records = normalize(decode(verified), TOPICS)
    except DeadLetterCause as failure:
        rec = dead_letter(verified, failure, received_ms=1_700_000_000_000, topics=TOPICS)
        DLQ.validate(json.loads(rec.value))
        assert token not in rec.value
        return "dead_letter"
    for rec in records:
        env = json.loads(rec.value)
        VALIDATORS[env["type"]].validate(env)
        assert token not in rec.value
    return "records"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bytes())
def test_mutated_plaintext_bytes_of_a_plain_request(body: bytes) -> None:
    verifier = Verifier(TOKEN, (), max_age_s=3600)
    assert outcome_of(verifier, body, {}, 0) in ("4xx", "records", "dead_letter", "handshake")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bytes())
def test_mutated_plaintext_inside_an_encrypted_signed_request(plaintext: bytes) -> None:
    platform = Platform(encrypt_key=KEY, clock=lambda: 1_700_000_000)
    req = platform.request(None, raw_plaintext=plaintext)
    verifier = Verifier(TOKEN, (KEY,), max_age_s=3600)
    assert outcome_of(verifier, req.body, req.headers, 1_700_000_000) in ("4xx", "records", "dead_letter", "handshake")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_bytes_of_the_encrypted_request_itself(data: st.DataObject) -> None:
    platform = Platform(encrypt_key=KEY, clock=lambda: 1_700_000_000)
    req = platform.request(with_token(sample(data.draw(st.sampled_from(SAMPLE_TYPES))), TOKEN))
    body = bytearray(req.body)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    verifier = Verifier(TOKEN, (KEY,), max_age_s=3600)
    # The signature covers the raw bytes: any change is refused before decryption.
    expected = "records" if bytes(body) == req.body else "4xx"
    assert outcome_of(verifier, bytes(body), req.headers, 1_700_000_000) == expected
