"""Subprocesses of the tests: ``python -m bridge serve``, the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]


def bridge_env(*, keep: Sequence[str] = (), **settings: str) -> dict[str, str]:
    """This process's environment without any ``BRIDGE_*`` variable (a developer's shell must not
    leak settings into the test) except those named in ``keep``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") or k in keep}
    env.update(settings)
    return env


def run_interruptible(
    cmd: Sequence[str], *, env: dict[str, str], cwd: Path = REPO_ROOT, timeout_s: float, grace_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion, capturing its text output. Past ``timeout_s`` it gets SIGINT
    (Ctrl-C: its ``finally`` blocks and atexit hooks stop what it started, e.g. a broker JVM),
    then, ``grace_s`` later, SIGKILL for its whole process group; the test then fails with the
    output so far."""
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(
            f"{' '.join(cmd)} did not finish within {timeout_s:.0f}s\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
