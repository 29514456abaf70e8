"""``python -m bridge platform egress-ips``: each format against the fake Open API served
in-process, the exit codes, and the app secret never in the output."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml

from bridge.__main__ import main
from bridge.allowlist import AllowList
from bridge.cli_platform import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, render, run_platform
from bridge.lark_api import LarkApi
from bridge.settings import load_settings
from bridge_devtools.lark_api import FakeLarkApi

SECRET = "cli-egress-secret-5e0d"
ENTRIES = ["101.126.59.9", "101.126.59.7", "2001:db8::/32", "203.0.113.5/28"]
CIDRS = ["101.126.59.7/32", "101.126.59.9/32", "203.0.113.0/28", "2001:db8::/32"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLarkApi]:
    async with FakeLarkApi("cli_platform_test", SECRET) as api:
        api.set_outbound_ips(ENTRIES)
        yield api


@pytest.fixture
def environment(fake: FakeLarkApi, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRIDGE_LARK_VERIFICATION_TOKEN", "BRIDGE_LARK_IP_ALLOWLIST", "BRIDGE_LARK_SUBSCRIPTION_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRIDGE_LARK_APP_ID", fake.app_id)
    monkeypatch.setenv("BRIDGE_LARK_APP_SECRET", SECRET)
    monkeypatch.setenv("BRIDGE_LARK_DOMAIN", fake.url)


async def run(*argv: str) -> int:
    """``python -m bridge …`` in a thread (it runs its own event loop), the fake served meanwhile."""
    return await asyncio.to_thread(main, list(argv))


def no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


@pytest.mark.usefixtures("environment")
async def test_plain_prints_one_cidr_a_line(fake: FakeLarkApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run("platform", "egress-ips") == EXIT_OK
    out, err = capsys.readouterr()
    assert out.splitlines() == CIDRS and err == ""
    assert [c.query.get("page_size") for c in fake.api_calls("event.outbound_ip.list")] == ["50"]


@pytest.mark.usefixtures("environment")
async def test_json_carries_the_platforms_list_and_the_cidrs(
    fake: FakeLarkApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("platform", "egress-ips", "--format", "json") == EXIT_OK
    out, _ = capsys.readouterr()
    body = json.loads(out)
    assert body["ip_list"] == ENTRIES and body["cidrs"] == CIDRS and body["domain"] == fake.url
    assert dt.datetime.fromisoformat(body["fetched_at"].replace("Z", "+00:00")).tzinfo is not None


@pytest.mark.usefixtures("environment")
async def test_networkpolicy_is_a_list_of_ipblock_peers(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run("platform", "egress-ips", "--format", "networkpolicy") == EXIT_OK
    out, _ = capsys.readouterr()
    peers = yaml.safe_load(out)
    assert peers == [{"ipBlock": {"cidr": c}} for c in CIDRS]
    assert all(ipaddress.ip_network(p["ipBlock"]["cidr"], strict=True) for p in peers)
    assert out.startswith("# NetworkPolicy peers")
    # it fits a NetworkPolicy's ingress rule as is
    policy = yaml.safe_load(
        "spec:\n  ingress:\n    - from:\n" + "".join(f"        {line}\n" for line in out.splitlines())
    )
    assert policy["spec"]["ingress"][0]["from"] == peers


@pytest.mark.usefixtures("environment")
async def test_paging_and_bad_entries(fake: FakeLarkApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake.set_outbound_ips([f"198.51.100.{i}" for i in range(120)] + ["garbage"])
    assert await run("platform", "egress-ips") == EXIT_OK
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 120 and len(fake.api_calls("event.outbound_ip.list")) == 3
    assert "left out 1 entries" in err and "'garbage'" in err


@pytest.mark.usefixtures("environment")
async def test_a_refusal_exits_1_naming_the_code(
    fake: FakeLarkApi, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer_next(99991672, "Access denied. One of the following scopes is required: [event:ip_list].")
    assert await run("platform", "egress-ips") == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == "" and "SCOPE_REQUIRED" in err and "event:ip_list permission" in err
    fake.set_outbound_ips(["nothing-usable"])
    assert await run("platform", "egress-ips") == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == "" and "no usable egress address" in err
    no_secret(out, err, caplog.text)


async def test_wrong_credentials_exit_1_and_never_show_the_secret(
    fake: FakeLarkApi,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = SECRET + "-wrong"
    monkeypatch.setenv("BRIDGE_LARK_APP_ID", fake.app_id)
    monkeypatch.setenv("BRIDGE_LARK_APP_SECRET", wrong)
    monkeypatch.setenv("BRIDGE_LARK_DOMAIN", fake.url)
    assert await run("platform", "egress-ips", "--format", "json") == EXIT_REFUSED
    out, err = capsys.readouterr()
    assert "auth.tenant_access_token" in err
    for text in (out, err, caplog.text):
        assert wrong not in text and SECRET not in text


async def test_missing_credentials_or_a_bad_format_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BRIDGE_LARK_APP_ID", raising=False)
    monkeypatch.delenv("BRIDGE_LARK_APP_SECRET", raising=False)
    assert main(["platform", "egress-ips"]) == EXIT_USAGE
    assert "BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET are required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["platform", "egress-ips", "--format", "csv"])
    assert exited.value.code == EXIT_USAGE


async def test_an_unreachable_platform_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(
        {"BRIDGE_LARK_VERIFICATION_TOKEN": "t", "BRIDGE_LARK_APP_ID": "cli_x", "BRIDGE_LARK_APP_SECRET": SECRET}
    )

    def api(session: aiohttp.ClientSession) -> LarkApi:
        return LarkApi(
            session,
            app_id="cli_x",
            app_secret=SECRET,
            domain="http://127.0.0.1:9",
            call_timeout_s=0.3,
            backoff_first_s=0.01,
        )

    args = argparse.Namespace(action="egress-ips", format="plain")
    code = await asyncio.to_thread(run_platform, settings, args, api_factory=api)
    out, err = capsys.readouterr()
    assert code == EXIT_UNREACHABLE and out == "" and "unreachable" in err
    no_secret(out, err)


def test_render_of_each_format() -> None:
    listed = AllowList.parse(["10.0.0.1", "::1"])
    when = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert render(listed, ["10.0.0.1", "::1"], "plain", domain="d", fetched_at=when) == "10.0.0.1/32\n::1/128\n"
    text = render(listed, ["10.0.0.1", "::1"], "json", domain="d", fetched_at=when)
    assert json.loads(text)["fetched_at"] == "2026-12-01T08:00:00Z"
    assert "2026-12-01T08:00:00Z" in render(listed, [], "networkpolicy", domain="d", fetched_at=when)
    with pytest.raises(ValueError, match="format"):
        render(listed, [], "csv", domain="d", fetched_at=when)
