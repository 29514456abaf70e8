"""The recipe from the platform docs: the official SDK's event handler in Flask + a Kafka producer.

``python -m benchmarks.recipe PORT`` with ``RECIPE_ENCRYPT_KEY``, ``RECIPE_VERIFICATION_TOKEN``,
``RECIPE_BOOTSTRAP_SERVERS`` and ``RECIPE_TOPIC_PREFIX`` in the environment.

What a team following the docs would write: the SDK's Flask sample
(``larksuite/oapi-sdk-python`` ``samples/event/flask_sample.py``: ``EventDispatcherHandler.builder
(ENCRYPT_KEY, VERIFICATION_TOKEN)``, a route calling ``handler.do(parse_req())`` /
``parse_resp(resp)`` from ``lark_oapi.adapter.flask``, served with ``app.run()``, i.e. Werkzeug's
threaded server), with the three event types registered as customized events and each handler
publishing to Kafka with kafka-python's synchronous send (``producer.send(...).get()``, the
"block for synchronous sends" pattern of its README) so the platform gets 200 only after the
broker's ack. The producer uses kafka-python's defaults, which match the bridge's producer:
``acks=all``, idempotence on, ``linger_ms=0``. Records are keyed like the bridge's (room id; one
record per room of a third-party event), values are the SDK's ``lark.JSON.marshal(event)``.

Two deliberate deviations from the sample, both in the recipe's favour: the SDK and Werkzeug log
at WARNING (the bridge runs at WARNING in the benchmark; Werkzeug would log one access line per
request), and ``/readyz`` answers 200 once the producer is connected, for the benchmark's start-up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import lark_oapi as lark
from flask import Flask
from kafka import KafkaProducer
from lark_oapi.adapter.flask import parse_req, parse_resp

ENCRYPT_KEY = os.environ["RECIPE_ENCRYPT_KEY"]
VERIFICATION_TOKEN = os.environ["RECIPE_VERIFICATION_TOKEN"]
PREFIX = os.environ.get("RECIPE_TOPIC_PREFIX", "recipe.")
TOPIC_ROOM_CREATED = PREFIX + "lark.vc.room.created_v1"
TOPIC_RESERVE_CONFIG = PREFIX + "lark.vc.reserve_config.updated_v1"
TOPIC_THIRD_PARTY = PREFIX + "lark.third_party_meeting_room_event"

producer = KafkaProducer(bootstrap_servers=os.environ["RECIPE_BOOTSTRAP_SERVERS"], acks="all")


def _publish(topic: str, keys: list[str], data: lark.CustomizedEvent) -> None:
    value = lark.JSON.marshal(data).encode("utf-8")
    futures = [producer.send(topic, key=k.encode("utf-8"), value=value) for k in keys]
    for f in futures:
        f.get(timeout=10)  # wait for the broker's ack before answering 200


def on_room_created(data: lark.CustomizedEvent) -> None:
    _publish(TOPIC_ROOM_CREATED, [data.event["room"]["room_id"]], data)


def on_reserve_config_updated(data: lark.CustomizedEvent) -> None:
    _publish(TOPIC_RESERVE_CONFIG, [data.event["scope_id"]], data)


def on_third_party_created(data: lark.CustomizedEvent) -> None:
    rooms = [r["open_id"] for r in data.event.get("meeting_rooms") or []]
    _publish(TOPIC_THIRD_PARTY, list(dict.fromkeys(rooms)) or [data.event["uid"]], data)


handler = (
    lark.EventDispatcherHandler.builder(ENCRYPT_KEY, VERIFICATION_TOKEN, lark.LogLevel.WARNING)
    .register_p2_customized_event("vc.room.created_v1", on_room_created)
    .register_p2_customized_event("vc.reserve_config.updated_v1", on_reserve_config_updated)
    .register_p1_customized_event("third_party_meeting_room_event_created", on_third_party_created)
    .build()
)

app = Flask(__name__)


@app.route("/webhook/event", methods=["POST"])
def event() -> Any:
    resp = handler.do(parse_req())
    return parse_resp(resp)


@app.route("/readyz", methods=["GET"])
def readyz() -> Any:
    try:  # metadata of the three topics (blocks up to max_block_ms when the broker is away)
        ok = all(producer.partitions_for(t) for t in (TOPIC_ROOM_CREATED, TOPIC_RESERVE_CONFIG, TOPIC_THIRD_PARTY))
    except Exception:
        ok = False
    return ({"status": "ok"}, 200) if ok else ({"status": "starting"}, 503)


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
