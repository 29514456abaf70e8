"""``python -m bridge dead-letters list|replay`` against the real broker.

The use case end to end: a bridge that does not model an event type yet dead-letters it; a
bridge that does (here: the same code with the type's model put back — the CLI runs in a fresh
process, i.e. the newer version) replays it to its topic exactly once, however often it is run.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from typing import Any

import pytest

from bridge import envelope as ev
from bridge.settings import Settings
from bridge_devtools.broker import free_port
from tests.support.docs import shell_commands
from tests.support.kafka import read_topic
from tests.support.processes import bridge_env
from tests.support.samples import fresh_id, sample_event

pytestmark = pytest.mark.integration


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment the CLI needs: the broker and the test's topics (no token: not needed)."""
    return bridge_env(
        BRIDGE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        BRIDGE_TOPIC_ROOM_CREATED=settings.topic_room_created,
        BRIDGE_TOPIC_ROOM_UPDATED=settings.topic_room_updated,
        BRIDGE_TOPIC_ROOM_DELETED=settings.topic_room_deleted,
        BRIDGE_TOPIC_ROOM_LEVEL_CREATED=settings.topic_room_level_created,
        BRIDGE_TOPIC_ROOM_LEVEL_UPDATED=settings.topic_room_level_updated,
        BRIDGE_TOPIC_ROOM_LEVEL_DELETED=settings.topic_room_level_deleted,
        BRIDGE_TOPIC_RESERVE_CONFIG_UPDATED=settings.topic_reserve_config_updated,
        BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT=settings.topic_third_party_meeting_room_event,
        BRIDGE_TOPIC_DEAD_LETTER=settings.topic_dead_letter,
    )


async def dead_letters(settings: Settings, *args: str, **env: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``python -m bridge dead-letters ARGS --json`` (``env`` overrides settings): exit code,
    JSON lines, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "dead-letters",
        *args,
        "--json",
        env={**cli_env(settings), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()


async def test_an_unmodelled_type_once_modelled_is_replayed_to_its_topic_exactly_once(
    broker: Any, start_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older_bridge:  # a version that does not model the type yet
        older_bridge.delitem(ev.DATA_TYPES, ev.RESERVE_CONFIG_UPDATED)
        bridge = await start_bridge(broker.bootstrap_servers)
        event = sample_event(ev.RESERVE_CONFIG_UPDATED, event_id=fresh_id())
        assert (await bridge.send(bridge.platform.request(event)))[0] == 200
        unknown = sample_event(ev.ROOM_CREATED, event_id=fresh_id())
        unknown["header"]["event_type"] = "im.message.receive_v1"  # modelled by no version
        assert (await bridge.send(bridge.platform.request(unknown)))[0] == 200
    s = bridge.settings
    dlq = await read_topic(broker.bootstrap_servers, s.topic_dead_letter, expect=2)
    assert {json.loads(r.value)["data"]["reason"] for r in dlq} == {"unknown_event_type"}

    code, listed, _ = await dead_letters(s, "list", "--type", ev.RESERVE_CONFIG_UPDATED)
    assert code == 0 and [x["event_id"] for x in listed] == [event["header"]["event_id"]]
    assert listed[0]["reason"] == "unknown_event_type" and listed[0]["payload_carried"] is True

    code, dry, _ = await dead_letters(s, "replay", "--dry-run")
    assert code == 1  # the unknown type still fails
    assert sorted(x["outcome"] for x in dry) == ["still_failing", "would_replay"]
    assert await read_topic(broker.bootstrap_servers, s.topic_reserve_config_updated, expect=0, timeout_s=2) == []

    code, first, err = await dead_letters(s, "replay")
    by_id = {x["event_id"]: x for x in first}
    assert code == 1 and "1 replayed" in err and "1 still failing" in err
    assert by_id[event["header"]["event_id"]]["outcome"] == "replayed"
    failing = by_id[unknown["header"]["event_id"]]
    assert failing["outcome"] == "still_failing" and failing["failure_reason"] == "unknown_event_type"

    code, second, _ = await dead_letters(
        s, "replay", "--reason", "unknown_event_type", "--type", event["header"]["event_type"]
    )
    assert code == 0 and [x["outcome"] for x in second] == ["already_delivered"]

    records = await read_topic(broker.bootstrap_servers, s.topic_reserve_config_updated, expect=1)
    assert len(records) == 1  # exactly once, after two replays
    (record,) = records
    headers = dict(record.headers)
    where = by_id[event["header"]["event_id"]]
    assert headers[ev.REPLAYED_HEADER].decode() == f"{where['topic']}/{where['partition']}/{where['offset']}"
    assert headers[ev.EVENT_ID_HEADER].decode() == event["header"]["event_id"]
    envelope = json.loads(record.value)
    assert envelope["type"] == ev.RESERVE_CONFIG_UPDATED and envelope["id"] == event["header"]["event_id"]
    assert record.key.decode() == event["event"]["scope_id"] == envelope["subject"]
    assert "token" not in json.dumps(envelope)  # the dead letter's redacted token is not carried over
    # The dead letters themselves are left where they were.
    assert len(await read_topic(broker.bootstrap_servers, s.topic_dead_letter, expect=2)) == 2

    # The commands the docs show (docs/operations.md) run as shown (their --json twins above
    # checked the outcomes).
    commands = [
        c.removeprefix("python -m bridge dead-letters ") for c in shell_commands(r"python -m bridge dead-letters ")
    ]
    assert len(commands) >= 3
    for command in commands:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "dead-letters",
            *shlex.split(command),
            env=cli_env(s),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode in (0, 1), (command, stderr.decode())
        assert stdout.decode().startswith(("received_at", "outcome")) and b"Traceback" not in stderr, command


async def test_a_replay_of_an_id_the_platform_redelivered_meanwhile_publishes_nothing(
    broker: Any, start_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = sample_event(ev.ROOM_CREATED, event_id=fresh_id())
    with monkeypatch.context() as older_bridge:
        older_bridge.delitem(ev.DATA_TYPES, ev.ROOM_CREATED)
        bridge = await start_bridge(broker.bootstrap_servers)
        assert (await bridge.send(bridge.platform.request(event)))[0] == 200
    # A newer bridge on the same topics got the event again (e.g. from the long connection).
    newer = await start_bridge(
        broker.bootstrap_servers,
        BRIDGE_TOPIC_ROOM_CREATED=bridge.settings.topic_room_created,
        BRIDGE_TOPIC_DEAD_LETTER=bridge.settings.topic_dead_letter + ".other",
    )
    assert (await newer.send(newer.platform.request(event)))[0] == 200
    code, out, _ = await dead_letters(bridge.settings, "replay")
    assert code == 0 and [x["outcome"] for x in out] == ["already_delivered"]
    assert len(await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)) == 1


async def test_bad_arguments_and_an_unreachable_broker_have_their_exit_codes(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    code, _, err = await dead_letters(bridge.settings, "list", "--since", "yesterday")
    assert code == 2 and "--since" in err
    code, _, err = await dead_letters(bridge.settings, "list", "--offsets", "x:1")
    assert code == 2 and "--offsets" in err
    code, out, err = await dead_letters(bridge.settings, "list", "--since", "2020-01-01T00:00Z")
    assert code == 0 and out == [] and "0 dead letter(s)" in err
    code, _, err = await dead_letters(
        bridge.settings, "replay", BRIDGE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"
    )
    assert code == 3 and "broker unavailable" in err
