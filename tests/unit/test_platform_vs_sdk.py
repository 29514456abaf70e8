"""Our request builder and verifier agree with the official SDK (lark-oapi) on every decision.

A few hundred generated requests — valid ones and ones with the faults both implementations
check (wrong signing key, tampered body, wrong token, corrupted ciphertext) — go through the
SDK's own ``EventDispatcherHandler.do`` and through :class:`bridge.verify.Verifier`. Faults the
SDK does not check (freshness, plaintext with a key set) are covered in ``test_verify.py``.
"""

from __future__ import annotations

import base64
import json
import random

import lark_oapi as lark
import pytest
from lark_oapi.core.utils.decryptor import AESCipher

from bridge.errors import AuthenticationError
from bridge.inbound import InboundEvent
from bridge.samples import SAMPLE_TYPES
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
    return builder.build()


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
        payload = _payload(rng, SAMPLE_TYPES[rng.randrange(3)])
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
