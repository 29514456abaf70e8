"""Prometheus's own Go code for the monitoring tests: ``promcheck`` (tests/support/go/promcheck),
built by ``.ci/promcheck.sh`` into ``${XDG_CACHE_HOME:-~/.cache}/lark-bridge/bin`` (or ``$PROMCHECK``).

* :func:`check_rules` — rulefmt's validation of a rules file (what ``promtool check rules`` runs);
* :func:`selectors` — every vector selector of PromQL expressions (metric, matchers, grouping
  labels), from Prometheus's PromQL parser.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def find_promcheck() -> str | None:
    """The promcheck binary to use, or None."""
    if explicit := os.environ.get("PROMCHECK"):
        return explicit if Path(explicit).is_file() else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache / "lark-bridge" / "bin" / "promcheck"
    return str(cached) if cached.is_file() and os.access(cached, os.X_OK) else None


def check_rules(binary: str, path: Path) -> str:
    """Validate the rules file ``path``; returns promcheck's report ("FILE: N rules"). Raises
    AssertionError with Prometheus's messages when the file is not a valid rules file."""
    proc = subprocess.run([binary, "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def selectors(binary: str, exprs: list[str]) -> list[dict[str, Any]]:
    """Per expression: ``{"expr", "selectors": [{"metric", "matchers": [{"name", "type", "value"}],
    "grouping": [label, ...]}]}``. Raises AssertionError when an expression does not parse."""
    proc = subprocess.run(
        [binary, "selectors"], input=json.dumps(exprs), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    parsed: list[dict[str, Any]] = json.loads(proc.stdout)
    return parsed
