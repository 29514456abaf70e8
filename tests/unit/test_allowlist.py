"""The allow-list's matching and the client address behind trusted proxies (bridge/allowlist.py):
pure functions, one table per rule."""

from __future__ import annotations

import ipaddress

import pytest

from bridge.allowlist import MEMO_ENTRIES, AllowList, client_address, parse_address, parse_network

PLATFORM = AllowList.parse(["101.126.59.7", "203.0.113.0/28", "2001:db8:feed::/48", "2001:db8::1"])


@pytest.mark.parametrize(
    ("address", "admitted"),
    [
        ("101.126.59.7", True),
        ("101.126.59.8", False),
        ("203.0.113.0", True),
        ("203.0.113.15", True),
        ("203.0.113.16", False),
        ("::ffff:101.126.59.7", True),  # IPv4-mapped IPv6: a dual-stack socket's IPv4 peer
        ("::ffff:203.0.113.9", True),
        ("::ffff:203.0.113.99", False),
        ("2001:db8:feed::1", True),
        ("2001:db8:feed:ffff:ffff:ffff:ffff:ffff", True),
        ("2001:db8:fee0::1", False),
        ("2001:db8::1", True),
        ("2001:db8::2", False),
        ("[2001:db8::1]", True),
        ("[2001:db8::1]:443", True),
        ("101.126.59.7:51234", True),
        ("  101.126.59.7 ", True),
        ("::101.126.59.7", False),  # IPv4-compatible (deprecated), not mapped: not the IPv4 address
        ("unknown", False),
        ("_hidden", False),
        ("example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_ipv4_ipv6_and_cidr_matching(address: str | None, admitted: bool) -> None:
    assert PLATFORM.admits(address) is admitted
    assert PLATFORM.admits(address) is admitted  # the memo answers the same


def test_parse_keeps_ranges_sorted_and_deduplicated_and_sets_bad_entries_aside() -> None:
    listed = AllowList.parse(["2001:db8::/32", "10.0.0.1", "10.0.0.1/32", "10.0.0.9/24", "nope", "300.1.1.1", " "])
    assert listed.cidrs() == ["10.0.0.0/24", "10.0.0.1/32", "2001:db8::/32"]
    assert listed.rejected == ("nope", "300.1.1.1", " ") and len(listed) == 3
    assert listed.admits("10.0.0.200") and not listed.admits("10.0.1.1")


def test_an_ipv4_mapped_range_is_the_ipv4_range() -> None:
    assert parse_network("::ffff:192.0.2.0/120") == ipaddress.IPv4Network("192.0.2.0/24")
    assert AllowList.parse(["::ffff:192.0.2.0/120"]).admits("192.0.2.77")


def test_an_empty_list_admits_nobody() -> None:
    assert not AllowList.parse([]).admits("127.0.0.1")


def test_the_memo_stays_bounded() -> None:
    listed = AllowList.parse(["10.0.0.0/8"])
    for i in range(MEMO_ENTRIES * 3):
        assert listed.admits(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(listed._memo) <= MEMO_ENTRIES


def test_parse_address_forms() -> None:
    assert parse_address("[::1]:80") == ipaddress.IPv6Address("::1")
    assert parse_address("::ffff:10.1.2.3") == ipaddress.IPv4Address("10.1.2.3")
    assert parse_address("[::1") is None and parse_address("1.2.3.4:x:y") is None


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "hops", "expected"),
    [
        # 0 hops: no header is trusted, a forged one changes nothing
        ("10.1.1.1", ["101.126.59.7"], 0, "10.1.1.1"),
        ("10.1.1.1", [], 0, "10.1.1.1"),
        (None, ["101.126.59.7"], 0, None),
        # 1 hop: the last entry (what our one proxy appended)
        ("10.1.1.1", ["101.126.59.7"], 1, "101.126.59.7"),
        ("10.1.1.1", ["6.6.6.6, 101.126.59.7"], 1, "101.126.59.7"),  # a forged first entry is skipped
        ("10.1.1.1", ["6.6.6.6", "101.126.59.7"], 1, "101.126.59.7"),  # two header lines are one list
        ("10.1.1.1", [" 6.6.6.6 ,, 101.126.59.7 "], 1, "101.126.59.7"),
        # 2 hops: the second from the right (the first of our two proxies wrote it)
        ("10.1.1.1", ["6.6.6.6, 101.126.59.7, 10.0.0.5"], 2, "101.126.59.7"),
        # fewer entries than hops: did not come through every proxy
        ("10.1.1.1", [], 1, None),
        ("10.1.1.1", ["101.126.59.7"], 2, None),
        ("10.1.1.1", [" , "], 1, None),
    ],
)
def test_trusted_hops(peer: str | None, forwarded_for: list[str], hops: int, expected: str | None) -> None:
    assert client_address(peer, forwarded_for, hops) == expected


def test_a_forged_header_never_admits_with_zero_hops() -> None:
    address = client_address("198.51.100.9", ["101.126.59.7"], 0)
    assert not PLATFORM.admits(address)
    assert PLATFORM.admits(client_address("198.51.100.9", ["101.126.59.7"], 1))
