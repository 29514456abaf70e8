"""Verify stage: the platform's vector, signatures over raw bytes, padding, every failure mode."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bridge.errors import AuthenticationError, BadRequest
from bridge.inbound import InboundEvent
from bridge.verify import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Handshake,
    Verifier,
    _aes_key,
    decrypt,
    encrypt,
    sign,
)
from bridge_devtools.platform import Platform, compact
from tests.support.credentials import KEY, OLD_KEY, TOKEN
from tests.support.samples import ROOM_CREATED, THIRD_PARTY_CREATED, sample_event

NOW = 1_763_000_000.0
MAX_AGE = 28_800


def v2_event(token: str | None = TOKEN) -> dict:
    return sample_event(ROOM_CREATED, token=token)


def v1_event(token: str | None = TOKEN) -> dict:
    return sample_event(THIRD_PARTY_CREATED, token=token)


def encrypted_verifier(*keys: str) -> Verifier:
    return Verifier(TOKEN, keys or (KEY,), max_age_s=MAX_AGE)


plain_verifier = Verifier(TOKEN, (), max_age_s=MAX_AGE)
sender = Platform(encrypt_key=KEY, clock=lambda: NOW)


def reason_of(verifier: Verifier, body: bytes, headers: dict, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(body, headers, now=now)
    return info.value.reason


# ---- crypto ----------------------------------------------------------------------------------


def test_official_aes_vector() -> None:
    # DOC-RECV: key "test key", this ciphertext decrypts to "hello world".
    assert decrypt("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=", "test key") == b"hello world"


@pytest.mark.parametrize("length", range(65))
def test_padding_round_trip_every_length(length: int) -> None:
    plaintext = bytes((i * 7 + length) % 256 for i in range(length))
    token = encrypt(plaintext, KEY)
    raw = base64.b64decode(token)
    # PKCS#7 always adds 1..16 bytes: a full block when already aligned.
    assert len(raw) - 16 == (length // 16 + 1) * 16
    assert decrypt(token, KEY) == plaintext


def _encrypt_unpadded(padded: bytes, key: str) -> str:
    iv = b"\x01" * 16
    enc = Cipher(algorithms.AES(_aes_key(key)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode()


@pytest.mark.parametrize(
    "padded",
    [
        b"hello world" + b"\x00" * 5,  # pad byte 0
        b"hello world" + b"\x05\x05\x05\x05\x04",  # inconsistent pad bytes
        b"0123456789abcdef" + b"\x11" * 16,  # pad value 17 > block size
        b"hello world!!!!" + b"\x02",  # claims 2, only 1 byte matches
    ],
)
def test_bad_padding_is_rejected(padded: bytes) -> None:
    with pytest.raises(AuthenticationError) as info:
        decrypt(_encrypt_unpadded(padded, KEY), KEY)
    assert info.value.reason == "bad_padding"


def test_ciphertext_not_multiple_of_16() -> None:
    raw = base64.b64decode(encrypt(b"{}", KEY))
    with pytest.raises(AuthenticationError) as info:
        decrypt(base64.b64encode(raw + b"abc").decode(), KEY)
    assert info.value.reason == "bad_ciphertext_length"


def test_ciphertext_iv_only() -> None:
    with pytest.raises(AuthenticationError) as info:
        decrypt(base64.b64encode(b"\x00" * 16).decode(), KEY)
    assert info.value.reason == "bad_ciphertext_length"


def test_bad_base64() -> None:
    with pytest.raises(AuthenticationError) as info:
        decrypt("not*base64!!", KEY)
    assert info.value.reason == "bad_base64"


def test_signature_is_plain_sha256_over_ts_nonce_key_body() -> None:
    import hashlib

    body = b'{"encrypt":"abc"}'
    assert sign("1", "2", "k", body) == hashlib.sha256(b"12k" + body).hexdigest()


# ---- whole requests ---------------------------------------------------------------------------


def test_encrypted_signed_event_is_accepted() -> None:
    req = sender.request(v2_event())
    auth = encrypted_verifier().verify(req.body, req.headers, now=NOW)
    assert isinstance(auth, InboundEvent)
    assert json.loads(auth.payload) == v2_event()


def test_header_names_are_case_insensitive() -> None:
    req = sender.request(v2_event())
    lower = {k.lower(): v for k, v in req.headers.items()}
    upper = {k.upper(): v for k, v in req.headers.items()}
    for headers in (lower, upper):
        assert isinstance(encrypted_verifier().verify(req.body, headers, now=NOW), InboundEvent)


def test_signature_over_raw_bytes_reserialized_body_fails() -> None:
    req = sender.request(v2_event())
    reserialized = json.dumps(json.loads(req.body), indent=1).encode()
    assert json.loads(reserialized) == json.loads(req.body)
    assert reason_of(encrypted_verifier(), reserialized, req.headers) == "signature_mismatch"


def test_previous_key_is_accepted_during_rotation() -> None:
    old_sender = Platform(encrypt_key=OLD_KEY, clock=lambda: NOW)
    req = old_sender.request(v1_event())
    verifier = encrypted_verifier(KEY, OLD_KEY)
    event = verifier.verify(req.body, req.headers, now=NOW)
    assert isinstance(event, InboundEvent) and json.loads(event.payload)["uuid"]
    # ... and only while it is configured.
    assert reason_of(encrypted_verifier(KEY), req.body, req.headers) == "signature_mismatch"


def test_previous_key_handshake_is_decrypted() -> None:
    req = Platform(encrypt_key=OLD_KEY).handshake(TOKEN, "c-1")
    assert encrypted_verifier(KEY, OLD_KEY).verify(req.body, req.headers, now=NOW) == Handshake("c-1")


@pytest.mark.parametrize("missing", [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
def test_missing_one_signature_header(missing: str) -> None:
    req = sender.request(v2_event())
    headers = {k: v for k, v in req.headers.items() if k != missing}
    assert reason_of(encrypted_verifier(), req.body, headers) == "signature_missing"


def test_event_without_any_signature_header() -> None:
    req = sender.request(v2_event(), signed=False)
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "signature_missing"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_TIMESTAMP, "yesterday"),
        (HEADER_TIMESTAMP, "-5"),
        (HEADER_TIMESTAMP, "1e9"),
        (HEADER_SIGNATURE, "zz"),
        (HEADER_SIGNATURE, "g" * 64),
    ],
)
def test_garbled_signature_headers(header: str, value: str) -> None:
    req = sender.request(v2_event())
    headers = {**req.headers, header: value}
    assert reason_of(encrypted_verifier(), req.body, headers) in {"signature_malformed", "signature_mismatch"}
    if header == HEADER_TIMESTAMP:
        assert reason_of(encrypted_verifier(), req.body, headers) == "signature_malformed"


def test_wrong_signature() -> None:
    req = sender.request(v2_event(), sign_key="another key")
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "signature_mismatch"


def test_stale_timestamp() -> None:
    req = sender.request(v2_event(), timestamp=str(int(NOW) - MAX_AGE - 1))
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "timestamp_stale"
    ok = sender.request(v2_event(), timestamp=str(int(NOW) - MAX_AGE + 1))
    assert isinstance(encrypted_verifier().verify(ok.body, ok.headers, now=NOW), InboundEvent)


def test_future_timestamp() -> None:
    req = sender.request(v2_event(), timestamp=str(int(NOW) + 301))
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "timestamp_future"
    ok = sender.request(v2_event(), timestamp=str(int(NOW) + 299))
    assert isinstance(encrypted_verifier().verify(ok.body, ok.headers, now=NOW), InboundEvent)


def test_plaintext_body_rejected_when_key_configured() -> None:
    req = Platform(encrypt_key=None, clock=lambda: NOW).request(v2_event())
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "plaintext_rejected"


def test_encrypted_body_without_configured_key() -> None:
    req = sender.request(v2_event())
    assert reason_of(plain_verifier, req.body, req.headers) == "encrypt_key_not_configured"


def test_a_signed_encrypt_value_that_does_not_decrypt_is_an_event_with_a_defect() -> None:
    body = compact({"encrypt": "%%%not base64%%%"})
    ts, nonce = str(int(NOW)), "1"
    headers = {HEADER_TIMESTAMP: ts, HEADER_NONCE: nonce, HEADER_SIGNATURE: sign(ts, nonce, KEY, body)}
    event = encrypted_verifier().verify(body, headers, now=NOW)
    assert isinstance(event, InboundEvent) and event.event_id is None and event.defect is not None
    assert "does not decrypt (bad_base64)" in event.defect.detail and event.payload == b"%%%not base64%%%"
    assert event.dedup_key() == "sha256:" + hashlib.sha256(b"%%%not base64%%%").hexdigest()
    unsigned = compact({"encrypt": "%%%not base64%%%"})  # unsigned: not proven authentic
    assert reason_of(encrypted_verifier(), unsigned, {}) == "bad_base64"


def test_decrypted_text_not_json() -> None:
    for plaintext in (b"this is not json", b"[1,2,3]"):
        req = sender.request(None, raw_plaintext=plaintext)
        event = encrypted_verifier().verify(req.body, req.headers, now=NOW)
        assert isinstance(event, InboundEvent) and event.payload == plaintext and event.defect is not None
        assert "not a readable JSON object" in event.defect.detail
        unsigned = compact({"encrypt": json.loads(req.body)["encrypt"]})
        assert reason_of(encrypted_verifier(), unsigned, {}) == "decrypted_not_json"


def test_bad_padding_request() -> None:
    encrypted = _encrypt_unpadded(b'{"a":1}' + b"\x00" * 9, KEY)
    body = compact({"encrypt": encrypted})
    ts, nonce = str(int(NOW)), "1"
    headers = {HEADER_TIMESTAMP: ts, HEADER_NONCE: nonce, HEADER_SIGNATURE: sign(ts, nonce, KEY, body)}
    event = encrypted_verifier().verify(body, headers, now=NOW)
    assert isinstance(event, InboundEvent) and event.defect is not None and "(bad_padding)" in event.defect.detail
    assert reason_of(encrypted_verifier(), body, {}) == "bad_padding"  # unsigned


# ---- token in each of its three positions ------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        v2_event("wrong-token"),  # header.token (2.0)
        v1_event("wrong-token"),  # top-level token (1.0)
        {"challenge": "c", "token": "wrong-token", "type": "url_verification"},  # handshake
    ],
    ids=["schema2-header-token", "schema1-token", "handshake-token"],
)
@pytest.mark.parametrize("encrypted", [False, True])
def test_wrong_token(payload: dict, encrypted: bool) -> None:
    if encrypted:
        signed = payload.get("type") != "url_verification"
        req = sender.request(payload, signed=signed)
        verifier = encrypted_verifier()
    else:
        req = Platform(clock=lambda: NOW).request(payload)
        verifier = plain_verifier
    assert reason_of(verifier, req.body, req.headers) == "token_mismatch"


def test_token_required_without_encrypt_key() -> None:
    for payload in (v2_event(None), v1_event(None), {"challenge": "c", "type": "url_verification"}):
        req = Platform(clock=lambda: NOW).request(payload)
        assert reason_of(plain_verifier, req.body, req.headers) == "token_missing"


def test_token_may_be_absent_on_signed_encrypted_event() -> None:
    req = sender.request(v2_event(None))
    assert isinstance(encrypted_verifier().verify(req.body, req.headers, now=NOW), InboundEvent)


def test_handshake_needs_token_even_when_encrypted() -> None:
    req = sender.request({"challenge": "c", "type": "url_verification"}, signed=False)
    assert reason_of(encrypted_verifier(), req.body, req.headers) == "token_missing"


def test_handshake_plain_and_encrypted() -> None:
    plain = Platform().handshake(TOKEN, "abc")
    assert plain_verifier.verify(plain.body, plain.headers, now=NOW) == Handshake("abc")
    enc = sender.handshake(TOKEN, "xyz")
    assert set(enc.headers) == {"Content-Type"}  # no X-Lark-* on the handshake
    auth = encrypted_verifier().verify(enc.body, enc.headers, now=NOW)
    assert auth == Handshake("xyz")


def test_not_json_is_bad_request() -> None:
    for body in (b"", b"not json", b"[1]", b'"x"', b"{"):
        with pytest.raises(BadRequest):
            plain_verifier.verify(body, {}, now=NOW)


def test_verifier_repr_hides_secrets() -> None:
    text = repr(encrypted_verifier(KEY, OLD_KEY))
    assert KEY not in text and OLD_KEY not in text and TOKEN not in text


def test_reasons_never_contain_secrets() -> None:
    # An error's str() is its reason: a fixed identifier, never request data.
    req = sender.request(v2_event("wrong"))
    with pytest.raises(AuthenticationError) as info:
        encrypted_verifier().verify(req.body, req.headers, now=NOW)
    assert str(info.value) == "token_mismatch"
    assert TOKEN not in repr(info.value) and "wrong" not in repr(info.value)
