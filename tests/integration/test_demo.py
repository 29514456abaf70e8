"""README's ``make demo`` stays true: ``python -m bridge_devtools.demo`` starts the local broker
and the bridge, sends the eight samples, and reads all nine records back (the third-party
sample fans out to two rooms); with ``--long-connection`` the same over the long connection from
the fake Lark platform, every ack 200."""

from __future__ import annotations

import re
import sys

import pytest

from bridge.samples import SAMPLE_TYPES
from bridge_devtools.broker import VERSION_ENV
from tests.support.processes import REPO_ROOT, bridge_env, run_interruptible

pytestmark = pytest.mark.integration

#: (topic, key) of the nine records the eight samples make: the samples' room / scope / room level
#: ids (bridge/samples/), the third-party sample's two rooms.
EXPECTED_RECORDS = {
    ("lark.vc.room.created_v1", "omm_4de32cf10a4358788ff4e09e37ebbf9b"),
    ("lark.vc.reserve_config.updated_v1", "omm_3c5dd7e09bac0c1758fcf9511bd1a771"),
    ("lark.third_party_meeting_room_event", "omm_c4e2da9493fbd2ceea4f37aae6b3ee78"),
    ("lark.third_party_meeting_room_event", "omm_a5ab469c8e012e2a0b48fe4a8e344f94"),
    ("lark.vc.room.updated_v1", "omm_4de32cf10a4358788ff4e09e37ebbf9b"),
    ("lark.vc.room.deleted_v1", "omm_4de32cf10a4358788ff4e09e37ebbf9b"),
    ("lark.vc.room_level.created_v1", "层级ID"),  # the doc sample's placeholder id, verbatim
    ("lark.vc.room_level.updated_v1", "层级ID"),
    ("lark.vc.room_level.deleted_v1", "omb_8d020b12fe49e82847c2af3c193d5754"),
}


def test_make_demo_reads_back_nine_records() -> None:
    # No BRIDGE_* setting from the caller's shell; the broker version pin (a devtools variable,
    # as the other integration tests' broker uses it) is kept.
    env = bridge_env(keep=(VERSION_ENV,))
    proc = run_interruptible([sys.executable, "-m", "bridge_devtools.demo"], env=env, cwd=REPO_ROOT, timeout_s=300)
    report = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert re.search(r"^9 records read back from Kafka$", proc.stdout, re.MULTILINE), report


def test_demo_over_the_long_connection_acks_200_and_reads_back_nine_records() -> None:
    env = bridge_env(keep=(VERSION_ENV,))
    proc = run_interruptible(
        [sys.executable, "-m", "bridge_devtools.demo", "--long-connection"], env=env, cwd=REPO_ROOT, timeout_s=300
    )
    report = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    acks = re.findall(r"^(\S+) -> ack code=(\d+) biz_rt=(\d+) ms$", proc.stdout, re.MULTILINE)
    assert [kind for kind, _, _ in acks] == list(SAMPLE_TYPES), report
    assert all(code == "200" for _, code, _ in acks), report
    records = re.findall(r"^--- topic=(\S+) key=(\S+) partition=\d+ offset=\d+$", proc.stdout, re.MULTILINE)
    assert sorted(records) == sorted(EXPECTED_RECORDS), report
    assert re.search(r"^9 records read back from Kafka$", proc.stdout, re.MULTILINE), report
