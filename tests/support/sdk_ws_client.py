"""The official SDK's long-connection client (``lark_oapi.ws.Client``, docs/long_connection.md)
as a program, for tests that run it in a subprocess: the SDK creates its event loop at import and
``Client.start()`` blocks for ever.

    python -m tests.support.sdk_ws_client <domain> <app_id> <app_secret>

It handles ``vc.room.created_v1`` (schema 2.0) events: for each it prints ``SDK-EVENT
<event_id>`` (flushed); an event whose ``event_id`` starts with ``fail`` makes the handler raise,
so the SDK acks it with 500. The room and room-level kinds (``vc.room.updated_v1``, …,
``vc.room_level.deleted_v1``) go to the SDK's typed handlers: for each it prints ``SDK-TYPED
<event class> <event_id> <the typed event, JSON as the SDK marshals it, ASCII>``. The SDK logs
at DEBUG on stdout. A client error (bad credentials, a refused handshake the SDK does not retry)
ends the program with a traceback and exit code 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lark_oapi as lark

EVENT_LINE = "SDK-EVENT"
TYPED_LINE = "SDK-TYPED"
FAIL_PREFIX = "fail"
#: The SDK's typed registrations this program makes (``EventDispatcherHandler.builder`` methods).
TYPED_REGISTRATIONS = (
    "register_p2_vc_room_updated_v1",
    "register_p2_vc_room_deleted_v1",
    "register_p2_vc_room_level_created_v1",
    "register_p2_vc_room_level_updated_v1",
    "register_p2_vc_room_level_deleted_v1",
)


def _on_room_created(event: lark.CustomizedEvent) -> None:
    event_id = event.header.event_id
    print(f"{EVENT_LINE} {event_id}", flush=True)
    if str(event_id).startswith(FAIL_PREFIX):
        raise RuntimeError(f"handler failure requested by event {event_id}")


def _on_typed(event: Any) -> None:
    typed = json.dumps(json.loads(lark.JSON.marshal(event.event)), separators=(",", ":"))
    print(f"{TYPED_LINE} {type(event).__name__} {event.header.event_id} {typed}", flush=True)


def main(argv: list[str]) -> None:
    """``argv``: domain (e.g. ``http://127.0.0.1:8080``), app id, app secret."""
    domain, app_id, app_secret = argv
    builder = lark.EventDispatcherHandler.builder("", "", lark.LogLevel.DEBUG).register_p2_customized_event(
        "vc.room.created_v1", _on_room_created
    )
    for method in TYPED_REGISTRATIONS:
        getattr(builder, method)(_on_typed)
    handler = builder.build()
    client = lark.ws.Client(app_id, app_secret, log_level=lark.LogLevel.DEBUG, event_handler=handler, domain=domain)
    client.start()


if __name__ == "__main__":
    main(sys.argv[1:])
