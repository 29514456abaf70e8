"""Opening the long connection: the endpoint call and the WebSocket handshake
(docs/long_connection.md §1, §2), the only code that speaks to the platform's HTTP side.

Each failure is classified the SDKs' way: :class:`ClientError` (no retry can mend it: the client
stops for good, §7 step 3) or :class:`RetryableError` (the reconnect policy decides when to try
again, :mod:`bridge.ingress.reconnect`). Reasons are fixed identifiers or capped platform text;
never the URL (it admits the connection) nor the app secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from bridge.logs import capped
from bridge.settings import Settings

ENDPOINT_PATH: Final = "/callback/ws/endpoint"
#: Seconds the endpoint call may take (SDK-NODE: 15 s; SDK-PY: none) (§1).
ENDPOINT_TIMEOUT_S: Final = 10.0
#: Endpoint ``code`` values that are the server's trouble: retried (§1). Any other non-zero is final.
RETRYABLE_CODES: Final = frozenset({1, 1000040343})
#: Handshake: ``handshake-autherrcode`` of "too many connections for this app" (§2, §8).
TOO_MANY_CONNECTIONS: Final = "1000040350"


class ClientError(Exception):
    """A refusal no retry can mend (bad credentials, forbidden, too many connections).

    Attributes:
        reason: what the log line says (fixed text plus the platform's capped code and message).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(Exception):
    """A failed attempt to connect that is worth repeating.

    Attributes:
        reason: a fixed identifier (``endpoint_code_1``, ``endpoint_http_5xx``, ``handshake_514``,
            ``connect_ClientConnectorError`` …): the ``outcome`` label of
            ``bridge_long_connection_connects_total``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The endpoint's answer (§1): the WebSocket ``url`` (a secret: it admits the connection)
    and its ``client_config`` JSON object, or None when it carried none."""

    url: str
    client_config: dict[str, Any] | None


async def fetch_endpoint(
    session: aiohttp.ClientSession, settings: Settings, *, timeout_s: float = ENDPOINT_TIMEOUT_S
) -> Endpoint:
    """``POST {BRIDGE_LARK_DOMAIN}/callback/ws/endpoint`` with the app's credentials (§1).

    Args:
        session: the client's aiohttp session.
        settings: ``lark_domain``, ``lark_app_id``, ``lark_app_secret`` (required with the long
            connection).
        timeout_s: seconds for the whole call (default :data:`ENDPOINT_TIMEOUT_S`).

    Returns:
        The URL (``ws://`` or ``wss://``) and the ``ClientConfig``.

    Raises:
        RetryableError: HTTP status other than 200, a network error or timeout, an answer that
            is not a JSON object or has no URL, or ``code`` 1 / 1000040343.
        ClientError: any other non-zero ``code`` (bad credentials and the like).
    """
    assert settings.lark_app_id is not None
    assert settings.lark_app_secret is not None
    body = {"AppID": settings.lark_app_id, "AppSecret": settings.lark_app_secret.get_secret_value()}
    try:
        async with session.post(
            settings.lark_domain.rstrip("/") + ENDPOINT_PATH,
            json=body,
            headers={"locale": "zh"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if resp.status != 200:
                raise RetryableError(f"endpoint_http_{resp.status // 100}xx")
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RetryableError(f"endpoint_{type(exc).__name__}") from None
    if not isinstance(answer, dict):
        raise RetryableError("endpoint_bad_answer")
    code = answer.get("code")
    if code != 0:
        if code in RETRYABLE_CODES:
            raise RetryableError(f"endpoint_code_{code}")
        raise ClientError(f"endpoint refused the app: code {capped(str(code))}, {capped(str(answer.get('msg')))}")
    data = answer.get("data")
    url = data.get("URL") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise RetryableError("endpoint_no_url")
    config = data.get("ClientConfig") if isinstance(data, dict) else None
    return Endpoint(url, config if isinstance(config, dict) else None)


async def open_websocket(
    session: aiohttp.ClientSession,
    url: str,
    *,
    heartbeat_s: float,
    max_msg_size: int,
    close_timeout_s: float = 5.0,
) -> aiohttp.ClientWebSocketResponse:
    """The WebSocket on the endpoint's ``url`` (§2).

    Args:
        session: the client's aiohttp session.
        url: from :func:`fetch_endpoint`.
        heartbeat_s: aiohttp's RFC 6455 heartbeat: a ping every this many seconds, the
            connection closed when no pong comes within half of it.
        max_msg_size: the largest WebSocket message accepted, bytes.
        close_timeout_s: seconds the close handshake may take.

    Returns:
        The open WebSocket.

    Raises:
        ClientError: the handshake refused with ``handshake-status: 403``, or ``514`` with
            ``handshake-autherrcode: 1000040350`` (too many connections for the app, §8).
        RetryableError: any other refusal (``handshake_<status>``) or a network error.
    """
    try:
        return await session.ws_connect(
            url,
            heartbeat=heartbeat_s,
            max_msg_size=max_msg_size,
            timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout_s),
        )
    except aiohttp.WSServerHandshakeError as exc:
        headers: Mapping[str, str] = exc.headers or {}
        status = headers.get("handshake-status", "")
        code = headers.get("handshake-autherrcode", "")
        if status == "403" or (status == "514" and code == TOO_MANY_CONNECTIONS):
            what = "too many connections for the app" if code == TOO_MANY_CONNECTIONS else "forbidden"
            raise ClientError(f"handshake refused: {what} ({status} {capped(code)})") from None
        shown = status if status.isdigit() and len(status) == 3 else ("" if not status else "other")
        raise RetryableError(f"handshake_{shown or exc.status}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RetryableError(f"connect_{type(exc).__name__}") from None
