"""Chaos harness: the Lark platform's delivery behaviour against bridge replicas on a real
cluster, broker faults while it runs, and a checker of exactly-once in the topics afterwards.

Used by ``tests/integration/test_cluster_exactly_once.py`` and ``benchmarks/chaos.py``.

* :class:`PlatformDriver` sends unique deliveries (the three kinds, third-party events fanning out
  to 1-3 rooms of a small room pool, so that keys repeat and per-key order can be checked) at a
  bounded rate for a bounded time, each to a random replica; an answer other than 200, or none
  within ``timeout_s`` (the platform's 3 s), is retried with the same request (same bytes, same
  headers) to a random replica after a gap (:data:`PLATFORM_RETRY_GAPS_S` is the platform's; tests
  pass shorter ones), up to ``tries`` tries. Every attempt is recorded (:class:`Attempt`).
* :func:`read_records` reads every topic from the beginning with ``read_committed`` or
  ``read_uncommitted``; each record keeps its batch's producer id (aiokafka does not expose it:
  see :func:`_batch_info`), so the copies of a duplicate can be told apart.
* :func:`check` matches records to deliveries (header ``lark_event_id`` + key +
  ``lark_record_part``): lost records of deliveries answered 200, duplicates (each copy with its
  offset, timestamp, producer id and the attempt — replica, try, answer — that wrote it), partial
  never-answered deliveries, per-key order.
* Faults on a :class:`~bridge_devtools.broker.LocalCluster` (:func:`kill_leader`,
  :func:`pause_leader`, :func:`isolate_leader`, :func:`rolling_restart`, :func:`kill_follower`) run the blocking cluster
  calls in threads (the driver keeps sending meanwhile) and return when every partition of the
  topics is fully in sync again; :func:`run_scenario` ties driver, fault, settling and checks.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import functools
import hashlib
import random
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.kafka import MAX_WRITE_DELAY_MS
from bridge.samples import sample
from bridge_devtools.broker import LocalCluster, free_port
from bridge_devtools.platform import Platform, PlatformRequest
from tests.support.bridges import spawn_bridge, topic_settings
from tests.support.credentials import KEY, TOKEN
from tests.support.waits import wait_http_status, wait_until

ROOM_CREATED: Final = "vc.room.created_v1"
RESERVE_CONFIG_UPDATED: Final = "vc.reserve_config.updated_v1"
THIRD_PARTY_CREATED: Final = "third_party_meeting_room_event_created"
#: (kind, weight): like benchmarks.traffic, bookings (fan-out 1-3 records) dominate.
MIX: Final = ((THIRD_PARTY_CREATED, 60), (RESERVE_CONFIG_UPDATED, 25), (ROOM_CREATED, 15))
#: The platform's gaps between tries (15 s, then 5 min, 1 h, …; docs/delivery.md: ≈ 7.1 h in all).
PLATFORM_RETRY_GAPS_S: Final = (15.0, 300.0, 3600.0, 6 * 3600.0)
#: The platform gives up on an answer after 3 s.
PLATFORM_TIMEOUT_S: Final = 3.0
EVENT_ID_HEADER: Final = "lark_event_id"
PART_HEADER: Final = "lark_record_part"
READ_COMMITTED: Final = "read_committed"
READ_UNCOMMITTED: Final = "read_uncommitted"

#: A gap: fixed seconds, or ``(low, high)`` drawn uniformly per retry.
Gap = float | tuple[float, float]


# -- topics and replicas ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosTopics:
    """The topics of one deployment (:func:`spawn_bridge`'s names, ``{prefix}.room|cfg|3p|dlq|…``):
    those of the kinds the traffic sends (:attr:`by_kind`), the dead-letter topic, and those of the
    kinds it does not send (created all the same, like the others, before the bridges start)."""

    prefix: str

    @property
    def by_kind(self) -> dict[str, str]:
        return {
            ROOM_CREATED: f"{self.prefix}.room",
            RESERVE_CONFIG_UPDATED: f"{self.prefix}.cfg",
            THIRD_PARTY_CREATED: f"{self.prefix}.3p",
        }

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def all(self) -> tuple[str, ...]:
        named = {*self.by_kind.values(), self.dead_letter}
        quiet = [t for t in topic_settings(self.prefix).values() if t not in named]
        return (*self.by_kind.values(), self.dead_letter, *quiet)


def assignment(partitions: int, leaders: Sequence[int], follower_only: int) -> dict[int, list[int]]:
    """Replica lists whose preferred leaders rotate over ``leaders``; ``follower_only`` is last
    everywhere, so it leads a partition only when every other replica is out of the ISR."""
    out = {}
    for p in range(partitions):
        first = leaders[p % len(leaders)]
        out[p] = [first, *(n for n in leaders if n != first), follower_only]
    return out


async def create_topics(
    cluster: LocalCluster, topics: ChaosTopics, *, partitions: int = 3, follower_only: int | None = None
) -> None:
    """Create ``topics`` with ``partitions`` partitions on every node (RF = cluster size), the
    settings the bridge gives topics it creates (``min.insync.replicas`` = RF - 1, the write-delay
    bound), before the bridges would (they keep existing topics).

    ``follower_only``: that node is listed last in every replica list (a replica that leads
    nothing, for the "non-leader replica killed" fault); default: the last node.
    """
    nodes = sorted(cluster.nodes)
    follower = follower_only if follower_only is not None else nodes[-1]
    leaders = [n for n in nodes if n != follower]
    configs = {  # what the bridge gives the topics it creates (bridge.kafka.create_topics)
        "min.insync.replicas": str(max(1, len(nodes) - 1)),
        "message.timestamp.type": "CreateTime",
        "message.timestamp.before.max.ms": str(MAX_WRITE_DELAY_MS),
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.live_bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    t, -1, -1, replica_assignments=assignment(partitions, leaders, follower), topic_configs=configs
                )
                for t in topics.all
            ]
        )
    finally:
        await admin.close()
    await wait_in_sync(cluster, topics.all, timeout_s=60)


async def describe(cluster: LocalCluster, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, list[int]]]:
    """``{(topic, partition): (leader, isr)}`` from the live nodes (leader -1: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.live_bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    out = {}
    for t in described:
        if t["error_code"] != 0:
            raise LookupError(f"{t['topic']}: error {t['error_code']}")
        for p in t["partitions"]:
            out[(t["topic"], p["partition"])] = (p["leader"], sorted(p["isr"]))
    return out


async def wait_in_sync(cluster: LocalCluster, topics: Sequence[str], *, timeout_s: float = 90.0) -> None:
    """Until every partition of ``topics`` has a leader and all ``cluster.size`` replicas in its ISR."""
    seen: list[Any] = []

    async def in_sync() -> bool:
        try:
            state = await describe(cluster, topics)
        except Exception as exc:  # a node just restarted may not know the topics yet
            seen.append(repr(exc))
            return False
        seen.append(state)
        return len(state) > 0 and all(leader >= 0 and len(isr) == cluster.size for leader, isr in state.values())

    await wait_until(in_sync, timeout_s=timeout_s, interval_s=0.5, message=f"never all in sync; last {seen[-1:]}")


@dataclass
class BridgePair:
    """Bridge replicas (``python -m bridge serve``) sharing one deployment's topics."""

    bootstrap: str
    topics: ChaosTopics
    log_dir: Path
    count: int = 2
    extra: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """Each replica's webhook URL."""
        return [f"http://127.0.0.1:{p}/webhook/event" for p in self.ports]

    def log_paths(self) -> list[Path]:
        return [self.log_dir / f"bridge-{i}.log" for i in range(self.count)]

    async def start(self, timeout_s: float = 90.0) -> None:
        """Spawn the replicas and wait until each answers ``/readyz`` 200."""
        env = {"BRIDGE_LOG_LEVEL": "INFO", **self.extra}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for path in self.log_paths():
            port = free_port()
            log = path.open("a")
            self.ports.append(port)
            self._logs.append(log)
            self.procs.append(spawn_bridge(self.bootstrap, port, self.topics.prefix, log, **env))
        async with aiohttp.ClientSession() as session:
            for i, (proc, port) in enumerate(zip(self.procs, self.ports, strict=True)):
                await wait_http_status(
                    session,
                    f"http://127.0.0.1:{port}/readyz",
                    200,
                    timeout_s=timeout_s,
                    alive=functools.partial(lambda p: p.poll() is None, proc),
                    message=f"replica {i} did not become ready (log: {self.log_paths()[i]})",
                )

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    async def stop(self) -> None:
        """SIGTERM every replica (graceful drain), SIGKILL after 30 s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        for log in self._logs:
            log.close()


# -- deliveries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One record a delivery must produce: topic, key and part header (``"i/n"``; None: single)."""

    topic: str
    key: str
    part: str | None


@dataclass
class Delivery:
    """One platform delivery (one event id) and the records it must produce."""

    event_id: str
    kind: str
    index: int
    expected: tuple[Expected, ...]
    payload: dict[str, Any]
    request: PlatformRequest | None = None


@dataclass
class Attempt:
    """One try of a delivery: unix times of the request's start and end, the replica (index)
    asked, the HTTP status (None: no answer within the timeout, or a connection error)."""

    event_id: str
    number: int
    replica: int
    started: float
    ended: float
    status: int | None
    error: str | None = None


def make_rooms(count: int, seed: str = "chaos") -> tuple[str, ...]:
    """``count`` room ids ``omm_<md5>`` (a small pool: keys repeat, so order per key is tested)."""
    return tuple("omm_" + hashlib.md5(f"{seed}-{i}".encode()).hexdigest() for i in range(count))


class Traffic:
    """Unique deliveries of the three kinds over ``rooms``; event ids ``<tag><index><random>``
    (32 hex digits like the platform's), ``tag`` 8 hex digits naming the run."""

    def __init__(self, topics: ChaosTopics, *, tag: str, rooms: Sequence[str], seed: int = 0) -> None:
        self.topics = topics
        self.tag = tag
        self.rooms = tuple(rooms)
        self._rng = random.Random(seed)
        self._templates = {kind: sample(kind) for kind, _ in MIX}

    def delivery(self, index: int, now_ms: int) -> Delivery:
        rng = self._rng
        kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
        event_id = f"{self.tag}{index:08x}{rng.getrandbits(64):016x}"
        body = copy.deepcopy(self._templates[kind])
        topic = self.topics.by_kind[kind]
        if kind == THIRD_PARTY_CREATED:
            body.update(token=TOKEN, uuid=event_id, ts=f"{now_ms / 1000:.7f}")
            ev = body["event"]
            ev.update(event_id=event_id, event_time=str(now_ms), uid=f"sched-{rng.getrandbits(64):016x}")
            rooms = rng.sample(self.rooms, rng.randint(1, 3))
            ev["meeting_rooms"] = [{"open_id": r} for r in rooms]
            parts = [f"{i}/{len(rooms)}" if len(rooms) > 1 else None for i in range(len(rooms))]
            expected = tuple(Expected(topic, r, p) for r, p in zip(rooms, parts, strict=True))
        else:
            body["header"].update(token=TOKEN, event_id=event_id, create_time=str(now_ms))
            room = rng.choice(self.rooms)
            if kind == ROOM_CREATED:
                body["event"]["room"]["room_id"] = room
            else:
                body["event"]["scope_id"] = room
            expected = (Expected(topic, room, None),)
        return Delivery(event_id, kind, index, expected, body)


@dataclass
class DriverLog:
    """What the driver sent and got: deliveries by event id, every attempt in start order."""

    deliveries: dict[str, Delivery] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def attempts_of(self) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = defaultdict(list)
        for a in self.attempts:
            out[a.event_id].append(a)
        for tries in out.values():
            tries.sort(key=lambda a: a.started)
        return out

    def first_ok(self) -> dict[str, Attempt]:
        """The first attempt answered 200, per event id that got one."""
        out: dict[str, Attempt] = {}
        for a in sorted(self.attempts, key=lambda a: a.ended):
            if a.status == 200 and a.event_id not in out:
                out[a.event_id] = a
        return out


class PlatformDriver:
    """The platform, at ``rate_per_s`` new deliveries a second for ``duration_s`` seconds.

    Each delivery goes to a random replica of ``urls``; an answer other than 200 (or none within
    ``timeout_s``) is retried with the same request to a random replica after ``retry_gaps_s[i]``
    (seconds, or ``(low, high)`` drawn uniformly), up to ``tries`` tries. :meth:`run` returns once
    every delivery got a 200 or used its tries.
    """

    def __init__(
        self,
        urls: Sequence[str],
        traffic: Traffic,
        *,
        rate_per_s: float = 40.0,
        duration_s: float = 20.0,
        retry_gaps_s: Sequence[Gap] = PLATFORM_RETRY_GAPS_S,
        tries: int = 4,
        timeout_s: float = PLATFORM_TIMEOUT_S,
        seed: int = 0,
        platform: Platform | None = None,
    ) -> None:
        if tries < 1 or len(retry_gaps_s) < tries - 1:
            raise ValueError(f"{tries} tries need {tries - 1} retry gaps, got {len(retry_gaps_s)}")
        self.urls = list(urls)
        self.traffic = traffic
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.retry_gaps_s = list(retry_gaps_s)
        self.tries = tries
        self.timeout_s = timeout_s
        self.platform = platform or Platform(encrypt_key=KEY)
        self.log = DriverLog()
        self._rng = random.Random(seed)

    def _gap(self, retry: int) -> float:
        gap = self.retry_gaps_s[retry]
        return self._rng.uniform(*gap) if isinstance(gap, tuple) else gap

    async def _attempt(self, session: aiohttp.ClientSession, d: Delivery, number: int) -> int | None:
        assert d.request is not None
        replica = self._rng.randrange(len(self.urls))
        started = time.time()
        status: int | None = None
        error = None
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with session.post(
                self.urls[replica], data=d.request.body, headers=d.request.headers, timeout=timeout
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        self.log.attempts.append(Attempt(d.event_id, number, replica, started, time.time(), status, error))
        return status

    async def _deliver(self, session: aiohttp.ClientSession, d: Delivery) -> None:
        d.request = self.platform.request(d.payload)  # signed once: a retry sends these same bytes
        for number in range(1, self.tries + 1):
            if await self._attempt(session, d, number) == 200:
                return
            if number < self.tries:
                await asyncio.sleep(self._gap(number - 1))

    async def run(self) -> DriverLog:
        loop = asyncio.get_running_loop()
        self.log.started = time.time()
        count = max(1, round(self.rate_per_s * self.duration_s))
        t0 = loop.time()
        tasks = []
        connector = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(count):
                delay = t0 + i / self.rate_per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                d = self.traffic.delivery(i, int(time.time() * 1000))
                self.log.deliveries[d.event_id] = d
                tasks.append(asyncio.create_task(self._deliver(session, d)))
            await asyncio.gather(*tasks)
        self.log.ended = time.time()
        return self.log


# -- reading the topics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRecord:
    """A record read back, with its batch's producer id/epoch and transactional flag (None:
    unknown, see :func:`_batch_info`)."""

    topic: str
    partition: int
    offset: int
    key: str
    event_id: str | None
    part: str | None
    timestamp_ms: int
    producer_id: int | None
    producer_epoch: int | None
    transactional: bool | None


_BATCHES: dict[tuple[str, int, int], tuple[int, int, bool]] = {}


@contextlib.contextmanager
def _batch_info() -> Iterator[dict[tuple[str, int, int], tuple[int, int, bool]]]:
    """While open, remember ``(producer id, epoch, transactional)`` of each record's batch,
    by ``(topic, partition, offset)``.

    aiokafka's ``ConsumerRecord`` has no producer id; its fetcher builds one
    ``fetcher.PartitionRecords`` per fetched partition, which walks the batches: a subclass
    notes the batch of each record it yields. If aiokafka's internals change, the ids are just
    missing (the checker still works, with less attribution).
    """
    from aiokafka.consumer import fetcher

    original = getattr(fetcher, "PartitionRecords", None)
    if original is None or not hasattr(original, "_consumer_record"):
        yield _BATCHES
        return

    class _Batches:
        def __init__(self, records: Any, owner: Any) -> None:
            self._records = records
            self._owner = owner

        def has_next(self) -> bool:
            return bool(self._records.has_next())

        def next_batch(self) -> Any:
            batch = self._records.next_batch()
            self._owner.current_batch = batch
            return batch

    class Noting(original):  # type: ignore[misc, valid-type]
        def __init__(self, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
            self.current_batch = None
            super().__init__(tp, _Batches(records, self) if records is not None else records, *args, **kwargs)

        def _consumer_record(self, tp: Any, record: Any) -> Any:
            batch = self.current_batch
            if batch is not None:
                _BATCHES[(tp.topic, tp.partition, record.offset)] = (
                    batch.producer_id,
                    batch.producer_epoch,
                    bool(batch.is_transactional),
                )
            return super()._consumer_record(tp, record)

    fetcher.PartitionRecords = Noting
    try:
        yield _BATCHES
    finally:
        fetcher.PartitionRecords = original


async def read_records(
    bootstrap: str, topics: Sequence[str], *, isolation_level: str = READ_COMMITTED, timeout_s: float = 60.0
) -> list[SeenRecord]:
    """Every record of ``topics`` from the beginning up to the end offsets seen at start (for
    ``read_committed``: the last stable offset), with ``isolation_level``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        request_timeout_ms=15000,
    )
    out: list[SeenRecord] = []
    with _batch_info() as batches:
        batches.clear()
        await consumer.start()
        try:

            async def known() -> bool:
                await consumer._client.force_metadata_update()
                return all(consumer.partitions_for_topic(t) for t in topics)

            await wait_until(known, timeout_s=30, interval_s=0.2, message=f"topics {topics} unknown")
            tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while True:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"read only up to {positions} of {ends} within {timeout_s}s")
                for tp_records in (await consumer.getmany(timeout_ms=500)).values():
                    for m in tp_records:
                        if m.offset >= ends[TopicPartition(m.topic, m.partition)]:
                            continue
                        h = dict(m.headers)
                        batch = batches.get((m.topic, m.partition, m.offset))
                        out.append(
                            SeenRecord(
                                m.topic,
                                m.partition,
                                m.offset,
                                (m.key or b"").decode(),
                                h[EVENT_ID_HEADER].decode() if EVENT_ID_HEADER in h else None,
                                h[PART_HEADER].decode() if PART_HEADER in h else None,
                                m.timestamp,
                                batch[0] if batch else None,
                                batch[1] if batch else None,
                                batch[2] if batch else None,
                            )
                        )
        finally:
            await consumer.stop()
            batches.clear()
    return out


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """High watermarks of every partition of ``topics``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def settle(bootstrap: str, topics: Sequence[str], *, quiet_s: float = 3.0, timeout_s: float = 90.0) -> None:
    """Until the topics' end offsets stayed the same for ``quiet_s`` (publishes still running in
    a replica after its answer — e.g. stuck on a hung broker — have landed or given up)."""
    last: list[Any] = [None, time.monotonic()]

    async def quiet() -> bool:
        try:
            now = await end_offsets(bootstrap, topics)
        except Exception:
            return False
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - last[1] >= quiet_s

    await wait_until(quiet, timeout_s=timeout_s, interval_s=0.5, message="the topics never stopped growing")


# -- the checker ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One copy of a record written more than once, and who wrote it: the attempt that was in
    flight (the last one started before the record's timestamp; the producer stamps a record when
    the bridge hands it over), its replica, try number and answer; ``lag_s`` = timestamp - that
    attempt's start; ``pid_replica``: the replica whose other records carry this producer id
    (when known, the attempt is looked for among that replica's)."""

    partition: int
    offset: int
    timestamp_ms: int
    producer_id: int | None
    transactional: bool | None
    replica: int | None
    attempt: int | None
    answer: int | None
    lag_s: float | None
    pid_replica: int | None


@dataclass(frozen=True)
class Duplicate:
    """A record (event id, topic, key, part) found more than once."""

    event_id: str
    topic: str
    key: str
    part: str | None
    answered_200: bool
    copies: tuple[Copy, ...]

    @property
    def pattern(self) -> str:
        """How the copies came about, from their offsets and writers:

        * ``late``: an earlier try's copy has a higher offset than a later try's — its publish
          was still under way (unacknowledged) when the later try published again;
        * ``unseen``: every earlier try's copy was already in the log when the later try
          published — its replica's ledger did not know the id yet (tail lag);
        * ``+same-replica`` / ``+other-replica``: whether the copies' writers are one replica.
        """
        ordered = sorted(self.copies, key=lambda c: c.offset)
        tries = [c.attempt if c.attempt is not None else 0 for c in ordered]
        kind = "late" if tries != sorted(tries) else "unseen"
        writers = {c.pid_replica if c.pid_replica is not None else c.replica for c in self.copies}
        return f"{kind}+{'same' if len(writers) == 1 else 'other'}-replica"


@dataclass
class LevelReport:
    """The check at one isolation level."""

    isolation_level: str
    records: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # 200'd event id -> records missing
    partial_unanswered: dict[str, int] = field(default_factory=dict)  # never 200'd, some but not all
    unanswered_complete: int = 0
    unanswered_empty: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    unexpected: list[SeenRecord] = field(default_factory=list)  # our id, but a key/part not expected
    dead_letters: int = 0
    order_violations: list[str] = field(default_factory=list)

    @property
    def extra_records(self) -> int:
        return sum(len(d.copies) - 1 for d in self.duplicates)

    @property
    def duplicated_events(self) -> int:
        return len({d.event_id for d in self.duplicates})

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "lost_events": len(self.lost),
            "lost_records": sum(self.lost.values()),
            "duplicated_events": self.duplicated_events,
            "extra_records": self.extra_records,
            "partial_unanswered": len(self.partial_unanswered),
            "unexpected": len(self.unexpected),
            "dead_letters": self.dead_letters,
            "order_violations": len(self.order_violations),
            "duplicate_patterns": dict(sorted(Counter(d.pattern for d in self.duplicates).items())),
        }


class DuplicatesFound(AssertionError):
    """Records written more than once (and nothing else wrong): what an ``xfail(raises=…)``
    may expect of a scenario the bridge does not pass yet, without hiding a loss."""


@dataclass
class ChaosReport:
    """Both isolation levels' checks of one driver run."""

    deliveries: int
    answered_200: int
    attempts: int
    statuses: dict[str, int]
    committed: LevelReport
    uncommitted: LevelReport
    seconds: float = 0.0
    faults: list[tuple[float, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "answered_200": self.answered_200,
            "never_200": self.deliveries - self.answered_200,
            "attempts": self.attempts,
            "statuses": self.statuses,
            READ_COMMITTED: self.committed.summary(),
            READ_UNCOMMITTED: self.uncommitted.summary(),
            "seconds": round(self.seconds, 1),
        }

    def describe_duplicates(self, limit: int = 20, t0: float | None = None) -> str:
        """One line per duplicated record (read_committed, else read_uncommitted), copies with
        offset, time since ``t0`` (default: the first fault), producer id and attributed writer."""
        dups = self.committed.duplicates or self.uncommitted.duplicates
        base = t0 if t0 is not None else (self.faults[0][0] if self.faults else 0.0)
        lines = []
        for d in dups[:limit]:
            copies = "; ".join(
                f"p{c.partition}@{c.offset} t={c.timestamp_ms / 1000 - base:+.2f}s pid={c.producer_id}"
                f"{' txn' if c.transactional else ''} by replica {c.replica} try {c.attempt} "
                f"(answer {c.answer}, +{c.lag_s:.2f}s after its start; pid seen from replica {c.pid_replica})"
                for c in d.copies
            )
            lines.append(
                f"{d.event_id} {d.topic.rsplit('.', 1)[-1]} {d.key} {d.part or '-'} 200={d.answered_200} "
                f"[{d.pattern}]: {copies}"
            )
        if len(dups) > limit:
            lines.append(f"… {len(dups) - limit} more")
        return "\n".join(lines)


def _writer(attempts: list[Attempt], ts_s: float, replica: int | None = None) -> Attempt | None:
    """The attempt that handed a record stamped ``ts_s`` to its producer: the last one started
    before (to ``replica`` when the producer id says which replica wrote it). The stamp is taken
    when aiokafka appends the record, after it knows the partition's leader: during a failover
    that can be seconds after the attempt started, even after the next try began elsewhere."""
    started = [a for a in attempts if a.started <= ts_s + 0.05 and (replica is None or a.replica == replica)]
    return started[-1] if started else None


def check_level(log: DriverLog, records: Sequence[SeenRecord], isolation_level: str, tag: str) -> LevelReport:
    """Match ``records`` (one isolation level) to the deliveries of ``log`` (event ids starting with ``tag``)."""
    report = LevelReport(isolation_level)
    attempts = log.attempts_of()
    ok = log.first_ok()
    ours = [r for r in records if r.event_id is not None and r.event_id.startswith(tag)]
    report.records = len(ours)
    copies: dict[tuple[str, str, str, str | None], list[SeenRecord]] = defaultdict(list)
    keys_of: dict[str, list[tuple[str, str, str, str | None]]] = defaultdict(list)  # event id -> its copies' keys
    for r in ours:
        assert r.event_id is not None
        k = (r.event_id, r.topic, r.key, r.part)
        if k not in copies:
            keys_of[r.event_id].append(k)
        copies[k].append(r)

    # producer id -> replica, from records whose writer is unambiguous (one attempt in flight)
    pid_votes: dict[int, Counter[int]] = defaultdict(Counter)
    for r in ours:
        assert r.event_id is not None
        w = _writer(attempts.get(r.event_id, []), r.timestamp_ms / 1000)
        if w is not None and r.producer_id is not None and r.timestamp_ms / 1000 <= w.ended + 0.05:
            pid_votes[r.producer_id][w.replica] += 1
    pid_replica = {pid: votes.most_common(1)[0][0] for pid, votes in pid_votes.items()}

    for d in log.deliveries.values():
        present = [e for e in d.expected if copies.get((d.event_id, e.topic, e.key, e.part))]
        missing = len(d.expected) - len(present)
        if d.event_id in ok:
            if missing:
                report.lost[d.event_id] = missing
        elif missing == 0:
            report.unanswered_complete += 1
        elif missing == len(d.expected):
            report.unanswered_empty += 1
        else:
            report.partial_unanswered[d.event_id] = missing
        expected = {(d.event_id, e.topic, e.key, e.part) for e in d.expected}
        for e in d.expected:
            seen = copies.get((d.event_id, e.topic, e.key, e.part), [])
            if len(seen) > 1:
                made = []
                for r in sorted(seen, key=lambda r: (r.partition, r.offset)):
                    by = pid_replica.get(r.producer_id) if r.producer_id is not None else None
                    w = _writer(attempts.get(d.event_id, []), r.timestamp_ms / 1000, by)
                    made.append(
                        Copy(
                            r.partition,
                            r.offset,
                            r.timestamp_ms,
                            r.producer_id,
                            r.transactional,
                            w.replica if w else None,
                            w.number if w else None,
                            w.status if w else None,
                            (r.timestamp_ms / 1000 - w.started) if w else None,
                            by,
                        )
                    )
                report.duplicates.append(Duplicate(d.event_id, e.topic, e.key, e.part, d.event_id in ok, tuple(made)))
        for k in keys_of.get(d.event_id, ()):
            if k not in expected:
                report.unexpected.extend(copies[k])
    report.dead_letters = sum(1 for r in ours if r.topic.endswith(".dlq"))

    # per-key order: a delivery answered 200 before another with the same key was first sent
    # has the lower offset (first copy of each)
    by_key: dict[tuple[str, str], list[tuple[float, float, int, str]]] = defaultdict(list)
    for d in log.deliveries.values():
        if d.event_id not in ok:
            continue
        first_sent = attempts[d.event_id][0].started
        for e in d.expected:
            found = copies.get((d.event_id, e.topic, e.key, e.part))
            if found:
                by_key[(e.topic, e.key)].append(
                    (ok[d.event_id].ended, first_sent, min(r.offset for r in found), d.event_id)
                )
    for (topic, key), items in by_key.items():
        # the lowest offset among the items first sent after each send time: only an item whose
        # answer precedes a lower offset's send is compared pair by pair (a long run stays linear)
        by_sent = sorted(items, key=lambda i: i[1])
        sent_times = [i[1] for i in by_sent]
        low_after = [0] * (len(by_sent) + 1)
        low_after[-1] = 2**63
        for j in range(len(by_sent) - 1, -1, -1):
            low_after[j] = min(by_sent[j][2], low_after[j + 1])
        for a_ok, _, a_offset, a_id in items:
            if low_after[bisect.bisect_right(sent_times, a_ok)] >= a_offset:
                continue
            for _, b_sent, b_offset, b_id in items:
                if a_ok < b_sent and a_offset > b_offset:
                    report.order_violations.append(
                        f"{topic} {key}: {a_id}@{a_offset} answered before {b_id}@{b_offset}"
                    )
    return report


async def check(
    bootstrap: str, topics: ChaosTopics, log: DriverLog, tag: str, *, faults: Sequence[tuple[float, str]] = ()
) -> ChaosReport:
    """Read every topic at both isolation levels and check ``log``'s deliveries."""
    committed = await read_records(bootstrap, topics.all, isolation_level=READ_COMMITTED)
    uncommitted = await read_records(bootstrap, topics.all, isolation_level=READ_UNCOMMITTED)
    statuses = Counter(str(a.status) if a.status is not None else (a.error or "none") for a in log.attempts)
    return ChaosReport(
        deliveries=len(log.deliveries),
        answered_200=len(log.first_ok()),
        attempts=len(log.attempts),
        statuses=dict(sorted(statuses.items())),
        committed=check_level(log, committed, READ_COMMITTED, tag),
        uncommitted=check_level(log, uncommitted, READ_UNCOMMITTED, tag),
        faults=list(faults),
    )


# -- faults -----------------------------------------------------------------------------------------


@dataclass
class FaultLog:
    """Unix-timed notes of what a fault did (``(time, text)``)."""

    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append((time.time(), text))


async def leader_of(cluster: LocalCluster, topic: str, partition: int = 0) -> int:
    """The partition's leader, polled (a broker's metadata may lag the controller's)."""
    found: list[int] = []

    async def known() -> bool:
        try:
            state = await describe(cluster, [topic])
        except Exception:
            return False
        leader = state.get((topic, partition), (-1, []))[0]
        if leader >= 0:
            found.append(leader)
        return bool(found)

    await wait_until(known, timeout_s=60, interval_s=0.2, message=f"{topic}[{partition}]: no leader")
    return found[-1]


async def kill_leader(
    cluster: LocalCluster, topics: ChaosTopics, log: FaultLog, *, down_s: float = 8.0, topic: str | None = None
) -> None:
    """SIGKILL the leader of ``topic`` (default the third-party topic) partition 0, start it
    again after ``down_s``, wait until all in sync."""
    topic = topic or topics.by_kind[THIRD_PARTY_CREATED]
    node = await leader_of(cluster, topic)
    cluster.kill(node)
    log.note(f"SIGKILL node {node} (leader of {topic}[0])")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(cluster.start, node)
    log.note(f"node {node} started")
    await wait_in_sync(cluster, topics.all)
    log.note("all in sync")


async def pause_leader(
    cluster: LocalCluster, topics: ChaosTopics, log: FaultLog, *, hang_s: float = 10.0, topic: str | None = None
) -> None:
    """SIGSTOP the leader of ``topic`` partition 0 for ``hang_s`` (a hung broker), then SIGCONT."""
    topic = topic or topics.by_kind[THIRD_PARTY_CREATED]
    node = await leader_of(cluster, topic)
    cluster.pause(node)
    log.note(f"SIGSTOP node {node} (leader of {topic}[0])")
    try:
        await asyncio.sleep(hang_s)
    finally:
        cluster.resume(node)
    log.note(f"SIGCONT node {node}")
    await wait_in_sync(cluster, topics.all)
    log.note("all in sync")


async def isolate_leader(
    cluster: LocalCluster, topics: ChaosTopics, log: FaultLog, *, isolate_s: float = 35.0, topic: str | None = None
) -> None:
    """Cut the leader of ``topic`` (default the third-party topic) partition 0 off from its
    followers' replication traffic for ``isolate_s`` seconds
    (:meth:`~bridge_devtools.broker.LocalCluster.isolate_replication`), restore it, wait until
    all in sync.

    The node keeps heartbeating to the controller, so it is not fenced and keeps leading its
    partitions: records appended to them meanwhile wait for their ``acks=all`` until the
    followers leave the ISR (``replica.lag.time.max.ms``, 30 s by default, checked every 15 s)
    or come back. Needs a cluster started attached (the proxies live in this process).

    What it does to the bridge without transactions (traced with the platform's 15 s gaps and
    ``isolate_s`` = 35): aiokafka keeps one produce request in flight per broker, so each replica
    appends to the isolated leader only the records of its first request after the isolation; the
    later ones wait behind it and the write-delay bound refuses them once they are sent. That
    first request times out after 30 s (the producer's request timeout), the publish counts as
    failed and the producer is replaced (``OutOfOrderSequenceNumber``); the delivery's third try
    (≈ 34 s after its first) then finds a free producer and appends a second copy, and both become
    committed when the followers come back (or the ISR shrinks): about one duplicated event per
    replica, unless the ISR shrinks (30-45 s after the isolation) before the third try.
    """
    topic = topic or topics.by_kind[THIRD_PARTY_CREATED]
    node = await leader_of(cluster, topic)
    led = sorted(
        f"{t.rsplit('.', 1)[-1]}[{p}]"
        for (t, p), (leader, _) in (await describe(cluster, topics.all)).items()
        if leader == node
    )
    cluster.isolate_replication(node)
    log.note(f"replication of node {node} isolated (leader of {', '.join(led)})")
    try:
        await asyncio.sleep(isolate_s)
        with contextlib.suppress(Exception):
            state = await describe(cluster, topics.all)
            shrunk = sorted(f"{t.rsplit('.', 1)[-1]}[{p}]" for (t, p), (_, isr) in state.items() if isr == [node])
            log.note(f"before restore, ISR = [{node}] alone on: {', '.join(shrunk) or 'none'}")
    finally:
        cluster.restore_replication(node)
    log.note(f"replication of node {node} restored")
    await wait_in_sync(cluster, topics.all)
    log.note("all in sync")


async def rolling_restart(cluster: LocalCluster, topics: ChaosTopics, log: FaultLog) -> None:
    """Each node in turn: graceful stop, start, wait until all in sync."""
    for node in sorted(cluster.nodes):
        await asyncio.to_thread(cluster.stop, node)
        log.note(f"node {node} stopped")
        await asyncio.to_thread(cluster.start, node)
        log.note(f"node {node} started")
        await wait_in_sync(cluster, topics.all)
        log.note("all in sync")


async def kill_follower(cluster: LocalCluster, topics: ChaosTopics, log: FaultLog, *, down_s: float = 8.0) -> None:
    """SIGKILL a node that leads no partition of ``topics`` (else: one not leading the
    third-party topic's partition 0), start it again after ``down_s``."""
    state = await describe(cluster, topics.all)
    leaders = {leader for leader, _ in state.values()}
    idle = [n for n in sorted(cluster.nodes) if n not in leaders]
    if idle:
        node = idle[0]
    else:
        busy = await leader_of(cluster, topics.by_kind[THIRD_PARTY_CREATED])
        node = next(n for n in sorted(cluster.nodes) if n != busy)
    cluster.kill(node)
    log.note(f"SIGKILL node {node} ({'leads nothing' if idle else 'a follower of 3p[0]'}; leaders {sorted(leaders)})")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(cluster.start, node)
    log.note(f"node {node} started")
    await wait_in_sync(cluster, topics.all)
    log.note("all in sync")


Fault = Callable[[LocalCluster, ChaosTopics, FaultLog], Awaitable[None]]


# -- a scenario -------------------------------------------------------------------------------------


def new_tag() -> str:
    """8 hex digits naming one run's event ids."""
    return uuid.uuid4().hex[:8]


async def run_scenario(
    cluster: LocalCluster,
    pair: BridgePair,
    fault: Fault | None,
    *,
    fault_after_s: float = 4.0,
    rate_per_s: float = 40.0,
    duration_s: float = 20.0,
    retry_gaps_s: Sequence[Gap] = ((2.0, 5.0), (2.0, 5.0), (2.0, 5.0)),
    tries: int = 4,
    rooms: int = 40,
    seed: int = 0,
    settle_quiet_s: float = 3.0,
    faults: Mapping[float, Fault] | None = None,
) -> tuple[ChaosReport, DriverLog]:
    """Drive traffic; ``fault_after_s`` into it run ``fault`` (and each of ``faults`` at its
    offset); once every delivery settled and the fault is over, wait until the topics stop
    growing, then check both isolation levels."""
    tag = new_tag()
    traffic = Traffic(pair.topics, tag=tag, rooms=make_rooms(rooms), seed=seed)
    driver = PlatformDriver(
        pair.urls,
        traffic,
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        retry_gaps_s=retry_gaps_s,
        tries=tries,
        seed=seed,
    )
    flog = FaultLog()
    planned = dict(faults or {})
    if fault is not None:
        planned[fault_after_s] = fault

    async def at(offset: float, f: Fault) -> None:
        await asyncio.sleep(offset)
        await f(cluster, pair.topics, flog)

    t0 = time.monotonic()
    fault_tasks = [asyncio.create_task(at(offset, f)) for offset, f in sorted(planned.items(), key=lambda kv: kv[0])]
    try:
        log = await driver.run()
    finally:
        await asyncio.gather(*fault_tasks)
    await settle(cluster.bootstrap_servers, pair.topics.all, quiet_s=settle_quiet_s)
    report = await check(cluster.bootstrap_servers, pair.topics, log, tag, faults=flog.events)
    report.seconds = time.monotonic() - t0
    return report, log
