"""The Open API client (bridge/lark_api.py) against the fake Open API (bridge_devtools/lark_api.py).

Time is virtual: the client and the fake share a :class:`VirtualClock` whose ``sleep`` moves the
clock instead of waiting, so token expiry, rate-limit windows, backoff and the per-call bound
are exercised without sleeping for real. No broker is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Sequence

import aiohttp
import msgspec
import pytest
from aiohttp import web

from bridge.lark_api import (
    REFRESH_EARLY_S,
    ROOM_LIST,
    ErrorCode,
    LarkApi,
    LarkApiError,
    LarkAuthError,
    LarkRateLimited,
    LarkServerError,
    LarkTransportError,
    Limit,
    RateLimiter,
    Room,
    ScopeType,
    TokenBucket,
)
from bridge.settings import load_settings
from bridge_devtools.lark_api import DOC_RESERVE_CONFIG, LIMITS, FakeLarkApi

SECRET = "s3cret-of-the-fake-app"


class VirtualClock:
    """Monotonic seconds that move only when someone sleeps."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def fake(clock: VirtualClock) -> AsyncIterator[FakeLarkApi]:
    async with FakeLarkApi("cli_test_app", SECRET, clock=clock) as api:
        yield api


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(session: aiohttp.ClientSession, fake: FakeLarkApi, clock: VirtualClock, **options: object) -> LarkApi:
    return LarkApi(
        session,
        app_id=fake.app_id,
        app_secret=options.pop("app_secret", fake.app_secret),  # type: ignore[arg-type]
        domain=str(options.pop("domain", fake.url)),
        clock=clock,
        sleep=clock.sleep,
        **options,  # type: ignore[arg-type]
    )


def token_requests(fake: FakeLarkApi) -> int:
    return len(fake.api_calls("auth.tenant_access_token"))


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most events in any half-open window ``[t, t + window_s)`` (sliding)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---- the token ---------------------------------------------------------------------------------


async def test_token_is_cached_and_fetched_again_before_it_expires(fake, session, clock) -> None:
    api = client(session, fake, clock)
    for _ in range(5):
        await api.get_room_level("0")
    assert token_requests(fake) == 1
    first = fake.api_calls()[0].token
    assert first is not None and first.startswith("t-")

    clock.advance(7200 - REFRESH_EARLY_S - 1)  # still inside the token's early-refresh margin
    await api.get_room_level("0")
    assert token_requests(fake) == 1 and fake.api_calls()[-1].token == first

    clock.advance(2)  # now past expiry − 5 min: fetched again before it runs out
    await api.get_room_level("0")
    assert token_requests(fake) == 2
    second = fake.api_calls()[-1].token
    assert second != first
    # No call was ever refused for an expired token: the refresh came first.
    assert all(c.status == 200 for c in fake.calls)


async def test_concurrent_callers_share_one_token_fetch(fake, session, clock) -> None:
    api = client(session, fake, clock)
    await asyncio.gather(*(api.get_room_level("0") for _ in range(30)))
    assert token_requests(fake) == 1
    clock.advance(7200)
    await asyncio.gather(*(api.get_room_level("0") for _ in range(30)))
    assert token_requests(fake) == 2
    assert len({c.token for c in fake.api_calls()}) == 2


async def test_an_invalid_token_answer_fetches_a_new_token_once_and_retries(fake, session, clock) -> None:
    api = client(session, fake, clock)
    await api.get_room_level("0")
    fake.expire_tokens()  # the platform no longer knows the cached token
    level = await api.get_room_level("0")
    assert level.room_level_id == fake.tenant_level_id
    codes = [(c.endpoint, c.code) for c in fake.calls]
    assert codes == [
        ("auth.tenant_access_token", 0),
        ("vc.room_level.get", 0),
        ("vc.room_level.get", ErrorCode.INVALID_ACCESS_TOKEN),
        ("auth.tenant_access_token", 0),
        ("vc.room_level.get", 0),
    ]


async def test_many_callers_with_an_invalid_token_share_one_refresh(fake, session, clock) -> None:
    api = client(session, fake, clock)
    await api.get_room_level("0")
    fake.expire_tokens()
    await asyncio.gather(*(api.get_room_level("0") for _ in range(20)))
    assert token_requests(fake) == 2


async def test_a_token_still_invalid_after_one_refresh_is_an_auth_error(fake, session, clock) -> None:
    api = client(session, fake, clock)
    fake.answer_next(99991663, "Invalid access token for authorization.", n=2)
    with pytest.raises(LarkAuthError) as caught:
        await api.get_room_level("0")
    assert caught.value.name == "INVALID_ACCESS_TOKEN" and caught.value.code == 99991663
    assert token_requests(fake) == 2 and len(fake.api_calls()) == 2  # one refresh, one retry


