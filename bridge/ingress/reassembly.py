"""Split-message reassembly for the long connection (docs/long_connection.md §5, bounds §9.1).

A pure state machine: no asyncio, no sockets, no metrics. The session feeds it the data frames
of ``type=event`` (their ``message_id`` / ``sum`` / ``seq`` headers and payload) and gets back
what to ack:

* :class:`Complete` — a whole message (``sum`` 1, or the part that completed a split one);
* :class:`Refused` — ``bad_split`` (``sum`` outside ``1..MAX_PARTS``, ``seq`` outside
  ``0..sum-1``, a header that is no integer, or a split message without ``message_id``) or
  ``too_large`` (the message's bytes so far over the payload limit);
* ``None`` — a part that does not complete its message: no ack (§5).

Bounds, whatever the platform (or an impostor of it) sends: at most :data:`MAX_PARTIAL_MESSAGES`
incomplete messages (a new one forgets the oldest), of at most :data:`MAX_PARTS` parts, each
forgotten ``ttl_s`` (default :data:`PARTIAL_TTL_S`) after its latest part by :meth:`expire`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from bridge.ingress import frames as fr

#: Most parts one message may have (``sum``).
MAX_PARTS: Final = 64
#: Most incomplete messages kept at once; a new one beyond it forgets the oldest.
MAX_PARTIAL_MESSAGES: Final = 64
#: Seconds an incomplete message is kept after its latest part (SDK-PY and SDK-GO: 5 s, §5).
PARTIAL_TTL_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Complete:
    """A whole message to deliver: its ``payload`` (the parts joined in ``seq`` order), and the
    arrival of its first part — ``first_s`` on the injected clock (seconds), ``first_ms`` as the
    caller gave it (unix ms): the delivery's deadline and ``received_ms`` count from there."""

    payload: bytes
    first_s: float
    first_ms: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A message acked 500 without a delivery (docs/long_connection.md §9.2): ``reason``
    ``bad_split`` or ``too_large``; ``first_s`` / ``first_ms`` as in :class:`Complete`."""

    reason: Literal["bad_split", "too_large"]
    first_s: float
    first_ms: int


@dataclass(slots=True)
class _Partial:
    """Parts of a split message received so far, by ``seq``."""

    count: int
    first_s: float
    first_ms: int
    last_s: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Joins split messages (§5) for one connection.

    Args:
        max_payload_bytes: the largest message, bytes, counted over every part received
            (``BRIDGE_LONG_CONNECTION_MAX_PAYLOAD_BYTES``).
        clock: monotonic seconds (the event loop's ``loop.time`` in the bridge; a fake in tests):
            the arrival of each part.
        ttl_s: seconds an incomplete message is kept after its latest part (default
            :data:`PARTIAL_TTL_S`).
        max_partials: most incomplete messages kept (default :data:`MAX_PARTIAL_MESSAGES`).
        on_evict: called once for each incomplete message forgotten to make room for a new one
            (the bridge counts it in ``bridge_long_connection_partials_dropped_total``, as it
            counts :meth:`expire`'s return).
    """

    __slots__ = ("_clock", "_max_partials", "_max_payload_bytes", "_on_evict", "_partials", "_ttl_s")

    def __init__(
        self,
        max_payload_bytes: int,
        clock: Callable[[], float],
        *,
        ttl_s: float = PARTIAL_TTL_S,
        max_partials: int = MAX_PARTIAL_MESSAGES,
        on_evict: Callable[[], None] = lambda: None,
    ) -> None:
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_partials = max_partials
        self._on_evict = on_evict
        self._partials: dict[str, _Partial] = {}

    def __len__(self) -> int:
        """How many incomplete messages are held."""
        return len(self._partials)

    def add(self, headers: Mapping[str, str], payload: bytes, *, received_ms: int) -> Complete | Refused | None:
        """Take one data frame of ``type=event``.

        Args:
            headers: the frame's headers (``message_id``; ``sum``, default ``"1"``; ``seq``,
                default ``"0"``: decimal strings, §3).
            payload: the frame's payload, this part's bytes.
            received_ms: the frame's arrival, unix ms (carried to the result when it is the
                message's first part).

        Returns:
            :class:`Complete` when this frame completes its message, :class:`Refused` when the
            message is refused (then it is forgotten), None when it is a part of a message still
            incomplete — or a repeat of a part already held, which changes nothing but the
            message's time to live (the first copy of a part wins).
        """
        now = self._clock()
        message_id = headers.get(fr.MESSAGE_ID, "")
        try:
            count, seq = int(headers.get(fr.SUM, "1")), int(headers.get(fr.SEQ, "0"))
        except ValueError:
            count, seq = 0, -1
        if not 1 <= count <= MAX_PARTS or not 0 <= seq < count or (count > 1 and not message_id):
            return Refused("bad_split", now, received_ms)
        limit = self._max_payload_bytes
        if count == 1:
            if len(payload) > limit:
                return Refused("too_large", now, received_ms)
            return Complete(bytes(payload), now, received_ms)
        partials = self._partials
        partial = partials.get(message_id)
        if partial is None or partial.count != count:  # new, or the same id with another sum: start over
            if len(partials) >= self._max_partials:  # forget the oldest
                del partials[next(iter(partials))]
                self._on_evict()
            partial = partials[message_id] = _Partial(count, now, received_ms, now)
        if seq not in partial.parts:
            partial.parts[seq] = bytes(payload)
            partial.size += len(payload)
        partial.last_s = now
        if partial.size > limit:
            del partials[message_id]
            return Refused("too_large", partial.first_s, partial.first_ms)
        if len(partial.parts) < count:
            return None  # no ack for a part that does not complete its message (§5)
        del partials[message_id]
        return Complete(b"".join(partial.parts[i] for i in range(count)), partial.first_s, partial.first_ms)

    def expire(self, now: float | None = None) -> int:
        """Forget the incomplete messages whose latest part came more than ``ttl_s`` ago.

        Args:
            now: the time on the injected clock, seconds (default: the clock's now).

        Returns:
            How many were forgotten.
        """
        if now is None:
            now = self._clock()
        stale = [m for m, p in self._partials.items() if now - p.last_s > self._ttl_s]
        for message_id in stale:
            del self._partials[message_id]
        return len(stale)
