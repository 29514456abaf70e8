"""Dedup window: which Lark event ids were already delivered to Kafka, and which are in flight.

The platform delivers at least once and retries for ≈7.1 h with the same event id
(docs/protocol.md §7: dedupe on ``header.event_id`` / ``uuid``). An id is marked *delivered* only after
the broker acknowledged its records (or its dead-letter record); a failed publish leaves it
unmarked so the platform's retry publishes it.

Memory: an id is kept as one 64-bit fingerprint (Python's per-process randomized ``hash(str)``,
its lowest bit replaced by who marked it) in a flat open-addressing table (``array('Q')``, linear
probing, at most half full, backward-shift deletion: no tombstones) plus once more in a FIFO of
marking order that expiry and the bound walk from the oldest end — 16–32 bytes of table and 8 of
FIFO per id, no object per id (``benchmarks/dedup_memory.py`` measures the default 1,000,000;
BENCHMARKS.md). Two different ids collide with probability ≈ n/2⁶³ per lookup (≈ 10⁻¹³ at 10⁶
ids), the price of not storing the ids themselves.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

_BUCKETS: Final = 64
#: Most events whose records are partly written (a fan-out read half-way, or one whose publish
#: failed after some records were acknowledged) remembered at once; the oldest is forgotten first.
MAX_PARTIAL: Final = 10_000


#: Who marked an id: this process published its records.
LOCAL: Final = "local"
#: Who marked an id: its records were read back from the bridge's topics (another replica, or
#: this one before a restart).
LOG: Final = "log"

_MASK64: Final = (1 << 64) - 1
_MIN_SLOTS: Final = 1024


class FingerprintSet:
    """A set of 64-bit fingerprints in marking order, in two flat arrays (no object per entry).

    A stored value is ``fingerprint | source bit``: bit 0 holds who marked it (1: :data:`LOG`);
    two fingerprints that differ only in bit 0 are the same entry. 0 marks an empty slot. The
    table (``array('Q')``, a power of two of slots — 1,024 at first —, kept at most half full,
    doubled when it would not be) uses linear probing from ``(value >> 1) & mask``; removal
    shifts the rest of the probe run back (Knuth 6.4, Algorithm R), so no tombstones accumulate.
    ``order`` holds the live values oldest first from index ``head``; :meth:`pop_oldest` removes
    from that end. Takes no constructor arguments; ``len()`` is the number of live values.
    """

    __slots__ = ("_head", "_live", "_mask", "_order", "_table")

    def __init__(self) -> None:
        self._table = array("Q", bytes(8 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        self._order = array("Q")
        self._head = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    @staticmethod
    def value_of(key: str, log_source: bool) -> int:
        """Compute the value stored for a key.

        Args:
            key: The event id (or dedup key).
            log_source: Whether :data:`LOG` marked it (bit 0).

        Returns:
            Its fingerprint (``hash(key)``, 64 bits, per process) with bit 0 = ``log_source``;
            never 0.
        """
        v = hash(key) & _MASK64 & ~1
        return (v or 2) | log_source

    def find(self, value: int) -> int:
        """Look a value up, ignoring bit 0.

        Args:
            value: A value from :meth:`value_of`.

        Returns:
            The stored value equal to ``value`` but for bit 0, or 0 when absent.
        """
        table, mask = self._table, self._mask
        f = value >> 1
        i = f & mask
        while (v := table[i]) != 0:
            if v >> 1 == f:
                return v
            i = (i + 1) & mask
        return 0

    def add(self, value: int) -> bool:
        """Insert a value as the newest.

        Args:
            value: A value from :meth:`value_of`.

        Returns:
            True when inserted; False (nothing changed) when its fingerprint is already in.
        """
        if self.find(value):
            return False
        if 2 * (self._live + 1) > len(self._table):
            self._grow()
        self._insert(value)
        self._order.append(value)
        self._live += 1
        return True

    def _insert(self, value: int) -> None:
        table, mask = self._table, self._mask
        i = (value >> 1) & mask
        while table[i] != 0:
            i = (i + 1) & mask
        table[i] = value

    def _grow(self) -> None:
        self._compact()
        size = 2 * len(self._table)
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        for value in self._order:
            self._insert(value)

    def _compact(self) -> None:
        if self._head:
            del self._order[: self._head]
            self._head = 0

    def oldest(self) -> int:
        """Return the oldest value.

        Raises:
            IndexError: The set is empty.
        """
        if self._head >= len(self._order):
            raise IndexError("empty")
        return self._order[self._head]

    def pop_oldest(self) -> None:
        """Remove the oldest value.

        Raises:
            IndexError: The set is empty.
        """
        value = self.oldest()
        self._head += 1
        self._remove(value)
        if self._head > 4096 and 2 * self._head > len(self._order):
            self._compact()

    def _remove(self, value: int) -> None:
        table, mask = self._table, self._mask
        i = (value >> 1) & mask
        while table[i] != value:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            v = table[j]
            if v == 0:
                break
            home = (v >> 1) & mask
            # v stays when its home lies cyclically in (i, j]; otherwise it moves back into i
            if (i < home <= j) if i < j else (home > i or home <= j):
                continue
            table[i] = v
            i = j
        table[i] = 0
        self._live -= 1


class DeliveryLedger:
    """Delivered ids within a window, and the futures of deliveries still in flight.

    Entries expire in buckets of ``ttl_s / 64``: an id is remembered for at least ``ttl_s`` and
    at most ``ttl_s · (1 + 1/64)`` seconds after it was marked. Each entry remembers who marked it
    first: :data:`LOCAL` (this process published it) or :data:`LOG` (read back from the bridge's
    topics: another replica, or this one before a restart). Source of the rule: docs/protocol.md
    §7; semantics: docs/delivery.md.

    An event that fans out to ``count`` records is delivered only once all of them are written
    (:meth:`mark_written`); until then the ledger remembers which indices are (:meth:`written`,
    at most :data:`MAX_PARTIAL` events, each for ``ttl_s``), so that a retry after a partial
    failure publishes only the missing records. ``len()`` is the number of ids marked delivered.

    Args:
        ttl_s: How long an id is remembered, in seconds; > 0.
        max_entries: Most ids remembered; the oldest is evicted first; ≥ 1.
        clock: Returns the current time in seconds, monotonic. Default :func:`time.monotonic`.

    Raises:
        ValueError: ``ttl_s`` ≤ 0 or ``max_entries`` < 1.
    """

    __slots__ = ("_buckets", "_clock", "_in_flight", "_max", "_partial", "_set", "_span", "_ttl_s")

    def __init__(self, ttl_s: float, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._span = ttl_s / _BUCKETS
        self._set = FingerprintSet()
        # [start_s, how many of the set's oldest-first values belong to it], oldest bucket first
        self._buckets: deque[list[float]] = deque()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        # hash(id) -> (count, bit mask of the indices written, first write's clock), oldest first
        self._partial: dict[int, tuple[int, int, float]] = {}

    def __len__(self) -> int:
        return len(self._set)

    def _expire(self, now: float) -> None:
        buckets, ids = self._buckets, self._set
        while buckets and buckets[0][0] + self._span + self._ttl_s <= now:
            for _ in range(int(buckets.popleft()[1])):
                ids.pop_oldest()

    def delivered(self, event_id: str) -> bool:
        """Tell whether an id was marked delivered within the window.

        Args:
            event_id: The event's dedup key (:meth:`bridge.inbound.InboundEvent.dedup_key`).

        Returns:
            True when marked delivered and not expired.
        """
        self._expire(self._clock())
        return self._set.find(FingerprintSet.value_of(event_id, False)) != 0

    def marked_by(self, event_id: str) -> str | None:
        """Tell who marked an id first.

        Args:
            event_id: The event's dedup key.

        Returns:
            :data:`LOCAL` or :data:`LOG`, or None if unmarked (or expired).
        """
        self._expire(self._clock())
        value = self._set.find(FingerprintSet.value_of(event_id, False))
        if value == 0:
            return None
        return LOG if value & 1 else LOCAL

    def mark_delivered(self, event_id: str, *, source: str = LOCAL) -> None:
        """Remember an id as delivered, evicting the oldest past the bound.

        Idempotent: the first mark's source stays. Forgets the id's partly-written indices.

        Args:
            event_id: The event's dedup key.
            source: :data:`LOCAL` or :data:`LOG`. Default :data:`LOCAL`.
        """
        now = self._clock()
        self._expire(now)
        ids = self._set
        if not ids.add(FingerprintSet.value_of(event_id, source == LOG)):
            return
        if self._partial:
            self._partial.pop(hash(event_id), None)
        buckets = self._buckets
        if not buckets or buckets[-1][0] + self._span <= now:
            buckets.append([now, 0])
        buckets[-1][1] += 1
        while len(ids) > self._max:  # the oldest first: never the id just marked
            ids.pop_oldest()
            oldest = buckets[0]
            oldest[1] -= 1
            if oldest[1] <= 0:
                buckets.popleft()

    def written(self, event_id: str, count: int) -> int:
        """Tell which records of a partly written event are in the topics.

        Args:
            event_id: The event's dedup key.
            count: How many records the event has.

        Returns:
            A bit mask of the indices known written (bit ``i`` set: record ``i`` is in the
            topics); 0 when none is known, when the parts seen were of another count, when they
            were first seen more than ``ttl_s`` ago, or when the event is delivered (then
            :meth:`delivered` says so).
        """
        entry = self._partial.get(hash(event_id))
        if entry is None or entry[0] != count or entry[2] + self._ttl_s <= self._clock():
            return 0
        return entry[1]

    def mark_written(self, event_id: str, indices: Iterable[int], count: int, *, source: str = LOCAL) -> None:
        """Record that some of an event's records are written.

        Once all ``count`` are (over any number of calls), the id is marked delivered by
        ``source``. At most :data:`MAX_PARTIAL` partly written events are remembered, each for
        ``ttl_s``; the oldest is forgotten first.

        Args:
            event_id: The event's dedup key.
            indices: The indices written, each ``0 <= i < count``; indices out of range are
                ignored.
            count: How many records the event has.
            source: :data:`LOCAL` or :data:`LOG`. Default :data:`LOCAL`.
        """
        if count <= 1:
            if any(i == 0 for i in indices):
                self.mark_delivered(event_id, source=source)
            return
        if self.delivered(event_id):
            return
        h = hash(event_id)
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
            self.mark_delivered(event_id, source=source)
            return
        self._partial[h] = (count, mask, since)
        partial = self._partial
        while partial:
            oldest = next(iter(partial))
            if len(partial) <= MAX_PARTIAL and partial[oldest][2] + self._ttl_s > now:
                break
            del partial[oldest]

    def in_flight(self, event_id: str) -> asyncio.Future[bool] | None:
        """Return the future of a delivery still running.

        Args:
            event_id: The event's dedup key.

        Returns:
            The future (its result: delivered?), or None when none is in flight.
        """
        return self._in_flight.get(event_id)

    def begin(self, event_id: str) -> asyncio.Future[bool]:
        """Register a delivery in flight; finish it with :meth:`finish`.

        Must be called from a running event loop.

        Args:
            event_id: The event's dedup key.

        Returns:
            The future that :meth:`finish` resolves; waiters await it.

        Raises:
            RuntimeError: A delivery is already in flight for the id (or no loop is running).
        """
        if event_id in self._in_flight:
            raise RuntimeError("delivery already in flight")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[event_id] = fut
        return fut

    def finish(self, event_id: str, delivered: bool) -> None:
        """End the in-flight delivery and wake its waiters.

        It marks nothing: the publish that delivered it marked the id
        (:meth:`bridge.delivery.Unwritten.publish`) before this is called. Does nothing when no
        delivery is in flight for the id.

        Args:
            event_id: The event's dedup key.
            delivered: The waiters' result; a waiter that gets False looks again.
        """
        fut = self._in_flight.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.set_result(delivered)
