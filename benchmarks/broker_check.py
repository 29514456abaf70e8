"""The benchmark's broker-side check: every request answered 200 has exactly its records in Kafka.

After the services ran, each publishing service's topics are read back from the beginning and
each record is matched to the request that sent it — event ids encode the run, the step and the
request's index (``benchmarks.traffic``), and the generator wrote every request's status — so a
200 without its records, a record count other than the request's fan-out, a record published for a
request that was not answered 200, or a record written twice is found and counted, per step.

How a record names its request differs by service (:class:`Checked`):

* ``bridge`` — the CloudEvents envelope's ``larkeventid``; duplicates by envelope ``id``; one record
  per room (the fan-out); nothing may be dead-lettered;
* ``passthrough`` — the raw encrypted body: decrypted with the run's encrypt key to read
  ``header.event_id`` / ``uuid``; one record per request;
* ``recipe`` — the SDK's marshalled event (``header.event_id`` / ``uuid``); one record per room.
"""

from __future__ import annotations

import array
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from benchmarks.results import ServiceResult
from benchmarks.traffic import parse_event_id


class _Envelope(msgspec.Struct):
    id: str
    larkeventid: str | None = None


class _Header(msgspec.Struct):
    event_id: str | None = None


class _Event(msgspec.Struct):
    header: _Header | None = None
    uuid: str | None = None


class _Encrypted(msgspec.Struct):
    encrypt: str


_envelope = msgspec.json.Decoder(_Envelope)
_event = msgspec.json.Decoder(_Event)
_encrypted = msgspec.json.Decoder(_Encrypted)


def _event_event_id(event: _Event) -> str | None:
    return event.header.event_id if event.header is not None and event.header.event_id else event.uuid


def bridge_record(key: bytes | None, value: bytes) -> tuple[str | None, str]:
    """``(event id, record id)`` of a bridge envelope record."""
    env = _envelope.decode(value)
    return env.larkeventid, env.id


def recipe_record(key: bytes | None, value: bytes) -> tuple[str | None, str]:
    """``(event id, record id)`` of a recipe record: the SDK's event JSON, one per room key."""
    event_id = _event_event_id(_event.decode(value))
    return event_id, f"{event_id}/{(key or b'').decode()}"


def passthrough_record(encrypt_key: str) -> Callable[[bytes | None, bytes], tuple[str | None, str]]:
    """The reader of passthrough records: the raw request body, decrypted with ``encrypt_key``."""
    from bridge.verify import decrypt

    def read(key: bytes | None, value: bytes) -> tuple[str | None, str]:
        event_id = _event_event_id(_event.decode(decrypt(_encrypted.decode(value).encrypt, encrypt_key)))
        return event_id, event_id or ""

    return read


@dataclass(frozen=True)
class Checked:
    """Publishing services that share ``topics`` (the bridge and the bridge with a full dedup
    window), how a record names its request (``read(key, value) -> (event id, record id)``),
    whether a request's records are its fan-out (else one per request), and the dead-letter topic
    (records there are counted, not matched)."""

    services: tuple[str, ...]
    topics: tuple[str, ...]
    read: Callable[[bytes | None, bytes], tuple[str | None, str]]
    fanout: bool = True
    dead_letter_topic: str | None = None


async def check(
    bootstrap_servers: str,
    run_tag: str,
    checked: Iterable[Checked],
    results: Mapping[str, ServiceResult],
    statuses: Mapping[int, array.array[int]],
    fanout: Mapping[int, list[int]],
) -> dict[str, Any]:
    """Read every record of each checked service's topics and match it to its request.

    ``statuses[step][i]``: the HTTP status request ``i`` of load step ``step`` got; ``fanout``:
    the records each request of a step should have. Returns totals over all services, and per
    service (``services``) and per step (``steps``); ``all_good`` is true when no service has a
    missing, extra, miscounted or duplicated record (and the bridge no dead letter).
    """
    per_service = {}
    all_steps: list[dict[str, Any]] = []
    for c in checked:
        measured = [results[name] for name in c.services if name in results]
        if not measured:
            continue
        summary = await _check_one(bootstrap_servers, run_tag, c, measured, statuses, fanout)
        all_steps += summary.pop("steps")
        per_service["+".join(r.name for r in measured)] = summary
    totals = {
        k: sum(s[k] for s in per_service.values())
        for k in (
            "records_total",
            "dead_letters",
            "foreign",
            "duplicate_record_ids",
            "ok_total",
            "ids_total",
            "records_in_kafka_total",
            "ok_missing",
            "fanout_mismatch",
            "published_not_ok",
        )
    }
    return {
        **totals,
        "all_good": all(s["all_good"] for s in per_service.values()),
        "services": per_service,
        "steps": all_steps,
    }


