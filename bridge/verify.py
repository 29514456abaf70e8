"""Verify stage: signature, freshness, decryption and verification token of one Lark push.

Pure functions over bytes and header mappings; no I/O, no event loop, an injectable clock.
The rules and their sources (``docs/protocol.md``):

* Encryption (§3, DOC-SEND "加密原理", SDK-GO ``core/utils.go``): ``key = SHA-256(encrypt_key)``,
  ``encrypt = base64(iv ‖ AES-256-CBC(key, iv, PKCS#7(plaintext)))``. We unpad strictly.
* Signature (§4, DOC-RECV): ``X-Lark-Signature = hex(SHA-256(timestamp + nonce + encrypt_key +
  raw_body))`` — plain SHA-256, not HMAC, over the raw bytes as received.
* Handshake (§5): ``{"challenge", "token", "type": "url_verification"}``, plain or encrypted,
  carries no signature headers; it is the only request accepted without them.
* Token (§6): schema 2.0 ``header.token``; schema 1.0 and the handshake top-level ``token``.
* Freshness: not a platform rule (no SDK checks it, §4) but ours: ``BRIDGE_LARK_MAX_SIGNATURE_AGE_S``
  back (the platform retries for ≈7.1 h, §7) and :data:`MAX_FUTURE_SKEW_S` ahead.

Every failure raises :class:`bridge.errors.AuthenticationError` (401) with a fixed reason, or
:class:`bridge.errors.BadRequest` (400) when the body is not a JSON object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bridge.errors import AuthenticationError, BadRequest
from bridge.inbound import InboundEvent, Outer, UnreadableJSON, decode_outer, read_inbound, unreadable

HEADER_TIMESTAMP: Final = "X-Lark-Request-Timestamp"
HEADER_NONCE: Final = "X-Lark-Request-Nonce"
HEADER_SIGNATURE: Final = "X-Lark-Signature"
#: How far ahead of ``now`` a signature timestamp may be, in seconds (our rule, not the
#: platform's: docs/protocol.md §4).
MAX_FUTURE_SKEW_S: Final = 300
_BLOCK = 16


class Handshake(msgspec.Struct, frozen=True):
    """The URL-verification handshake, authenticated.

    The ingress answers it with ``{"challenge": challenge}`` (docs/protocol.md §5).

    Attributes:
        challenge: The handshake's ``challenge`` string, echoed in the answer.
    """

    challenge: str


def _aes_key(encrypt_key: str) -> bytes:
    return hashlib.sha256(encrypt_key.encode("utf-8")).digest()


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """Compute the ``X-Lark-Signature`` of a body.

    The signature is the lower-case hex SHA-256 of ``timestamp + nonce + key + body`` — plain
    SHA-256, not HMAC, over the raw bytes. Source: docs/protocol.md §4 (DOC-RECV).

    Args:
        timestamp: The ``X-Lark-Request-Timestamp`` value: unix seconds as a decimal string.
        nonce: The ``X-Lark-Request-Nonce`` value.
        encrypt_key: The Encrypt Key that signs.
        body: The request body, as received (bytes).

    Returns:
        The signature: 64 lower-case hex characters.
    """
    h = hashlib.sha256((timestamp + nonce + encrypt_key).encode("utf-8"))
    h.update(body)
    return h.hexdigest()


def encrypt(plaintext: bytes, encrypt_key: str, *, iv: bytes | None = None) -> str:
    """Encrypt a payload into the platform's ``encrypt`` value.

    The value is ``base64(iv ‖ AES-256-CBC(SHA-256(key), iv, PKCS#7(pt)))``. Used by tests, the
    demo and the benchmark to build requests exactly as the platform does. Source:
    docs/protocol.md §3.

    Args:
        plaintext: The payload to encrypt (bytes).
        encrypt_key: The Encrypt Key; its SHA-256 is the AES-256 key.
        iv: The initialisation vector, 16 bytes. Default: 16 random bytes.

    Returns:
        The base64 text (ASCII) of the IV followed by the ciphertext.
    """
    iv = os.urandom(_BLOCK) if iv is None else iv
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(_aes_key(encrypt_key)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode("ascii")


def decrypt(encrypted: str, encrypt_key: str) -> bytes:
    """Decrypt an ``encrypt`` value with strict PKCS#7 unpadding.

    Source: docs/protocol.md §3.

    Args:
        encrypted: The base64 ``encrypt`` value: a 16-byte IV, then the ciphertext.
        encrypt_key: The Encrypt Key; its SHA-256 is the AES-256 key.

    Returns:
        The plaintext bytes.

    Raises:
        AuthenticationError: ``bad_base64`` when ``encrypted`` is not valid base64;
            ``bad_ciphertext_length`` when it is not IV + n·16 bytes, n ≥ 1; ``bad_padding``
            when the PKCS#7 padding does not check out.
    """
    return _decrypt(encrypted, _aes_key(encrypt_key))


def _decrypt(encrypted: str, aes_key: bytes) -> bytes:
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationError("bad_base64") from None
    if len(raw) < 2 * _BLOCK or len(raw) % _BLOCK:
        raise AuthenticationError("bad_ciphertext_length")
    dec = Cipher(algorithms.AES(aes_key), modes.CBC(raw[:_BLOCK])).decryptor()
    padded = dec.update(raw[_BLOCK:]) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise AuthenticationError("bad_padding") from None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup for any mapping (aiohttp's CIMultiDict is already)."""
    value = headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def _constant_time_equal(expected: str, got: Any) -> bool:
    if not isinstance(got, str):
        return False
    return hmac.compare_digest(expected.encode("utf-8"), got.encode("utf-8"))


class Verifier:
    """Authenticates Lark pushes: built once from the secrets, then :meth:`verify` per request.

    The secrets never appear in ``repr`` or in errors.

    Args:
        verification_token: The console's Verification Token (docs/protocol.md §6); must not be
            empty.
        encrypt_keys: The accepted Encrypt Keys, current first; empty strings are dropped.
            Default ``()``: encryption off (bodies in plaintext, events unsigned).
        max_age_s: The oldest signature timestamp accepted, in seconds before ``now``
            (``BRIDGE_LARK_MAX_SIGNATURE_AGE_S``). Timestamps up to :data:`MAX_FUTURE_SKEW_S`
            seconds ahead are accepted too.

    Raises:
        ValueError: ``verification_token`` is empty.
    """

    __slots__ = ("_aes", "_keys", "_max_age_s", "_token")

    def __init__(self, verification_token: str, encrypt_keys: tuple[str, ...] = (), *, max_age_s: int) -> None:
        if not verification_token:
            raise ValueError("verification token must not be empty")
        self._token = verification_token
        self._keys = tuple(k for k in encrypt_keys if k)
        self._aes = {k: _aes_key(k) for k in self._keys}  # SHA-256 of each key, once
        self._max_age_s = max_age_s

    def __repr__(self) -> str:
        return f"Verifier(encrypted={bool(self._keys)}, keys={len(self._keys)}, max_age_s={self._max_age_s})"

    @property
    def encrypted(self) -> bool:
        """Whether an encrypt key is configured (then bodies must be encrypted, events signed)."""
        return bool(self._keys)

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Handshake | InboundEvent:
        """Authenticate one request and read what it carries.

        Order (docs/protocol.md §10): parse → [signature → freshness → decrypt] → token; the
        bracketed steps run when an encrypt key is configured. A *signed* ``encrypt`` value that
        does not decrypt to a JSON object is still returned as an event: the signature proves the
        platform sent it and no retry can mend it, so it is an event with a defect
        (:func:`bridge.inbound.unreadable`), to be dead-lettered.

        Args:
            body: The request body, as received (bytes).
            headers: The request headers, names in any case (:data:`HEADER_TIMESTAMP`,
                :data:`HEADER_NONCE`, :data:`HEADER_SIGNATURE`).
            now: The current time, unix seconds.

        Returns:
            The :class:`Handshake`, or the :class:`~bridge.inbound.InboundEvent` read from the
            authentic plaintext payload.

        Raises:
            BadRequest: ``not_json`` when the body is not a JSON object;
                ``challenge_not_string`` when an authentic handshake's ``challenge`` is not a
                string.
            AuthenticationError: Signature (§4), freshness, decryption (§3) or token (§6)
                failed; ``reason`` is one of :data:`bridge.errors.AUTH_REASONS`.
        """
        try:
            outer = decode_outer(body)
        except UnreadableJSON:
            raise BadRequest("not_json") from None

        if self._keys:
            if not isinstance(outer.encrypt, str) or not outer.encrypt:
                raise AuthenticationError("plaintext_rejected")
            signed_key = self._check_signature(body, headers, now)
            try:
                payload, outer = self._decrypt_outer(outer.encrypt, signed_key)
            except Unreadable as exc:
                if signed_key is None:  # not proven authentic: the caller is told, nothing kept
                    raise AuthenticationError(exc.reason) from None
                return unreadable(exc.payload, exc.detail)
        else:
            if outer.encrypt is not None:
                raise AuthenticationError("encrypt_key_not_configured")
            signed_key = None
            payload = body

        is_handshake = outer.is_handshake
        token = outer.verification_token
        # Token (§6): required without encryption and on the unsigned handshake; with an encrypt
        # key a signed event may omit it, but one that is present must match.
        if token is None:
            if not self._keys or is_handshake:
                raise AuthenticationError("token_missing")
        elif not _constant_time_equal(self._token, token):
            raise AuthenticationError("token_mismatch")

        if is_handshake:
            if not isinstance(outer.challenge, str):
                raise BadRequest("challenge_not_string")
            return Handshake(outer.challenge)
        if self._keys and signed_key is None:
            # Only the handshake may come without signature headers.
            raise AuthenticationError("signature_missing")
        return read_inbound(payload, outer)

    def _check_signature(self, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
        """Returns the key that signed ``body``, or None when no signature header is present."""
        ts = _header(headers, HEADER_TIMESTAMP)
        nonce = _header(headers, HEADER_NONCE)
        sig = _header(headers, HEADER_SIGNATURE)
        if ts is None and nonce is None and sig is None:
            return None  # acceptable for the handshake only; decided after decryption
        if ts is None or nonce is None or sig is None:
            raise AuthenticationError("signature_missing")
        ts = ts.strip()
        if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
            raise AuthenticationError("signature_malformed")
        sig = sig.strip().lower()
        if len(sig) != 64 or not sig.isascii():
            raise AuthenticationError("signature_malformed")
        matched = None
        for key in self._keys:
            if hmac.compare_digest(sign(ts, nonce, key, body), sig):
                matched = key
        if matched is None:
            raise AuthenticationError("signature_mismatch")
        age = now - int(ts)
        if age > self._max_age_s:
            raise AuthenticationError("timestamp_stale")
        if age < -MAX_FUTURE_SKEW_S:
            raise AuthenticationError("timestamp_future")
        return matched

    def _decrypt_outer(self, encrypted: str, signed_key: str | None) -> tuple[bytes, Outer]:
        """Plaintext and its top level. A signed request is decrypted with the key that signed
        it; an unsigned one (the handshake) with each key in turn until one yields a JSON object.
        Raises :class:`Unreadable` (the first key's failure)."""
        keys = (signed_key,) if signed_key is not None else self._keys
        error: Unreadable | None = None
        for key in keys:
            try:
                plaintext = _decrypt(encrypted, self._aes[key])
            except AuthenticationError as exc:
                detail = f"the signed encrypt value does not decrypt ({exc.reason})"
                error = error or Unreadable(exc.reason, encrypted.encode("utf-8", "replace"), detail)
                continue
            try:
                return plaintext, decode_outer(plaintext)
            except UnreadableJSON as exc:
                detail = f"the signed payload decrypts to bytes that are not a readable JSON object ({exc})"
                error = error or Unreadable("decrypted_not_json", plaintext, detail)
        assert error is not None
        raise error


class Unreadable(Exception):
    """An ``encrypt`` value that does not give a JSON object.

    Raised inside :class:`Verifier`: when the value was signed it becomes an event with a defect
    (a dead letter), otherwise an :class:`AuthenticationError` with the same ``reason``.

    Args:
        reason: An authentication failure reason: ``bad_base64``, ``bad_ciphertext_length``,
            ``bad_padding`` or ``decrypted_not_json``.
        payload: The bytes that could not be read.
        detail: What failed, for the dead letter.
    """

    def __init__(self, reason: str, payload: bytes, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payload = payload
        self.detail = detail
