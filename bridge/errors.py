"""The bridge's errors: the ingress error tree, mapped to HTTP in exactly one place
(``bridge.ingress.webhook.map_error``), and :class:`DeadLetterCause`, which never reaches HTTP.

::

    BridgeError                       base; ``status``, fixed public ``message``, ``reason`` label
    ├── BadRequest          400       body is not a JSON object (``not_json``)
    ├── RequestTimeout      408       the body did not arrive before the deadline (``body_timeout``)
    ├── BodyTooLarge        413       body over BRIDGE_HTTP_MAX_BODY_BYTES (``body_too_large``)
    ├── UnsupportedEncoding 415       a Content-Encoding the platform never sends (``content_encoding``)
    ├── ClientDisconnected  499       the client hung up before its body arrived (nobody to answer;
    │                                 the status is for logs and metrics, nginx's convention)
    ├── AuthenticationError 401       signature, decryption, token or freshness failed;
    │                                 ``reason`` is one of :data:`AUTH_REASONS`
    └── Unavailable         503       the event could not be delivered now; the platform retries
        │                             (``publish_timeout``, ``broker_unavailable``,
        │                             ``shutting_down``); carries ``retry_after_s``
        └── PublishFailed     503     the broker refused or lost some of an event's records
                                      (``broker_unavailable``); carries ``acked``, the indices of
                                      those it did acknowledge

    DeadLetterCause                   an authenticated event that becomes one dead letter
                                      (the platform gets 200)

The caller only ever sees ``{"msg": <message>}`` — a fixed text per class. The ``reason`` goes to
the request log line and to metric labels (never a secret: reasons are fixed identifiers, and no
exception here carries request data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from bridge.envelope import DeadLetterReason
    from bridge.validation import Invalid

AUTH_REASONS: Final = frozenset(
    {
        "signature_missing",  # encrypted event without X-Lark-* headers
        "signature_malformed",  # header present but garbled (timestamp not an integer, …)
        "signature_mismatch",  # hex SHA-256 matches none of the configured keys
        "timestamp_stale",  # older than BRIDGE_LARK_MAX_SIGNATURE_AGE_S
        "timestamp_future",  # more than 300 s ahead
        "plaintext_rejected",  # plaintext body while an encrypt key is configured
        "encrypt_key_not_configured",  # encrypted body, but no key configured
        "bad_base64",
        "bad_ciphertext_length",  # not a multiple of 16 bytes, or shorter than IV + 1 block
        "bad_padding",  # PKCS#7 padding does not check out
        "decrypted_not_json",  # decryption gave something other than a UTF-8 JSON object
        "token_missing",
        "token_mismatch",
    }
)


class BridgeError(Exception):
    """Base of every error the ingress turns into an HTTP answer.

    ``status`` (int) and ``message`` (str) are fixed per class; ``reason`` is a short identifier
    for logs and metrics. Never put request data or secrets in ``reason``.
    """

    status: ClassVar[int] = 500
    message: ClassVar[str] = "internal error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(BridgeError):
    """400: the body is not a JSON object."""

    status = 400
    message = "bad request"


class RequestTimeout(BridgeError):
    """408: the request body did not arrive in time (a slow or stalled client)."""

    status = 408
    message = "request timeout"

    def __init__(self) -> None:
        super().__init__("body_timeout")


class UnsupportedEncoding(BridgeError):
    """415: a ``Content-Encoding`` other than identity. The platform sends plain bodies
    (docs/protocol.md §1); inflating what a stranger compressed is a cost nobody needs to pay."""

    status = 415
    message = "unsupported content encoding"

    def __init__(self) -> None:
        super().__init__("content_encoding")


class ClientDisconnected(BridgeError):
    """499: the client closed the connection before its body arrived. Nobody reads the answer;
    the status is recorded in the log line and metrics (nginx's "client closed request")."""

    status = 499
    message = "client closed request"

    def __init__(self) -> None:
        super().__init__("client_disconnected")


class BodyTooLarge(BridgeError):
    """413: the body is larger than ``BRIDGE_HTTP_MAX_BODY_BYTES``."""

    status = 413
    message = "request body too large"

    def __init__(self) -> None:
        super().__init__("body_too_large")


class AuthenticationError(BridgeError):
    """401: the request is not proven to come from the platform. ``reason`` ∈ :data:`AUTH_REASONS`."""

    status = 401
    message = "unauthorized"

    def __init__(self, reason: str) -> None:
        if reason not in AUTH_REASONS:  # a programming error, not a request error
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(reason)


class Unavailable(BridgeError):
    """503 with ``Retry-After``: the event was not delivered now and must be retried.

    ``retry_after_s`` (int, seconds) is sent as the ``Retry-After`` header.
    """

    status = 503
    message = "temporarily unavailable, retry later"

    def __init__(self, reason: str, retry_after_s: int = 15) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class PublishFailed(Unavailable):
    """503 ``broker_unavailable``: a publish failed. ``acked`` (tuple of int): the indices, in the
    published sequence, of the records the broker acknowledged all the same — those are in the
    topics, and a retry need not publish them again."""

    def __init__(self, acked: tuple[int, ...] = ()) -> None:
        super().__init__("broker_unavailable")
        self.acked = acked


class DeadLetterCause(Exception):
    """Why an authenticated event becomes one dead letter instead of its records. Never an HTTP
    answer: the platform gets 200 once the dead letter is acknowledged (docs/protocol.md §9).

    Raised by decode (``unknown_event_type``, ``invalid_event``), normalize (``invalid_event``:
    a fan-out over its bound) and the delivery's size check (``record_too_large``).

    Attributes:
        reason: the dead letter's ``reason`` (:data:`bridge.envelope.DeadLetterReason`).
        path: the JSON path of what failed (``$.event.room.room_id``; ``$`` for the whole).
        error: what failed, ending in ``- at `{path}``` (also ``str()``).

    What the event's top level told (type, event id, tenant) is on the
    :class:`~bridge.inbound.InboundEvent`, not here.
    """

    def __init__(self, reason: DeadLetterReason, detail: str, path: str) -> None:
        self.error = f"{detail} - at `{path}`"
        super().__init__(self.error)
        self.reason = reason
        self.path = path

    @classmethod
    def invalid(cls, exc: Invalid) -> DeadLetterCause:
        """The ``invalid_event`` cause of a validation error."""
        return cls("invalid_event", exc.detail, exc.path)
