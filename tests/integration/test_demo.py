"""README's ``make demo`` stays true: ``python -m bridge_devtools.demo`` starts the local broker
and the bridge, sends the three samples, and reads all four records back (the third-party
sample fans out to two rooms)."""

from __future__ import annotations

import re
import sys

import pytest

from bridge_devtools.broker import VERSION_ENV
from tests.support.processes import REPO_ROOT, bridge_env, run_interruptible

pytestmark = pytest.mark.integration


def test_make_demo_reads_back_four_records() -> None:
    # No BRIDGE_* setting from the caller's shell; the broker version pin (a devtools variable,
    # as the other integration tests' broker uses it) is kept.
    env = bridge_env(keep=(VERSION_ENV,))
    proc = run_interruptible([sys.executable, "-m", "bridge_devtools.demo"], env=env, cwd=REPO_ROOT, timeout_s=300)
    report = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert re.search(r"^4 records read back from Kafka$", proc.stdout, re.MULTILINE), report
