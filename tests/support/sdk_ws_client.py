"""The official SDK's long-connection client (``lark_oapi.ws.Client``, docs/long_connection.md)
as a program, for tests that run it in a subprocess: the SDK creates its event loop at import and
``Client.start()`` blocks for ever.

    python -m tests.support.sdk_ws_client <domain> <app_id> <app_secret>

It handles ``vc.room.created_v1`` (schema 2.0) events: for each it prints ``SDK-EVENT
<event_id>`` (flushed); an event whose ``event_id`` starts with ``fail`` makes the handler raise,
so the SDK acks it with 500. The SDK logs at DEBUG on stdout. A client error (bad credentials,
a refused handshake the SDK does not retry) ends the program with a traceback and exit code 1.
"""

from __future__ import annotations

import sys

import lark_oapi as lark

EVENT_LINE = "SDK-EVENT"
FAIL_PREFIX = "fail"


def _on_room_created(event: lark.CustomizedEvent) -> None:
    event_id = event.header.event_id
    print(f"{EVENT_LINE} {event_id}", flush=True)
    if str(event_id).startswith(FAIL_PREFIX):
        raise RuntimeError(f"handler failure requested by event {event_id}")


def main(argv: list[str]) -> None:
    """``argv``: domain (e.g. ``http://127.0.0.1:8080``), app id, app secret."""
    domain, app_id, app_secret = argv
    handler = (
        lark.EventDispatcherHandler.builder("", "", lark.LogLevel.DEBUG)
        .register_p2_customized_event("vc.room.created_v1", _on_room_created)
        .build()
    )
    client = lark.ws.Client(app_id, app_secret, log_level=lark.LogLevel.DEBUG, event_handler=handler, domain=domain)
    client.start()


if __name__ == "__main__":
    main(sys.argv[1:])
