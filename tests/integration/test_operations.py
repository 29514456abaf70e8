"""Operating the bridge on a real broker: readiness follows the broker, metrics move by exact
amounts, logs hold no secrets, SIGTERM drains without losing a 200."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge_devtools.broker import free_port
from bridge_devtools.platform import Platform
from tests.support.bridges import spawn_bridge
from tests.support.credentials import KEY, TOKEN
from tests.support.kafka import read_topic
from tests.support.samples import sample_event
from tests.support.waits import wait_http_status, wait_status

pytestmark = pytest.mark.integration


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_readiness_follows_the_broker(spare_broker: Any, start_bridge: Any) -> None:
    await asyncio.to_thread(spare_broker.start, 120)
    bridge = await start_bridge(spare_broker.bootstrap_servers)
    assert (await bridge.get("/readyz"))[0] == 200
    await asyncio.to_thread(spare_broker.stop)
    await wait_status(bridge, "/readyz", 503)
    _, body = await bridge.get("/readyz")
    assert json.loads(body)["reason"] == "broker_unreachable"
    assert (await bridge.get("/healthz"))[0] == 200
    await asyncio.to_thread(spare_broker.start, 120)
    await wait_status(bridge, "/readyz", 200)


async def test_metrics_move_by_exact_amounts(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    before = samples_of((await bridge.get("/metrics"))[1])
    p = bridge.platform
    room = sample_event("vc.room.created_v1", event_id="m-room")
    third = sample_event("third_party_meeting_room_event_created", event_id="m-3p")
    unknown = sample_event("vc.room.created_v1", event_id="m-unknown")
    unknown["header"]["event_type"] = "im.chat.created_v1"
    sequence = [
        p.handshake(TOKEN, "c"),
        p.request(room),
        p.request(room),  # duplicate
        p.request(third),  # 2 records
        p.request(unknown),  # dead letter
        p.request(room, sign_key="wrong"),  # 401 signature_mismatch
        p.request(room, timestamp="1000000000"),  # 401 timestamp_stale
    ]
    statuses = [(await bridge.send(r))[0] for r in sequence]
    assert statuses == [200, 200, 200, 200, 200, 401, 401]
    after = samples_of((await bridge.get("/metrics"))[1])

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    topics = bridge.settings
    assert delta("bridge_requests_total", outcome="handshake", status="200") == 1
    assert delta("bridge_requests_total", outcome="published", status="200") == 2
    assert delta("bridge_requests_total", outcome="duplicate", status="200") == 1
    assert delta("bridge_requests_total", outcome="dead_lettered", status="200") == 1
    assert delta("bridge_requests_total", outcome="unauthorized", status="401") == 2
    assert delta("bridge_events_published_total", lark_type="vc.room.created_v1", topic=topics.topic_room_created) == 1
    assert (
        delta(
            "bridge_events_published_total",
            lark_type="third_party_meeting_room_event_created",
            topic=topics.topic_third_party_meeting_room_event,
        )
        == 2
    )
    assert delta("bridge_dead_letters_total", reason="unknown_event_type") == 1
    # Marked by this process's ack, or (when the record is read back first) by the ledger's feed.
    assert (
        delta("bridge_duplicates_suppressed_total", source="local")
        + delta("bridge_duplicates_suppressed_total", source="log")
        == 1
    )
    assert delta("bridge_auth_failures_total", reason="signature_mismatch") == 1
    assert delta("bridge_auth_failures_total", reason="timestamp_stale") == 1
    assert delta("bridge_request_duration_seconds_count", kind="handshake") == 1
    assert delta("bridge_request_duration_seconds_count", kind="event") == 6
    assert delta("bridge_broker_ack_duration_seconds_count") == 3
    assert value(after, "bridge_dedup_entries") == 3
    assert value(after, "bridge_requests_in_flight") == 0
    text = (await bridge.get("/metrics"))[1]
    assert TOKEN not in text and KEY not in text


async def test_sigterm_during_a_stream_loses_no_200_and_logs_no_secret(broker: Any, tmp_path: Any) -> None:
    port = free_port()
    prefix = f"sig-{port}"
    log_path = tmp_path / "bridge.log"
    log_file = log_path.open("w")
    proc = spawn_bridge(broker.bootstrap_servers, port, prefix, log_file)
    url = f"http://127.0.0.1:{port}"
    platform = Platform(encrypt_key=KEY)
    ok: list[str] = []
    refused: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_status(
                session,
                url + "/readyz",
                200,
                timeout_s=60,
                alive=lambda: proc.poll() is None,
                message="bridge did not start",
            )

            stop = asyncio.Event()

            async def stream(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    event_id = f"sig-{worker}-{n}"
                    n += 1
                    req = platform.request(sample_event("vc.room.created_v1", event_id=event_id))
                    try:
                        async with aiohttp.ClientSession() as s:  # a fresh connection each time
                            async with s.post(url + "/webhook/event", data=req.body, headers=req.headers) as r:
                                if r.status == 200:
                                    ok.append(event_id)
                                else:
                                    assert r.status == 503, r.status
                                    refused.append(r.status)
                    except aiohttp.ClientError:
                        refused.append(0)
                        await asyncio.sleep(0.02)

            workers = [asyncio.create_task(stream(w)) for w in range(4)]
            await asyncio.sleep(1.5)
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
            took = time.monotonic() - sent_at
            stop.set()
            await asyncio.gather(*workers)
    finally:
        if proc.poll() is None:
            proc.kill()
    log_file.close()
    output = log_path.read_text()
    assert code == 0 and took < 10, (code, took)
    assert len(ok) > 20 and refused, (len(ok), len(refused))
    msgs = await read_topic(broker.bootstrap_servers, f"{prefix}.room", expect=len(ok), timeout_s=30)
    published = {json.loads(m.value)["id"] for m in msgs}
    assert set(ok) <= published, f"answered 200 but missing: {set(ok) - published}"
    # Logs: one JSON line per request, never a secret.
    assert TOKEN not in output and KEY not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) >= len(ok)
    done = next(line for line in requests if line["outcome"] == "published")
    assert {"request_id", "status", "latency_ms", "lark_type", "event_id", "tenant_key", "records"} <= set(done)
    assert done["records"][0]["topic"] == f"{prefix}.room"
    # A clean start on fresh topics, a stream and a graceful stop: nothing worth an ERROR line.
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
    assert all(not line.startswith("Traceback") for line in output.splitlines())
