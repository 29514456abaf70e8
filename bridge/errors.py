"""The bridge's errors: the ingress error tree, mapped to HTTP in exactly one place
(``bridge.ingress.webhook.map_error``), and :class:`DeadLetterCause`, which never reaches HTTP.

::

    BridgeError                       base; ``status``, fixed public ``message``, ``reason`` label
    ├── BadRequest          400       body is not a JSON object (``not_json``), or a handshake's
    │                                 challenge is not a string (``challenge_not_string``)
    ├── RequestTimeout      408       the body did not arrive before the deadline (``body_timeout``)
    ├── BodyTooLarge        413       body over BRIDGE_HTTP_MAX_BODY_BYTES (``body_too_large``)
    ├── UnsupportedEncoding 415       a Content-Encoding the platform never sends (``content_encoding``)
    ├── ClientDisconnected  499       the client hung up before its body arrived (nobody to answer;
    │                                 the status is for logs and metrics, nginx's convention)
    ├── AuthenticationError 401       signature, decryption, token or freshness failed;
    │                                 ``reason`` is one of :data:`AUTH_REASONS`
    ├── Forbidden           403       the client's address is not among the platform's egress IPs
    │                                 (``ip_not_allowed``; BRIDGE_LARK_IP_ALLOWLIST=enforce)
    └── Unavailable         503       the event could not be delivered now; the platform retries
        │                             (``publish_timeout``, ``broker_unavailable``,
        │                             ``publish_failed``, ``shutting_down``, ``bodies_in_flight``,
        │                             ``dedup_replay``, ``dedup_barrier``, ``schema_ids_unknown``,
        │                             ``egress_ips_unknown``); carries ``retry_after_s``
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

#: The reasons an :class:`AuthenticationError` may carry (the checks: docs/protocol.md §3–§6).
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

    The caller sees only ``{"msg": message}``; ``reason`` goes to the log line and metric labels.
    The HTTP interface: docs/http.md.

    Args:
        reason: A short fixed identifier for logs and metrics; also ``str()``. Never put request
            data or secrets in it.

    Attributes:
        status: The HTTP status (int), fixed per class (class attribute; 500 here).
        message: The public answer text (str), fixed per class (class attribute).
        reason: As given.
    """

    status: ClassVar[int] = 500
    message: ClassVar[str] = "internal error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(BridgeError):
    """400: the body is not a JSON object.

    Args:
        reason: ``not_json`` (the body is not a JSON object), or ``challenge_not_string`` (an
            authentic handshake whose ``challenge`` is not a string).
    """

    status = 400
    message = "bad request"


class RequestTimeout(BridgeError):
    """408: the request body did not arrive in time (a slow or stalled client).

    Takes no arguments; ``reason`` is ``body_timeout``.
    """

    status = 408
    message = "request timeout"

    def __init__(self) -> None:
        super().__init__("body_timeout")


class UnsupportedEncoding(BridgeError):
    """415: a ``Content-Encoding`` other than identity.

    The platform sends plain bodies (docs/protocol.md §1); inflating what a stranger compressed
    is a cost nobody needs to pay. Takes no arguments; ``reason`` is ``content_encoding``.
    """

    status = 415
    message = "unsupported content encoding"

    def __init__(self) -> None:
        super().__init__("content_encoding")


class ClientDisconnected(BridgeError):
    """499: the client closed the connection before its body arrived.

    Nobody reads the answer; the status is recorded in the log line and metrics (nginx's "client
    closed request"). Takes no arguments; ``reason`` is ``client_disconnected``.
    """

    status = 499
    message = "client closed request"

    def __init__(self) -> None:
        super().__init__("client_disconnected")


class BodyTooLarge(BridgeError):
    """413: the body is larger than ``BRIDGE_HTTP_MAX_BODY_BYTES`` (bytes).

    Takes no arguments; ``reason`` is ``body_too_large``.
    """

    status = 413
    message = "request body too large"

    def __init__(self) -> None:
        super().__init__("body_too_large")


class AuthenticationError(BridgeError):
    """401: the request is not proven to come from the platform.

    Raised by :class:`bridge.verify.Verifier` (docs/protocol.md §3–§6, §10).

    Args:
        reason: One of :data:`AUTH_REASONS`.

    Raises:
        ValueError: ``reason`` is not in :data:`AUTH_REASONS` (a programming error, not a
            request error).
    """

    status = 401
    message = "unauthorized"

    def __init__(self, reason: str) -> None:
        if reason not in AUTH_REASONS:  # a programming error, not a request error
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(reason)


class Forbidden(BridgeError):
    """403: the request's client address is not in the allow-list of the platform's egress IPs
    (``BRIDGE_LARK_IP_ALLOWLIST=enforce``); answered before the body is read.

    Takes no arguments; ``reason`` is ``ip_not_allowed``.
    """

    status = 403
    message = "forbidden"

    def __init__(self) -> None:
        super().__init__("ip_not_allowed")


class Unavailable(BridgeError):
    """503 with ``Retry-After``: the event was not delivered now and must be retried.

    Args:
        reason: Why (``publish_timeout``, ``broker_unavailable``, ``publish_failed``,
            ``shutting_down``, ``bodies_in_flight``, ``dedup_replay``, ``dedup_barrier``,
            ``schema_ids_unknown``, ``egress_ips_unknown``).
        retry_after_s: Sent as the ``Retry-After`` header, in seconds (int). Default 15.
    """

    status = 503
    message = "temporarily unavailable, retry later"

    def __init__(self, reason: str, retry_after_s: int = 15) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class PublishFailed(Unavailable):
    """503 ``broker_unavailable``: a publish failed; ``Retry-After`` 15 s.

    Args:
        acked: The indices, in the published sequence, of the records the broker acknowledged
            all the same — those are in the topics, and a retry need not publish them again.
            Default ``()``.
    """

    def __init__(self, acked: tuple[int, ...] = ()) -> None:
        super().__init__("broker_unavailable")
        self.acked = acked


class DeadLetterCause(Exception):
    """Why an authenticated event becomes one dead letter instead of its records.

    Never an HTTP answer: the platform gets 200 once the dead letter is acknowledged
    (docs/protocol.md §9). Raised by decode (``unknown_event_type``, ``invalid_event``),
    normalize (``invalid_event``: a fan-out over its bound) and the delivery's size check
    (``record_too_large``). What the event's top level told (type, event id, tenant) is on the
    :class:`~bridge.inbound.InboundEvent`, not here.

    Args:
        reason: The dead letter's ``reason`` (:data:`bridge.envelope.DeadLetterReason`).
        detail: What failed, without the path.
        path: The JSON path of what failed (``$.event.room.room_id``; ``$`` for the whole).

    Attributes:
        reason: As given.
        path: As given.
        error: What failed, ``{detail} - at `{path}``` (also ``str()``).
    """

    def __init__(self, reason: DeadLetterReason, detail: str, path: str) -> None:
        self.error = f"{detail} - at `{path}`"
        super().__init__(self.error)
        self.reason = reason
        self.path = path

    @classmethod
    def invalid(cls, exc: Invalid) -> DeadLetterCause:
        """Build the ``invalid_event`` cause of a validation error.

        Args:
            exc: The validation error (its ``detail`` and ``path``).

        Returns:
            The cause, reason ``invalid_event``.
        """
        return cls("invalid_event", exc.detail, exc.path)
