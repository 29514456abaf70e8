"""Dedup window: which Lark delivery ids were already delivered to Kafka, and which are in flight.

The platform delivers at least once and retries for ≈7.1 h with the same delivery id
(docs/protocol.md §7: dedupe on ``header.event_id`` / ``uuid``). An id is marked *delivered* only after
the broker acknowledged its records (or its dead-letter record); a failed publish leaves it
unmarked so the platform's retry publishes it.

Memory: an entry is one 64-bit hash of the id (Python's per-process randomized ``hash(str)``) in a
dict, plus a slot in its time bucket — about 90 bytes per id, ≈ 95 MB for the default 1,000,000
(``benchmarks/dedup_memory.py`` measures it). Two different ids collide with probability
≈ n/2⁶⁴ per lookup (≈ 5·10⁻¹⁴ at 10⁶ ids), the price of not storing the ids themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

_BUCKETS: Final = 64
#: Most events whose records are partly written (a fan-out read half-way, or one whose publish
#: failed after some records were acknowledged) remembered at once; the oldest is forgotten first.
MAX_PARTIAL: Final = 10_000


LOCAL: Final = "local"
LOG: Final = "log"


class DeliveryLedger:
    """Delivered ids within ``ttl_s`` seconds (at most ``max_entries``, oldest evicted first), and
    the futures of deliveries still in flight.

    ``clock`` returns seconds (monotonic). Entries expire in buckets of ``ttl_s / 64``: an id is
    remembered for at least ``ttl_s`` and at most ``ttl_s · (1 + 1/64)`` seconds after it was
    marked. Each entry remembers who marked it first: :data:`LOCAL` (this process published it)
    or :data:`LOG` (read back from the bridge's topics: another replica, or this one before a
    restart).

    An event that fans out to ``count`` records is delivered only once all of them are written
    (:meth:`mark_written`); until then the ledger remembers which indices are (:meth:`written`,
    at most :data:`MAX_PARTIAL` events, each for ``ttl_s``), so that a retry after a partial
    failure publishes only the missing records.
    """

    __slots__ = ("_buckets", "_clock", "_entries", "_gen", "_in_flight", "_max", "_partial", "_span", "_ttl_s")

    def __init__(self, ttl_s: float, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._span = ttl_s / _BUCKETS
        self._gen = 0
        self._entries: dict[int, int] = {}  # hash(id) -> bucket generation * 2 + (1 if LOG)
        # (gen, start_s, hashes in marking order); evicted oldest first, within a bucket too
        self._buckets: deque[tuple[int, float, deque[int]]] = deque()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        # hash(id) -> (count, bit mask of the indices written, first write's clock), oldest first
        self._partial: dict[int, tuple[int, int, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        buckets, entries = self._buckets, self._entries
        while buckets and buckets[0][1] + self._span + self._ttl_s <= now:
            gen, _, hashes = buckets.popleft()
            for h in hashes:
                if (entries.get(h, -2) >> 1) == gen:
                    del entries[h]

    def delivered(self, delivery_id: str) -> bool:
        """True when ``delivery_id`` was marked delivered within the window."""
        self._expire(self._clock())
        return hash(delivery_id) in self._entries

    def marked_by(self, delivery_id: str) -> str | None:
        """Who marked ``delivery_id`` first — :data:`LOCAL` or :data:`LOG` — or None if unmarked."""
        self._expire(self._clock())
        value = self._entries.get(hash(delivery_id))
        if value is None:
            return None
        return LOG if value & 1 else LOCAL

    def mark_delivered(self, delivery_id: str, *, source: str = LOCAL) -> None:
        """Remember ``delivery_id`` as delivered (idempotent: the first mark's source stays),
        evicting the oldest past the bound. ``source``: :data:`LOCAL` or :data:`LOG`."""
        now = self._clock()
        self._expire(now)
        h = hash(delivery_id)
        if h in self._entries:
            return
        self._partial.pop(h, None)
        if not self._buckets or self._buckets[-1][1] + self._span <= now:
            self._gen += 1
            self._buckets.append((self._gen, now, deque()))
        gen, _, hashes = self._buckets[-1]
        hashes.append(h)
        self._entries[h] = gen * 2 + (1 if source == LOG else 0)
        while len(self._entries) > self._max:
            ogen, _, ohashes = self._buckets[0]
            while ohashes and len(self._entries) > self._max:
                oh = ohashes.popleft()  # the oldest: never the id just marked
                if (self._entries.get(oh, -2) >> 1) == ogen:
                    del self._entries[oh]
            if not ohashes:
                self._buckets.popleft()

    def written(self, delivery_id: str, count: int) -> int:
        """Bit mask of the indices of ``delivery_id``'s ``count`` records known written while the
        event is only partly written (bit ``i`` set: record ``i`` is in the topics); 0 when none
        is known, when the parts seen were of another count, or when the event is delivered
        (then :meth:`delivered` says so)."""
        entry = self._partial.get(hash(delivery_id))
        if entry is None or entry[0] != count or entry[2] + self._ttl_s <= self._clock():
            return 0
        return entry[1]

    def mark_written(self, delivery_id: str, indices: Iterable[int], count: int, *, source: str = LOCAL) -> None:
        """Record that records ``indices`` (each ``0 <= i < count``) of ``delivery_id``'s
        ``count`` records are written; once all ``count`` are (over any number of calls), the id
        is marked delivered by ``source``. Indices out of range are ignored."""
        if count <= 1:
            if any(i == 0 for i in indices):
                self.mark_delivered(delivery_id, source=source)
            return
        h = hash(delivery_id)
        if h in self._entries:
            return
        now = self._clock()
        mask = 0
        for i in indices:
            if 0 <= i < count:
                mask |= 1 << i
        entry = self._partial.pop(h, None)
        if entry is not None and entry[0] == count and entry[2] + self._ttl_s > now:
            mask |= entry[1]
            since = entry[2]
        else:
            since = now
        if mask == (1 << count) - 1:
            self.mark_delivered(delivery_id, source=source)
            return
        self._partial[h] = (count, mask, since)
        partial = self._partial
        while partial:
            oldest = next(iter(partial))
            if len(partial) <= MAX_PARTIAL and partial[oldest][2] + self._ttl_s > now:
                break
            del partial[oldest]

    def in_flight(self, delivery_id: str) -> asyncio.Future[bool] | None:
        """The future of a delivery of ``delivery_id`` still running (result: delivered?), or None."""
        return self._in_flight.get(delivery_id)

    def begin(self, delivery_id: str) -> asyncio.Future[bool]:
        """Register a delivery in flight; finish it with :meth:`finish`. Raises RuntimeError if
        one is already in flight for the id."""
        if delivery_id in self._in_flight:
            raise RuntimeError("delivery already in flight")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[delivery_id] = fut
        return fut

    def finish(self, delivery_id: str, delivered: bool) -> None:
        """End the in-flight delivery; mark the id delivered when ``delivered``; wake waiters
        (with ``delivered``; a waiter that gets False looks again)."""
        if delivered:
            self.mark_delivered(delivery_id)
        fut = self._in_flight.pop(delivery_id, None)
        if fut is not None and not fut.done():
            fut.set_result(delivered)
