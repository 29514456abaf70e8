"""The long connection's timings from the platform and its reconnect policy
(docs/long_connection.md §1, §4, §7; the bridge's choices §9.4).

Pure: :class:`ClientConfig` is the platform's ``ClientConfig`` as the client holds it, and
:func:`reconnect_delay` says how long to wait before the next attempt to connect, or that the
client gives up. The caller sleeps; nothing here does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

#: The SDKs' defaults (§1), in the platform's seconds (a count for ``ReconnectCount``; negative:
#: unlimited), used until the platform sends its own.
DEFAULT_CONFIG: Final[Mapping[str, int]] = {
    "ReconnectCount": -1,
    "ReconnectInterval": 120,
    "ReconnectNonce": 30,
    "PingInterval": 120,
}
#: The platform's ``ReconnectInterval`` and ``PingInterval`` are clamped to this range, in its
#: seconds (§9.4), so that a hostile value can neither spin the client nor stall it.
INTERVAL_RANGE: Final = (1, 3600)
#: Before the platform has sent a ``ClientConfig``, failed attempts wait 1, 2, 4, … times
#: ``backoff_first_s``, the exponent capped here (2**7 = 128 > the default 120 s interval).
MAX_BACKOFF_EXPONENT: Final = 7


@dataclass(slots=True)
class ClientConfig:
    """The platform's timings (§1, §4) as the client holds them, in seconds of the event loop.

    Args:
        second_s: the length of one of the platform's seconds, in real seconds (1.0; tests
            shrink it so that the fake platform's whole-second values pass quickly).

    Attributes:
        reconnect_count: most attempts in a row before giving up; negative: unlimited.
        reconnect_interval_s: seconds between failed attempts.
        reconnect_nonce_s: jitter before reconnecting after a loss: a random wait in
            ``[0, reconnect_nonce_s)`` seconds.
        ping_interval_s: seconds between ping frames (§4); two of them without any frame
            received is the read deadline (§9.4).
        received: whether an endpoint answer has carried a ``ClientConfig`` yet (set by the
            caller; a pong's config does not count: §9.4's backoff lasts until the endpoint
            speaks).
    """

    second_s: float = 1.0
    reconnect_count: int = DEFAULT_CONFIG["ReconnectCount"]
    reconnect_interval_s: float = 0.0
    reconnect_nonce_s: float = 0.0
    ping_interval_s: float = 0.0
    received: bool = False

    def __post_init__(self) -> None:
        self.reconnect_interval_s = DEFAULT_CONFIG["ReconnectInterval"] * self.second_s
        self.reconnect_nonce_s = DEFAULT_CONFIG["ReconnectNonce"] * self.second_s
        self.ping_interval_s = DEFAULT_CONFIG["PingInterval"] * self.second_s

    def update(self, raw: Any) -> None:
        """Apply a ``ClientConfig`` JSON object from the platform (§1, §4).

        Args:
            raw: the decoded JSON. Not an object: ignored. A field that is absent or not an
                integer (booleans included) keeps its value; ``ReconnectInterval`` and
                ``PingInterval`` are clamped to :data:`INTERVAL_RANGE`, ``ReconnectNonce`` to
                ``[0, 3600]`` (the platform's seconds, scaled by ``second_s``).
        """
        if not isinstance(raw, dict):
            return
        low, high = INTERVAL_RANGE
        for key, attr, floor in (
            ("ReconnectCount", "reconnect_count", None),
            ("ReconnectInterval", "reconnect_interval_s", low),
            ("ReconnectNonce", "reconnect_nonce_s", 0),
            ("PingInterval", "ping_interval_s", low),
        ):
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, attr, value if floor is None else min(max(float(value), floor), high) * self.second_s)


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No more attempts: ``ReconnectCount`` attempts in a row have failed (§7)."""

    attempts: int


def reconnect_delay(
    attempts: int,
    *,
    config: ClientConfig,
    lost_before: bool,
    rand: Callable[[], float] = random.random,
    backoff_first_s: float = 1.0,
) -> float | GiveUp:
    """How long to wait before the next attempt to connect (docs/long_connection.md §7, §9.4).

    Args:
        attempts: attempts that failed in a row since the client last connected (or started);
            0 when the next attempt is the first after a start or after a lost connection.
        config: the platform's latest timings (its :attr:`ClientConfig.received` says whether it
            has sent any).
        lost_before: the client had a connection, and lost it, since its last failed attempt.
        rand: a random source in ``[0, 1)`` (default :func:`random.random`): the jitter.
        backoff_first_s: the first wait, seconds, before the platform has sent its timings.

    Returns:
        Seconds to wait (0.0: at once), or :class:`GiveUp`:

        * ``attempts == 0``: after a loss, a random wait in ``[0, ReconnectNonce)`` (none when
          the nonce is 0); at start, none (§7 step 1);
        * ``attempts > 0`` and ``ReconnectCount >= 0`` and ``attempts >= max(ReconnectCount, 1)``:
          :class:`GiveUp` (§7 step 4);
        * otherwise ``ReconnectInterval`` — or, before the platform has sent a ``ClientConfig``,
          ``backoff_first_s`` doubling per failed attempt (1, 2, 4 … 64 s, then 128 capped) up
          to that interval (the SDKs' default 120 s): a first start against a busy endpoint does
          not wait two minutes (§9.4).
    """
    if attempts <= 0:
        if lost_before and config.reconnect_nonce_s > 0:
            return config.reconnect_nonce_s * rand()
        return 0.0
    count = config.reconnect_count
    if count >= 0 and attempts >= max(count, 1):
        return GiveUp(attempts)
    delay = config.reconnect_interval_s
    if not config.received:
        delay = min(delay, backoff_first_s * float(2 ** min(attempts - 1, MAX_BACKOFF_EXPONENT)))
    return delay
