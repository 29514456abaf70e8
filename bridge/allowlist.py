"""The platform's egress IPs as an allow-list, and the client address of a webhook request.

Pure functions and one immutable value, no I/O (the list is fetched by
:class:`bridge.egress_ips.EgressIps`; the webhook applies it, :mod:`bridge.ingress.webhook`):

- :meth:`AllowList.parse` reads the platform's ``ip_list`` entries (``GET
  /open-apis/event/v1/outbound_ip``): each an IPv4 or IPv6 address or CIDR range
  (``ipaddress``; a range with host bits set is taken as its network), and keeps the others
  aside as :attr:`AllowList.rejected`;
- :meth:`AllowList.admits` says whether an address (text, as the peer or a header gives it) is
  in one of the ranges; an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack
  socket reports for an IPv4 peer) is matched as the IPv4 address it maps;
- :func:`client_address` picks the client's address (as text): the peer itself, or — behind ``hops``
  proxies of one's own that each append the address they received from to ``X-Forwarded-For``
  — the ``hops``-th entry from the right of that header. Entries left of it were written by
  whoever sent the request and are never trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Addresses whose verdict :class:`AllowList` remembers (the platform sends from a handful; the
#: memo is emptied when full, so a spray of strangers costs only the parse it would anyway).
MEMO_ENTRIES: Final = 1024


def parse_address(text: str | None) -> IPAddress | None:
    """Read one address as a peer or an ``X-Forwarded-For`` entry writes it.

    Accepts ``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:443`` (surrounding blanks ignored); an IPv4-mapped IPv6 address becomes the
    IPv4 address it maps.

    Args:
        text: The address, or None.

    Returns:
        The address, or None when ``text`` is None, empty or not an address (``unknown``, a
        host name, an obfuscated ``_node`` identifier of RFC 7239, …).
    """
    if not text:
        return None
    value = text.strip()
    if value.startswith("["):  # [v6] or [v6]:port
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # v4:port (a bare v6 has at least two colons)
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork | None:
    """Read one allow-list entry: an address (a single-address range) or a CIDR range.

    Args:
        text: ``192.0.2.1``, ``192.0.2.0/24``, ``2001:db8::/32`` …; a range with host bits set
            (``192.0.2.1/24``) is taken as its network (``192.0.2.0/24``); an IPv4-mapped IPv6
            range as the IPv4 range it maps.

    Returns:
        The range, or None when ``text`` is no address or range.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def client_address(peer: str | None, forwarded_for: Iterable[str], hops: int) -> str | None:
    """The client's address as text, trusting exactly ``hops`` proxies of one's own.

    Args:
        peer: The TCP peer's address (aiohttp's ``request.remote``), or None.
        forwarded_for: The ``X-Forwarded-For`` header's values, in the order they came (several
            header lines are one list, joined with commas, RFC 9110 §5.3).
        hops: How many proxies of one's own stand in front (``BRIDGE_HTTP_TRUSTED_PROXY_HOPS``):
            0 trusts no header — the peer is the client; ``N`` ≥ 1 takes the ``N``-th entry from
            the right (each of the ``N`` proxies appended the address it received from, so the
            first of them wrote the client's).

    Returns:
        The address as given (stripped; :func:`parse_address` reads it), or None — with ``hops``
        ≥ 1 when the header has fewer than ``hops`` entries (the request did not come through
        every proxy: it is treated as unlisted).
    """
    if hops <= 0:
        return peer or None
    entries = [e.strip() for value in forwarded_for for e in value.split(",")]
    entries = [e for e in entries if e]
    if len(entries) < hops:
        return None
    return entries[-hops]


@dataclass(frozen=True, slots=True, eq=False)
class AllowList:
    """The ranges requests may come from, parsed once (:meth:`parse`).

    Attributes:
        networks: The ranges, de-duplicated (an entry inside another kept as listed), sorted
            IPv4 first.
        rejected: The entries that are no address or range, as listed.
    """

    networks: tuple[IPNetwork, ...]
    rejected: tuple[str, ...] = ()
    _v4: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    _v6: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    _memo: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Build the list from the platform's ``ip_list`` entries.

        Args:
            entries: Addresses and CIDR ranges as text (IPv4 or IPv6).

        Returns:
            The list; entries that do not parse are in :attr:`rejected`, not in the ranges.
        """
        networks: set[IPNetwork] = set()
        rejected: list[str] = []
        for entry in entries:
            network = parse_network(entry)
            if network is None:
                rejected.append(entry)
            else:
                networks.add(network)
        ordered = tuple(sorted(networks, key=lambda n: (n.version, n.network_address, n.prefixlen)))
        v4 = tuple((int(n.network_address), int(n.netmask)) for n in ordered if n.version == 4)
        v6 = tuple((int(n.network_address), int(n.netmask)) for n in ordered if n.version == 6)
        return cls(ordered, tuple(rejected), v4, v6)

    def __len__(self) -> int:
        return len(self.networks)

    def cidrs(self) -> list[str]:
        """Every range in CIDR notation (a single address as ``/32`` or ``/128``), sorted."""
        return [n.with_prefixlen for n in self.networks]

    def contains(self, address: IPAddress | None) -> bool:
        """Whether ``address`` is in one of the ranges (None never is)."""
        if address is None:
            return False
        value = int(address)
        ranges = self._v4 if address.version == 4 else self._v6
        return any(value & mask == net for net, mask in ranges)

    def admits(self, text: str | None) -> bool:
        """Whether the address ``text`` (as :func:`parse_address` reads it) is in one of the
        ranges; remembered per text (:data:`MEMO_ENTRIES`)."""
        if text is None:
            return False
        verdict = self._memo.get(text)
        if verdict is None:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            verdict = self._memo[text] = self.contains(parse_address(text))
        return verdict