async def test_wrong_credentials_are_an_auth_error_at_once(fake, session, clock) -> None:
    api = client(session, fake, clock, app_secret="not-the-secret")
    with pytest.raises(LarkAuthError) as caught:
        await api.get_room_level("0")
    err = caught.value
    assert (err.name, err.code, err.http_status, err.endpoint) == (
        "APP_UNAUTHORIZED",
        10014,
        400,
        "auth.tenant_access_token",
    )
    assert err.log_id == fake.calls[-1].log_id
    assert token_requests(fake) == 1 and not fake.api_calls()  # not retried


# ---- paging ------------------------------------------------------------------------------------


async def test_all_rooms_of_2000_in_50_levels(fake, session, clock) -> None:
    fake.populate(rooms=2000, levels=50)
    api = client(session, fake, clock)
    levels = [lv async for lv in api.walk_room_levels()]
    assert len(levels) == 50 and {lv.room_level_id for lv in levels} == set(fake.levels) - {fake.tenant_level_id}
    rooms = [r async for r in api.all_rooms()]
    assert len(rooms) == 2000
    assert {r.room_id for r in rooms} == set(fake.rooms)
    assert all(r == msgspec.json.decode(json.dumps(fake.rooms[r.room_id]), type=Room, strict=False) for r in rooms)
    assert not [c for c in fake.calls if c.status != 200]


async def test_pages_follow_page_token_and_has_more(fake, session, clock) -> None:
    level = fake.add_level("big")["room_level_id"]
    for i in range(250):
        fake.add_room(f"r{i}", level)
    api = client(session, fake, clock)
    names = [r.name async for r in api.list_rooms(room_level_id=level)]
    assert names == [f"r{i}" for i in range(250)]
    calls = fake.api_calls("vc.room.list")
    assert [c.query.get("page_token") for c in calls] == [None, "100", "200"]
    assert {c.query["page_size"] for c in calls} == {"100"}
    last = await api.list_rooms_page(room_level_id=level, page_token="200")
    assert not last.has_more and last.page_token is None and len(last.rooms or ()) == 50
    with pytest.raises(ValueError, match="page_size"):
        await api.list_rooms_page(page_size=101)


async def test_outbound_ips_follow_page_token_and_has_more(fake, session, clock) -> None:
    entries = [f"198.51.100.{i}" for i in range(120)] + ["2001:db8::/32"]
    fake.set_outbound_ips(entries)
    api = client(session, fake, clock)
    assert [e async for e in api.list_outbound_ips()] == entries
    calls = fake.api_calls("event.outbound_ip.list")
    assert [c.query.get("page_token") for c in calls] == [None, "50", "100"]
    assert {c.query["page_size"] for c in calls} == {"50"} and {c.status for c in calls} == {200}
    last = await api.list_outbound_ips_page(page_token="100")
    assert not last.has_more and last.page_token is None and last.ip_list == entries[100:]
    small = [e async for e in api.list_outbound_ips(page_size=7)]
    assert small == entries
    with pytest.raises(ValueError, match="page_size"):
        await api.list_outbound_ips_page(page_size=51)


async def test_outbound_ip_errors_are_named(fake, session, clock) -> None:
    api = client(session, fake, clock)
    with pytest.raises(LarkApiError) as caught:
        await api.list_outbound_ips_page(page_token="not-an-offset")
    assert (caught.value.name, caught.value.http_status) == ("EVENT_PARAM_INVALID", 400)
    fake.answer_next(99991672, "Access denied. One of the following scopes is required: [event:ip_list].")
    with pytest.raises(LarkApiError) as caught:
        [e async for e in api.list_outbound_ips()]
    assert caught.value.name == "SCOPE_REQUIRED" and caught.value.endpoint == "event.outbound_ip.list"
    fake.set_outbound_ips([])
    assert [e async for e in api.list_outbound_ips()] == []


async def test_state_changes_show_in_the_next_listing(fake, session, clock) -> None:
    a = fake.add_room("a")["room_id"]
    b = fake.add_room("b")["room_id"]
    api = client(session, fake, clock)
    assert [r.name async for r in api.all_rooms()] == ["a", "b"]
    fake.update_room(a, name="a2", capacity=3)
    fake.remove_room(b)
    c = fake.add_room("c")["room_id"]
    rooms = [r async for r in api.all_rooms()]
    assert [(r.room_id, r.name) for r in rooms] == [(a, "a2"), (c, "c")] and rooms[0].capacity == 3


