"""Ingresses: the ways events reach the bridge from the platform.

An ingress turns what the platform sent into one :class:`~bridge.inbound.InboundEvent`
(authenticated, plaintext, its top level read once by :func:`~bridge.inbound.read_inbound`),
hands it to the delivery (:meth:`bridge.delivery.EventSink.deliver`) and acknowledges the
platform only when that returns; when it raises :class:`~bridge.errors.Unavailable`, the ingress
answers so that the platform retries. The delivery knows nothing of the ingress.

* :mod:`bridge.ingress.webhook` — the HTTP webhook ("send events to developer server",
  docs/protocol.md §1–§6): verify, decrypt, token, freshness; answers with an HTTP status.
* :mod:`bridge.ingress.long_connection` — the platform's long connection (an outbound WebSocket,
  docs/long_connection.md): protobuf frames (:mod:`bridge.ingress.frames`), answered with ack
  frames; split messages joined by :mod:`bridge.ingress.reassembly`, reconnects timed by
  :mod:`bridge.ingress.reconnect`, the endpoint and handshake in :mod:`bridge.ingress.connect`
  (docs/long_connection.md §9.6). ``BRIDGE_LARK_SUBSCRIPTION_MODE`` chooses one or both.
* :mod:`bridge.ingress.http` — the JSON answer both the app and the webhook write.

Adding one: authenticate by its own rules, build the payload bytes, call
``read_inbound(payload)``, ``await sink.deliver(event, received_ms=…)``, and map the outcome and
:class:`~bridge.errors.BridgeError` to its own acknowledgement.
"""
