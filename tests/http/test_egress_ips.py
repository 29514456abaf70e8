"""The webhook's allow-list of the platform's egress IPs (BRIDGE_LARK_IP_ALLOWLIST), end to end:
the bridge app in aiohttp's test server, the fake Open API (bridge_devtools/lark_api.py) served
in-process, a recording sink (no Kafka). The requests come from 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.egress_ips import EgressIps, EmptyList
from bridge.lark_api import LarkApi
from bridge.metrics import Metrics, label_values
from bridge.server import runner_options
from bridge.settings import load_settings
from bridge.state import STATE
from bridge_devtools.lark_api import FakeLarkApi
from bridge_devtools.platform import Platform
from tests.http.test_webhook import PATH, ServedLikeProduction, metric_value, raw_request
from tests.support.credentials import TOKEN
from tests.support.fakes import RecordingSink
from tests.support.samples import sample_event
from tests.support.waits import wait_until

APP_SECRET = "egress-test-app-secret-7c41"
SCOPE_REQUIRED = 99991672
SCOPE_MSG = "Access denied. One of the following scopes is required: [event:ip_list]."


@pytest.fixture
async def fake() -> AsyncIterator[FakeLarkApi]:
    async with FakeLarkApi("cli_egress_test", APP_SECRET) as api:
        api.set_outbound_ips(["101.126.59.7", "127.0.0.0/30", "2001:db8::/32"])
        yield api


def fast_api(fake: FakeLarkApi) -> Callable[[aiohttp.ClientSession], LarkApi]:
    """Open API clients that give up fast (the service's own backoff retries them)."""
    return lambda session: LarkApi(
        session,
        app_id=fake.app_id,
        app_secret=fake.app_secret,
        domain=fake.url,
        call_timeout_s=0.5,
        backoff_first_s=0.01,
        backoff_max_s=0.02,
    )


def settings(fake: FakeLarkApi, mode: str, **env: str) -> Any:
    return load_settings(
        {
            "BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN,
            "BRIDGE_HTTP_MAX_BODY_BYTES": "4096",
            "BRIDGE_LARK_IP_ALLOWLIST": mode,
            "BRIDGE_LARK_APP_ID": fake.app_id,
            "BRIDGE_LARK_APP_SECRET": fake.app_secret,
            "BRIDGE_LARK_DOMAIN": fake.url,
            **env,
        }
    )


@pytest.fixture
async def make_client(fake: FakeLarkApi) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def make(sink: RecordingSink, mode: str = "enforce", *, wait: bool = True, **env: str) -> TestClient:
        s = settings(fake, mode, **env)
        app = create_app(s, sink=sink, lark_api_factory=fast_api(fake))
        egress = app[STATE].egress_ips
        assert egress is not None
        egress._backoff_first_s, egress._backoff_max_s = 0.01, 0.05  # retries within the test's time
        client = TestClient(ServedLikeProduction(app, options=runner_options(s)))
        await client.start_server()
        clients.append(client)
        if wait:
            await until(lambda: egress.allowlist is not None)
        return client

    yield make
    for c in clients:
        await c.close()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    await wait_until(condition, timeout_s=timeout_s, interval_s=0.01, message="never happened")


async def gauge(client: TestClient, name: str) -> float:
    """An unlabelled sample of /metrics."""
    for line in (await (await client.get("/metrics")).text()).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


async def post_event(client: TestClient, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    req = Platform().request(sample_event())
    return await client.post(PATH, data=req.body, headers={**req.headers, **(headers or {})})


# ---- enforce ------------------------------------------------------------------------------------


async def test_enforce_lets_listed_addresses_through_handshake_included(make_client: Any, fake: FakeLarkApi) -> None:
    sink = RecordingSink()
    client = await make_client(sink)
    assert (await client.get("/readyz")).status == 200
    resp = await post_event(client)
    assert resp.status == 200 and await resp.json() == {"msg": "success"} and len(sink.received) == 1
    resp = await client.post(PATH, data=Platform().handshake(TOKEN, "ch-1").body)
    assert resp.status == 200 and await resp.json() == {"challenge": "ch-1"}
    assert await gauge(client, "bridge_egress_ips") == 3
    assert 0 <= await gauge(client, "bridge_egress_ips_age_seconds") < 5
    assert len(fake.api_calls("event.outbound_ip.list")) == 1


async def test_enforce_answers_403_to_an_unlisted_address_handshake_included(
    make_client: Any, fake: FakeLarkApi
) -> None:
    fake.set_outbound_ips(["101.126.59.7", "2001:db8::/32"])  # 127.0.0.1 is not listed
    sink = RecordingSink()
    client = await make_client(sink)
    resp = await post_event(client)
    assert resp.status == 403 and await resp.json() == {"msg": "forbidden"}
    assert resp.headers["Content-Type"].startswith("application/json")
    resp = await client.post(PATH, data=Platform().handshake(TOKEN, "ch-1").body)
    assert resp.status == 403 and sink.received == []
    assert await metric_value(client, "bridge_unlisted_requests_total", mode="enforce") == 2
    assert await metric_value(client, "bridge_requests_total", outcome="forbidden", status="403") == 2
    assert (await client.get("/healthz")).status == 200  # only the webhook is checked
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("declared", [4000, 50_000_000])
async def test_enforce_answers_403_before_reading_any_body(make_client: Any, fake: FakeLarkApi, declared: int) -> None:
    """Headers and one byte of a large (even over-limit) body: the 403 comes at once, while the
    body is still owed — nothing of it was waited for, held or counted."""
    fake.set_outbound_ips(["101.126.59.7"])
    client = await make_client(RecordingSink())
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await raw_request(client, head.encode(), b"{")
    status_line = await asyncio.wait_for(reader.readline(), 2)
    assert status_line.startswith(b"HTTP/1.1 403"), status_line  # not 413, not 408: first of all
    assert loop.time() - started < 1.0
    assert client.app[STATE].body_bytes_in_flight == 0
    writer.close()


async def test_enforce_answers_503_until_the_first_list_and_readiness_says_why(
    make_client: Any, fake: FakeLarkApi
) -> None:
    fake.answer_next(SCOPE_REQUIRED, SCOPE_MSG, n=10_000, endpoint="event.outbound_ip.list")
    sink = RecordingSink()
    client = await make_client(sink, wait=False)
    await until(lambda: len(fake.api_calls("event.outbound_ip.list")) >= 2)  # failing, retried
    resp = await post_event(client)
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    assert await resp.json() == {"msg": "temporarily unavailable, retry later"}
    resp = await client.post(PATH, data=Platform().handshake(TOKEN, "ch-1").body)
    assert resp.status == 503  # no list, no judgement: the platform retries
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["reason"] == "egress_ips_unknown"
    assert await metric_value(client, "bridge_egress_ips_refresh_failures_total", reason="SCOPE_REQUIRED") >= 2
    assert await gauge(client, "bridge_egress_ips_age_seconds") == float("inf")
    assert sink.received == []
    fake.clear_faults()  # the permission is granted in the console: no restart needed
    await until(lambda: client.app[STATE].egress_ips.allowlist is not None)
    assert (await client.get("/readyz")).status == 200
    assert (await post_event(client)).status == 200 and len(sink.received) == 1


# ---- report -------------------------------------------------------------------------------------


async def test_report_counts_unlisted_requests_and_lets_them_through(make_client: Any, fake: FakeLarkApi) -> None:
    fake.set_outbound_ips(["101.126.59.7"])
    sink = RecordingSink()
    client = await make_client(sink, "report")
    assert (await post_event(client)).status == 200
    assert (await client.post(PATH, data=Platform().handshake(TOKEN, "c").body)).status == 200
    assert len(sink.received) == 1
    assert await metric_value(client, "bridge_unlisted_requests_total", mode="report") == 2
    assert await metric_value(client, "bridge_unlisted_requests_total", mode="enforce") == 0


async def test_report_without_a_list_lets_requests_through_and_is_ready(make_client: Any, fake: FakeLarkApi) -> None:
    fake.answer_next(SCOPE_REQUIRED, SCOPE_MSG, n=10_000, endpoint="event.outbound_ip.list")
    client = await make_client(RecordingSink(), "report", wait=False)
    assert (await post_event(client)).status == 200
    assert (await client.get("/readyz")).status == 200


# ---- trusted proxy hops -------------------------------------------------------------------------


async def test_zero_hops_ignores_a_forged_forwarded_for(make_client: Any, fake: FakeLarkApi) -> None:
    fake.set_outbound_ips(["101.126.59.7"])
    client = await make_client(RecordingSink())
    assert (await post_event(client, {"X-Forwarded-For": "101.126.59.7"})).status == 403


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "status"),
    [
        ("1", "101.126.59.7", 200),
        ("1", "6.6.6.6, 101.126.59.7", 200),  # the client's own entry on the left is ignored
        ("1", "101.126.59.7, 6.6.6.6", 403),  # a forged listed entry on the left does not help
        ("1", "2001:db8::42", 200),  # IPv6 through the proxy, matched against its range
        ("1", "[2001:db8::42]:443", 200),
        ("1", "::ffff:101.126.59.7", 200),  # IPv4-mapped
        ("2", "101.126.59.7, 10.0.0.5", 200),  # our two proxies: LB then ingress
        ("2", "101.126.59.7", 403),  # fewer entries than hops: unlisted
        ("1", "", 403),
    ],
)
async def test_trusted_hops_take_the_nth_entry_from_the_right(
    make_client: Any, fake: FakeLarkApi, hops: str, forwarded_for: str, status: int
) -> None:
    fake.set_outbound_ips(["101.126.59.7", "2001:db8::/32"])
    client = await make_client(RecordingSink(), BRIDGE_HTTP_TRUSTED_PROXY_HOPS=hops)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    assert (await post_event(client, headers)).status == status


