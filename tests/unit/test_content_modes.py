"""CloudEvents content modes of the records: structured (the default) pinned byte for byte."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from bridge.decode import decode
from bridge.errors import DeadLetterCause
from bridge.inbound import read_inbound
from bridge.normalize import Record, Topics, dead_letter, normalize
from bridge.samples import SAMPLE_TYPES, sample
from bridge.settings import load_settings
from bridge_devtools.platform import compact

BASE_ENV = {"BRIDGE_LARK_VERIFICATION_TOKEN": "t"}
RECEIVED_MS = 1_608_725_990_000

#: sha256 over (topic, key, value, headers) of every record of each documented sample, and of the
#: dead letter of the room sample without its room id, as the bridge wrote them before content
#: modes existed: structured records never change.
STRUCTURED_DIGESTS = {
    "vc.room.created_v1": "e6a717b1b00f9d0d71f35ccd6050df9f358dcedc8a54072409be20c4e6e23045",
    "vc.reserve_config.updated_v1": "b3a26e165bddce0522b5b7100a480fdda3140ad954f8fbda38fadb1168337214",
    "third_party_meeting_room_event_created": "b4e2a08c55d1210d62da3004ea1e23ed12d03df1f93d866378ee7659afb41877",
    "vc.room.updated_v1": "041edfa91c7497bab5696b50d8bcf49e67b75dc883f6a6d660508d5635de748f",
    "vc.room.deleted_v1": "ae413580355cacdbb7eec4d9f41e0dc9ab0b083fa98c83c58208b79e7ccfe20f",
    "vc.room_level.created_v1": "6d82a8b65974454848ffbedb37671a059eb7052f161db54c314c1adb313b956f",
    "vc.room_level.updated_v1": "9c1e91b11c5d23c58bd3795d54b6cc19e6a1c118f8fc6bb43a0c59f39baf8619",
    "vc.room_level.deleted_v1": "82e3f9ec252a9928749dbb8ed1682fb63675b230cad1101f6e703cd3a2c3ffc3",
    "dead_letter": "70885b1e41a859b67bda502ea0774b08e73fd074ce195c16fc037da90b890096",
}


def digest(records: Sequence[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        parts = (r.topic.encode(), r.key or b"-", r.value, *(n.encode() + b"=" + v for n, v in r.headers))
        for part in parts:
            h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


def records_of(kind: str, topics: Topics) -> list[Record]:
    if kind != "dead_letter":
        return normalize(decode(read_inbound(compact(sample(kind)))), topics)
    body = sample("vc.room.created_v1")
    del body["event"]["room"]["room_id"]
    inbound = read_inbound(compact(body))
    with pytest.raises(DeadLetterCause) as failure:
        decode(inbound)
    return [dead_letter(inbound, failure.value, received_ms=RECEIVED_MS, topics=topics)]


@pytest.mark.parametrize("kind", [*SAMPLE_TYPES, "dead_letter"])
def test_structured_records_are_byte_for_byte_as_before(kind: str) -> None:
    topics = Topics.from_settings(load_settings(BASE_ENV))
    assert digest(records_of(kind, topics)) == STRUCTURED_DIGESTS[kind]