async def _check_one(
    bootstrap_servers: str,
    run_tag: str,
    c: Checked,
    measured: list[ServiceResult],
    statuses: Mapping[int, array.array[int]],
    fanout: Mapping[int, list[int]],
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        isolation_level="read_committed",  # what consumers read (with BRIDGE_KAFKA_TRANSACTIONS: not the aborted)
    )
    await consumer.start()
    per_request: dict[tuple[int, int], int] = defaultdict(int)  # (step, index) -> records
    record_ids: set[str] = set()
    total = foreign = dead = 0
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(t, p) for t in c.topics for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        deadline = time.monotonic() + 300
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
            for tp, msgs in batch.items():
                for m in msgs:
                    total += 1
                    if tp.topic == c.dead_letter_topic:
                        dead += 1
                        continue
                    event_id, record_id = c.read(m.key, m.value)
                    record_ids.add(record_id)
                    parsed = parse_event_id(event_id or "")
                    if parsed is None or parsed[0] != run_tag:
                        foreign += 1
                        continue
                    per_request[(parsed[1], parsed[2])] += 1
            for tp in list(remaining):  # the position, not the last record: it also counts transaction markers
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    steps = []
    for res, s in ((r, s) for r in measured for s in r.steps):
        entry: dict[str, Any] = {
            "service": res.name,
            "step": s.step,
            "phase": s.phase,
            "tool": s.tool,
            "rate": s.rate,
            "requests": s.requests,
            "ok": s.ok,
        }
        in_kafka = {i for (st, i) in per_request if st == s.step}
        entry["ids_in_kafka"] = len(in_kafka)
        entry["records_in_kafka"] = sum(per_request[(s.step, i)] for i in in_kafka)
        step_statuses = statuses.get(s.step)
        if step_statuses is not None:  # exact, per request
            ok_idx = {i for i, v in enumerate(step_statuses) if v == 200}
            fan = fanout[s.step] if c.fanout else [1] * len(step_statuses)
            entry["ok_missing"] = len(ok_idx - in_kafka)
            entry["fanout_mismatch"] = sum(1 for i in ok_idx & in_kafka if per_request[(s.step, i)] != fan[i])
            entry["published_not_ok"] = len(in_kafka - ok_idx)
            entry["records_expected_ok"] = sum(fan[i] for i in ok_idx)
        else:  # vegeta step: by count (vegeta does not say which request got which answer)
            expected = s.records_expected if c.fanout else s.requests
            entry["ok_missing"] = max(0, s.ok - len(in_kafka))
            entry["fanout_mismatch"] = 0 if s.ok != s.requests or entry["records_in_kafka"] == expected else 1
            entry["published_not_ok"] = max(0, len(in_kafka) - s.ok)
            entry["records_expected_ok"] = expected if s.ok == s.requests else None
        entry["good"] = entry["ok_missing"] == 0 and entry["fanout_mismatch"] == 0
        steps.append(entry)
    duplicates = (total - dead) - len(record_ids)
    return {
        "records_total": total,
        "dead_letters": dead,
        "foreign": foreign,
        "duplicate_record_ids": duplicates,
        "ok_total": sum(x["ok"] for x in steps),
        "ids_total": sum(x["ids_in_kafka"] for x in steps),
        "records_in_kafka_total": sum(x["records_in_kafka"] for x in steps),
        "ok_missing": sum(x["ok_missing"] for x in steps),
        "fanout_mismatch": sum(x["fanout_mismatch"] for x in steps),
        "published_not_ok": sum(x["published_not_ok"] for x in steps),
        "all_good": all(x["good"] for x in steps) and dead == 0 and foreign == 0 and duplicates == 0,
        "steps": steps,
    }
