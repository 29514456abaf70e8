"""Build webhook requests exactly as the Lark platform sends them, with knobs for each fault.

Used by the tests, the demo and the benchmark. Cross-checked against the official SDK
(``lark-oapi``) in ``tests/unit/test_platform_vs_sdk.py``. Rules: docs/protocol.md §1 (compact JSON,
UTF-8), §3 (encryption), §4 (signature over the raw bytes), §5 (unsigned handshake).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.verify import HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, encrypt, sign


def compact(payload: Any) -> bytes:
    """The platform's serialization: compact JSON, raw UTF-8 (docs/protocol.md §1)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class PlatformRequest:
    """A request as it would hit the webhook: ``body`` bytes and ``headers``."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Platform:
    """The sending side: ``encrypt_key`` (None = plaintext mode), ``clock`` in unix seconds."""

    encrypt_key: str | None = None
    clock: Any = time.time

    def request(
        self,
        payload: Any,
        *,
        signed: bool = True,
        timestamp: str | None = None,
        nonce: str | None = None,
        sign_key: str | None = None,
        iv: bytes | None = None,
        raw_plaintext: bytes | None = None,
    ) -> PlatformRequest:
        """Build the request of ``payload`` (a JSON-able value).

        With an encrypt key the body is ``{"encrypt": …}`` and, when ``signed``, the three
        ``X-Lark-*`` headers are set (``timestamp`` unix seconds, default now). ``sign_key``
        signs with another key (a fault); ``raw_plaintext`` encrypts these bytes instead of the
        payload (for decrypted-not-JSON faults). Without a key, the platform still sends the
        headers, signed with an empty key (docs/protocol.md §4).
        """
        plaintext = raw_plaintext if raw_plaintext is not None else compact(payload)
        if self.encrypt_key is not None:
            body = compact({"encrypt": encrypt(plaintext, self.encrypt_key, iv=iv)})
        else:
            body = plaintext
        if not signed:
            return PlatformRequest(body, {"Content-Type": "application/json; charset=utf-8"})
        ts = timestamp if timestamp is not None else str(int(self.clock()))
        nonce = nonce if nonce is not None else str(secrets.randbelow(10**10))
        key = sign_key if sign_key is not None else (self.encrypt_key or "")
        return PlatformRequest(
            body,
            {
                "Content-Type": "application/json; charset=utf-8",
                HEADER_TIMESTAMP: ts,
                HEADER_NONCE: nonce,
                HEADER_SIGNATURE: sign(ts, nonce, key, body),
            },
        )

    def handshake(self, token: str, challenge: str | None = None) -> PlatformRequest:
        """The URL-verification handshake: unsigned, encrypted when a key is set (§5)."""
        payload = {"challenge": challenge or secrets.token_hex(16), "token": token, "type": "url_verification"}
        return self.request(payload, signed=False)