async def test_single_room_level_and_reserve_config(fake, session, clock) -> None:
    level = fake.add_level("HQ", custom_group_id="10000")
    room = fake.add_room("测试会议室", level["room_level_id"])
    fake.set_reserve_config(
        room["room_id"],
        DOC_RESERVE_CONFIG,
    )
    api = client(session, fake, clock)
    got = await api.get_room(room["room_id"])
    assert got.name == "测试会议室" and got.room_level_id == level["room_level_id"]
    assert got.room_status is not None and got.room_status.disable_end_time == 0  # "0" → 0
    assert (await api.get_room_level(level["room_level_id"])).custom_group_id == "10000"
    config = await api.get_reserve_config(room["room_id"], ScopeType.ROOM)
    assert config.time_config is not None and config.time_config.opening_hour == 27900
    assert config.approve_config is not None and config.approve_config.meeting_duration == 3.0
    assert config.reserve_scope_config is not None
    assert config.reserve_scope_config.allow_depts is not None
    assert config.reserve_scope_config.allow_depts[0].department_id == "od-47d8b5xxxcc5f61a"
    with pytest.raises(LarkApiError) as caught:
        await api.get_reserve_config(room["room_id"], ScopeType.LEVEL)  # the wrong scope type
    assert caught.value.name == "INVALID_SCOPE_ID" and caught.value.http_status == 400


# ---- rate limits -------------------------------------------------------------------------------


def test_token_bucket_for_a_limit_never_exceeds_it_in_any_window() -> None:
    for limit in (Limit(1000, 60.0), Limit(50, 1.0), Limit(100, 60.0)):
        bucket, now, times = TokenBucket.for_limit(limit, 0.0), 0.0, []
        for _ in range(limit.calls * 4):
            now += bucket.wait_s(now)
            bucket.take(now)
            times.append(now)
        assert max_in_window(times, limit.per_s) <= limit.calls, limit
        # ... and uses most of it: the sustained rate is 90 % of the limit.
        assert (len(times) - 1) / (times[-1] - times[0]) >= 0.85 * limit.calls / limit.per_s