# ---- the list in the background -----------------------------------------------------------------


async def test_a_failed_refresh_keeps_the_last_good_list_and_is_logged_once_per_outage(
    fake: FakeLarkApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    service = EgressIps(
        settings(fake, "enforce"),
        metrics,
        api_factory=fast_api(fake),
        refresh_s=0.05,
        backoff_first_s=0.01,
        backoff_max_s=0.02,
    )
    await service.start()
    try:
        await until(lambda: service.allowlist is not None)
        first = service.allowlist
        assert first is not None and first.cidrs() == ["101.126.59.7/32", "127.0.0.0/30", "2001:db8::/32"]
        fake.answer_next(SCOPE_REQUIRED, SCOPE_MSG, n=6, endpoint="event.outbound_ip.list")
        fake.fail_next(4, endpoint="event.outbound_ip.list")  # 5xx, retried inside the client too
        await until(lambda: fake.faults_pending == 0)
        assert service.allowlist is first and service.not_ready_reason() is None  # still in use
        fake.set_outbound_ips(["203.0.113.0/28"])
        await until(lambda: service.allowlist is not None and service.allowlist.cidrs() == ["203.0.113.0/28"])
        assert service.allowlist.admits("203.0.113.9") and not service.allowlist.admits("101.126.59.7")
    finally:
        await service.close()
    failures = metrics.egress_ips_refresh_failures
    assert failures.labels(reason="SCOPE_REQUIRED")._value.get() >= 1
    warnings = [r for r in caplog.records if r.name == "bridge.egress_ips" and "fetch failed" in r.getMessage()]
    recovered = [r for r in caplog.records if r.name == "bridge.egress_ips" and "fetched again" in r.getMessage()]
    assert len(warnings) == 1 and len(recovered) == 1  # one outage: one line each, not per attempt
    assert "keeping the last list (3 ranges)" in warnings[0].getMessage()
    declared = label_values()["bridge_egress_ips_refresh_failures_total"]["reason"]
    for sample in next(iter(failures.collect())).samples:
        if sample.name.endswith("_total"):
            assert declared.admits(sample.labels["reason"]), sample.labels
    tokens = {c.token for c in fake.calls if c.token}
    assert APP_SECRET not in caplog.text and tokens and not any(t in caplog.text for t in tokens)


async def test_an_empty_or_unreadable_list_is_a_failure_and_bad_entries_are_left_out(
    fake: FakeLarkApi, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    service = EgressIps(settings(fake, "enforce"), metrics, api_factory=fast_api(fake))
    await service.start()
    try:
        await until(lambda: service.allowlist is not None)
        fake.set_outbound_ips(["not-an-ip", "999.1.1.1"])
        with pytest.raises(EmptyList):
            await service.refresh()
        assert len(service.allowlist or ()) == 3  # the last good list stays
        fake.set_outbound_ips(["not-an-ip", "198.51.100.0/24"])
        assert (await service.refresh()).cidrs() == ["198.51.100.0/24"]
        assert "1 of 2 entries are no address or range" in caplog.text
    finally:
        await service.close()


async def test_the_long_connection_alone_has_no_allowlist(fake: FakeLarkApi) -> None:
    s = load_settings(
        {
            "BRIDGE_LARK_SUBSCRIPTION_MODE": "long_connection",
            "BRIDGE_LARK_IP_ALLOWLIST": "enforce",
            "BRIDGE_LARK_APP_ID": fake.app_id,
            "BRIDGE_LARK_APP_SECRET": fake.app_secret,
        }
    )
    assert create_app(s, sink=RecordingSink())[STATE].egress_ips is None
