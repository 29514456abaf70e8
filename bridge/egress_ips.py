"""The platform's event egress IPs, kept fresh: a background service (:mod:`bridge.lifecycle`).

With ``BRIDGE_LARK_IP_ALLOWLIST`` ``enforce`` or ``report`` (and the webhook on),
:class:`EgressIps` fetches ``GET /open-apis/event/v1/outbound_ip`` through the Open API client
(:meth:`bridge.lark_api.LarkApi.list_outbound_ips`, with the app's credentials) at start and
every ``BRIDGE_LARK_IP_ALLOWLIST_REFRESH_S`` (default 6 h, the platform's recommendation), and
holds the result as an :class:`~bridge.allowlist.AllowList` that the webhook checks each request
against (:mod:`bridge.ingress.webhook`).

- A failed fetch — the platform unreachable, a refusal (e.g. ``SCOPE_REQUIRED``: the app lacks
  the ``event:ip_list`` permission, which can be granted without a restart), or a list with no
  usable entry — keeps the last good list and is retried sooner, with exponential backoff
  (:func:`bridge.lifecycle.retrying`), until a fetch succeeds; then the normal interval resumes.
  Each failed attempt is counted (``bridge_egress_ips_refresh_failures_total{reason}``); the log
  has one warning when an outage begins and one line when it ends, not one per attempt.
- Until the first fetch succeeds there is no list: in ``enforce`` mode readiness reports
  ``egress_ips_unknown`` and the webhook answers 503 (the platform retries); ``report`` mode
  lets everything through.
- Entries that are no address or range are left out (logged once per list with the count);
  the rest is used.

The long connection is not affected: it is a connection the bridge opens itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from bridge.allowlist import AllowList
from bridge.lark_api import LarkApi, LarkApiError
from bridge.lifecycle import TaskRunner, retrying
from bridge.metrics import Metrics
from bridge.settings import Settings

log = logging.getLogger("bridge.egress_ips")

#: The ``reason`` label values of a failed refresh beside the Open API errors' names:
#: ``empty_list`` (the list had no usable entry), ``error`` (anything unforeseen).
EGRESS_FAILURES: Final = ("empty_list", "error")
#: Readiness reason while no list was ever fetched (``enforce`` only).
NOT_READY_REASON: Final = "egress_ips_unknown"


class EmptyList(Exception):
    """The platform's list had no entry that is an address or a range (never used: it would
    shut every request out)."""


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed refresh: a :class:`~bridge.lark_api.LarkApiError`'s
    ``name``, ``empty_list``, or ``error`` — a bounded set (:data:`EGRESS_FAILURES`)."""
    if isinstance(exc, LarkApiError):
        return exc.name
    return "empty_list" if isinstance(exc, EmptyList) else "error"


class EgressIps:
    """The egress IP list of the platform, fetched at start and refreshed in the background.

    Args:
        settings: ``lark_ip_allowlist`` (``enforce`` or ``report``), ``lark_ip_allowlist_refresh_s``
            (seconds), and the app's credentials and domain for the Open API.
        metrics: ``bridge_egress_ips``, ``…_age_seconds``, ``…_refresh_failures_total``.
        api_factory: builds the Open API client on the service's session (default
            :meth:`LarkApi.from_settings`); tests pass one with their own timings.
        session_factory: the aiohttp session of the calls, made at start and closed on close
            (default a plain ``aiohttp.ClientSession()``).
        refresh_s: seconds between fetches (default ``settings.lark_ip_allowlist_refresh_s``).
        backoff_first_s, backoff_max_s: the first wait after a failed fetch, seconds, doubling
            up to the longest (defaults 5 and ``min(300, refresh_s)``).
        clock: monotonic seconds (the list's age).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        api_factory: Callable[[aiohttp.ClientSession], LarkApi] | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        refresh_s: float | None = None,
        backoff_first_s: float = 5.0,
        backoff_max_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = settings.lark_ip_allowlist
        self._settings = settings
        self._metrics = metrics
        self._api_factory = api_factory or (lambda session: LarkApi.from_settings(session, settings))
        self._session_factory = session_factory or aiohttp.ClientSession
        self._refresh_s = float(refresh_s if refresh_s is not None else settings.lark_ip_allowlist_refresh_s)
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s if backoff_max_s is not None else min(300.0, self._refresh_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._api: LarkApi | None = None
        self._runner = TaskRunner("egress-ips")
        self._failing = 0  # failed attempts since the last success
        #: The current list (None until the first successful fetch).
        self.allowlist: AllowList | None = None
        self.fetched_at: float | None = None  # on ``clock``
        metrics.egress_ips_age_seconds.set_function(self.age_s)

    # ---- BackgroundService ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and begin fetching in the background; returns at once."""
        self._session = self._session_factory()
        self._api = self._api_factory(self._session)
        self._runner.spawn(self._run())

    async def close(self) -> None:
        """Stop refreshing and close the session."""
        await self._runner.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def not_ready_reason(self) -> str | None:
        """``egress_ips_unknown`` in ``enforce`` mode until a list was fetched; else None."""
        if self.mode == "enforce" and self.allowlist is None:
            return NOT_READY_REASON
        return None

    # ---- the list --------------------------------------------------------------------------------

    def age_s(self) -> float:
        """Seconds since the last successful fetch (``inf`` before the first)."""
        return math.inf if self.fetched_at is None else max(0.0, self._clock() - self.fetched_at)

    async def refresh(self) -> AllowList:
        """Fetch the list once and put it in use.

        Returns:
            The new list.

        Raises:
            LarkApiError: the fetch failed (the list in use stays).
            EmptyList: no entry was an address or a range (the list in use stays).
        """
        if self._api is None:
            raise RuntimeError("EgressIps.refresh() before start()")
        entries = [entry async for entry in self._api.list_outbound_ips()]
        fetched = AllowList.parse(entries)
        if fetched.rejected:
            log.warning(
                "egress IPs: %d of %d entries are no address or range; left out",
                len(fetched.rejected),
                len(entries),
            )
        if not fetched.networks:
            raise EmptyList()
        previous = self.allowlist
        self.allowlist = fetched
        self.fetched_at = self._clock()
        self._metrics.egress_ips.set(len(fetched))
        if previous is None or previous.networks != fetched.networks:
            log.info("egress IPs: %d ranges in use (%s)", len(fetched), ", ".join(fetched.cidrs()[:8]))
        return fetched

    async def _run(self) -> None:
        while True:
            async for attempt in retrying(
                first_s=self._backoff_first_s, max_s=self._backoff_max_s, on_retry=self._failed
            ):
                with attempt:
                    await self.refresh()
            if self._failing:
                log.info("egress IPs: fetched again after %d failed attempts", self._failing)
                self._failing = 0
            await asyncio.sleep(self._refresh_s)

    def _failed(self, exc: BaseException, wait_s: float) -> None:
        reason = failure_reason(exc)
        self._metrics.egress_ips_refresh_failures.labels(reason=reason).inc()
        self._failing += 1
        if self._failing > 1:
            return  # one line per outage
        if self.allowlist is None:
            keeping = "no list yet" + (": webhook requests get 503" if self.mode == "enforce" else "")
        else:
            keeping = f"keeping the last list ({len(self.allowlist)} ranges)"
        log.warning(
            "egress IPs: fetch failed (%s: %s); %s; retrying with backoff, first in %.1f s",
            reason,
            exc if isinstance(exc, LarkApiError) else type(exc).__name__,
            keeping,
            wait_s,
        )