async def test_rate_limiter_holds_both_limits_of_the_room_list(clock) -> None:
    limiter = RateLimiter(ROOM_LIST.limits, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(3000):
        assert await limiter.acquire(deadline=clock() + 30)
        times.append(clock())
    assert max_in_window(times, 60.0) <= 1000
    assert max_in_window(times, 1.0) <= 50
    assert times[-1] - times[0] < 3000 / 14  # ≈ 15/s sustained, not slower
    assert clock.sleeps  # it waited, on the virtual clock only


async def test_the_client_keeps_to_the_documented_limits_of_the_fake(fake, session, clock) -> None:
    room = fake.add_room("busy")["room_id"]
    api = client(session, fake, clock)
    # One after another, so that the fake's clock at each request is the clock at which the
    # client took its turn: 1,100 calls, past the per-minute limit.
    for _ in range(1100):
        await api.get_room(room)
    calls = fake.api_calls("vc.room.get")
    assert len(calls) == 1100 and {c.status for c in calls} == {200}  # never refused
    times = [c.at for c in calls]
    for calls_per, window in LIMITS["vc.room.get"]:
        assert max_in_window(times, window) <= calls_per


async def test_a_rate_limit_answer_is_waited_out_and_retried(fake, session, clock) -> None:
    api = client(session, fake, clock)
    await api.get_room_level("0")
    fake.rate_limit_next(3, reset_s=2)
    before = clock()
    level = await api.get_room_level("0")
    assert level.room_level_id == fake.tenant_level_id
    statuses = [(c.status, c.code) for c in fake.api_calls()[1:]]
    assert statuses == [(429, 99991400)] * 3 + [(200, 0)]
    assert clock() - before >= 6 and clock.sleeps[-3:] == [2.0, 2.0, 2.0]  # x-ogw-ratelimit-reset


async def test_an_old_style_rate_limit_answer_without_reset_is_retried(fake, session, clock) -> None:
    api = client(session, fake, clock)
    fake.answer_next(99991400, "request trigger frequency limit", status=400)
    assert (await api.get_room_level("0")).name == "tenant"
    assert [c.code for c in fake.api_calls()] == [99991400, 0]


async def test_rate_limited_past_the_bound_is_surfaced_by_name(fake, session, clock) -> None:
    api = client(session, fake, clock, call_timeout_s=30.0)
    fake.rate_limit_next(1000, reset_s=10)
    start = clock()
    with pytest.raises(LarkRateLimited) as caught:
        await api.get_room_level("0")
    err = caught.value
    assert (err.name, err.code, err.http_status, err.reset_s) == ("RATE_LIMITED", 99991400, 429, 10.0)
    assert err.log_id == fake.calls[-1].log_id
    assert clock() - start <= 30 and len(fake.api_calls()) == 3  # tries at 0, 10 and 20 s


# ---- 5xx and transport errors ------------------------------------------------------------------


async def test_a_5xx_is_retried_with_backoff(fake, session, clock) -> None:
    api = client(session, fake, clock)
    fake.fail_next(2)
    assert (await api.get_room_level("0")).name == "tenant"
    assert [c.status for c in fake.api_calls()] == [500, 500, 200]
    first, second = clock.sleeps[-2:]
    assert 0.5 <= first < 0.7 and 1.0 <= second < 1.2  # 0.5 s doubling, + ≤ 1/8 s of jitter


async def test_a_5xx_past_the_bound_is_surfaced_by_name(fake, session, clock) -> None:
    api = client(session, fake, clock, call_timeout_s=20.0)
    fake.fail_next(1000, status=503, code=121001, msg="internal error")
    start = clock()
    with pytest.raises(LarkServerError) as caught:
        await api.get_room_level("0")
    err = caught.value
    assert (err.name, err.code, err.msg, err.http_status) == ("INTERNAL_ERROR", 121001, "internal error", 503)
    assert err.log_id == fake.calls[-1].log_id
    assert clock() - start <= 20 and 4 <= len(fake.api_calls()) <= 8
    assert "vc.room_level.get: INTERNAL_ERROR (code 121001, HTTP 503, log id " in str(err)


async def test_an_answer_that_is_not_json_is_retried_then_named(clock) -> None:
    hits = []

    async def gateway(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path.endswith("/internal"):
            return web.json_response({"code": 0, "msg": "ok", "tenant_access_token": "t-x", "expire": 7200})
        return web.Response(status=502, text="<html>bad gateway</html>", headers={"X-Tt-Logid": "LOG502"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gateway)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as s:
            api = LarkApi(
                s,
                app_id="cli_x",
                app_secret="y",
                domain=f"http://127.0.0.1:{runner.addresses[0][1]}",
                clock=clock,
                sleep=clock.sleep,
                call_timeout_s=5.0,
            )
            with pytest.raises(LarkServerError) as caught:
                await api.get_room("omm_1")
    finally:
        await runner.cleanup()
    assert (caught.value.name, caught.value.http_status, caught.value.log_id) == ("http_502", 502, "LOG502")
    assert len(hits) > 2


async def test_a_network_error_is_retried_then_named(session, clock) -> None:
    api = LarkApi(
        session,
        app_id="cli_x",
        app_secret=SECRET,
        domain="http://127.0.0.1:9",  # discard: nothing listens
        clock=clock,
        sleep=clock.sleep,
        call_timeout_s=5.0,
    )
    with pytest.raises(LarkTransportError) as caught:
        await api.get_room("omm_1")
    assert caught.value.name.startswith("transport_") and caught.value.code is None
    assert len(clock.sleeps) >= 2


# ---- errors ------------------------------------------------------------------------------------


async def test_errors_carry_code_msg_status_and_log_id_and_are_not_retried(fake, session, clock) -> None:
    api = client(session, fake, clock)
    with pytest.raises(LarkApiError) as caught:
        await api.get_room("omm_unknown")
    err = caught.value
    assert type(err) is LarkApiError
    assert (err.name, err.code, err.msg, err.http_status, err.endpoint) == (
        "DATA_NOT_EXIST",
        ErrorCode.DATA_NOT_EXIST,
        "data not exist",
        404,
        "vc.room.get",
    )
    assert err.log_id == fake.calls[-1].log_id and len(fake.api_calls()) == 1

    fake.answer_next(1234567, "something new", status=400)
    with pytest.raises(LarkApiError) as caught:
        await api.get_room_level("0")
    assert (caught.value.name, caught.value.code) == ("code_1234567", 1234567)


async def test_an_answer_that_does_not_fit_the_model_is_named_and_not_retried(fake, session, clock) -> None:
    room = fake.add_room("odd", capacity="many")["room_id"]
    api = client(session, fake, clock)
    with pytest.raises(LarkApiError) as caught:
        await api.get_room(room)
    assert type(caught.value) is LarkApiError and caught.value.name == "bad_data"
    assert "capacity" in caught.value.msg and caught.value.log_id == fake.calls[-1].log_id
    assert len(fake.api_calls()) == 1


async def test_callers_needing_a_token_during_an_outage_share_one_fetch_and_its_error(fake, session, clock) -> None:
    api = client(session, fake, clock, call_timeout_s=10.0)
    fake.answer_next(121001, "internal error", status=500, endpoint="auth.tenant_access_token", n=1000)
    results = await asyncio.gather(*(api.get_room_level("0") for _ in range(5)), return_exceptions=True)
    # One fetch, retried with backoff until the first caller's bound; every caller gets its error
    # (no caller starts a fetch of its own, nor retries the failed one again).
    assert all(r is results[0] for r in results) and isinstance(results[0], LarkServerError)
    assert results[0].endpoint == "auth.tenant_access_token" and results[0].name == "INTERNAL_ERROR"
    assert len(fake.api_calls("auth.tenant_access_token")) == len(clock.sleeps) + 1 <= 6
    assert not fake.api_calls()


async def test_secret_and_token_never_appear_in_errors_logs_or_reprs(fake, session, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api = client(session, fake, clock, call_timeout_s=10.0)
    seen: list[BaseException] = []

    async def collect(awaitable: object) -> None:
        try:
            await awaitable  # type: ignore[misc]
        except LarkApiError as exc:
            seen.append(exc)

    await api.get_room_level("0")
    fake.expire_tokens()
    await api.get_room_level("0")  # invalid-token answer, refresh
    fake.fail_next(1000)
    await collect(api.get_room_level("0"))
    fake.clear_faults()  # the outage ends
    fake.rate_limit_next(1000, reset_s=4)
    await collect(api.get_room_level("0"))
    fake.clear_faults()
    # The platform's msg echoing the secret and the token (it never should) is masked too.
    current = fake.api_calls()[-1].token
    fake.answer_next(1234567, f"bad {SECRET} and {current}", status=400)
    await collect(api.get_room_level("0"))
    await collect(client(session, fake, clock, app_secret=SECRET + "-wrong").get_room_level("0"))
    await collect(client(session, fake, clock, domain="http://127.0.0.1:9").get_room_level("0"))
    assert len(seen) == 5

    tokens = set(fake.tokens) | {c.token for c in fake.calls if c.token}
    assert tokens and SECRET
    texts = [repr(api), caplog.text]
    for exc in seen:
        texts += [str(exc), repr(exc), *map(str, exc.args), "".join(traceback.format_exception(exc))]
        texts += [repr(vars(exc))]
    texts += [repr(getattr(api, "_token", None))]
    blob = "\n".join(texts)
    assert SECRET not in blob
    for token in tokens:
        assert token not in blob
    assert "***" in blob  # the echoed msg was masked, not dropped


def test_from_settings_reads_the_app_credentials() -> None:
    settings = load_settings(
        {
            "BRIDGE_LARK_SUBSCRIPTION_MODE": "long_connection",
            "BRIDGE_LARK_APP_ID": "cli_a1",
            "BRIDGE_LARK_APP_SECRET": SECRET,
            "BRIDGE_LARK_DOMAIN": "https://open.larksuite.com",
        }
    )
    api = LarkApi.from_settings(None, settings)  # type: ignore[arg-type]
    assert repr(api) == "LarkApi(app_id='cli_a1', domain='https://open.larksuite.com')"
    without = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": "t"})
    with pytest.raises(ValueError, match="BRIDGE_LARK_APP_ID"):
        LarkApi.from_settings(None, without)  # type: ignore[arg-type]


async def test_paging_stops_at_the_last_page_and_refuses_a_token_that_repeats() -> None:
    from bridge.lark_api import ROOM_LIST, _paged

    pages = {None: (["a", "b"], True, "p2"), "p2": (["c"], True, "p3"), "p3": (None, False, "ignored")}
    asked: list[str | None] = []

    async def page(token: str | None) -> tuple[list[str] | None, bool, str | None]:
        asked.append(token)
        return pages[token]

    assert [x async for x in _paged(ROOM_LIST, page)] == ["a", "b", "c"]
    assert asked == [None, "p2", "p3"]
    pages["p2"] = (["c"], True, "p2")  # the platform hands back the same token
    with pytest.raises(LarkApiError) as caught:
        [x async for x in _paged(ROOM_LIST, page)]
    assert caught.value.name == "page_token_loop"
