"""The helm binary for the chart tests.

It is ``$HELM``, else ``${XDG_CACHE_HOME:-~/.cache}/lark-bridge/bin/helm`` (where ``.ci/helm.sh``
builds it), else ``helm`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def find_helm() -> str | None:
    """The helm binary to use, or None."""
    if explicit := os.environ.get("HELM"):
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache / "lark-bridge" / "bin" / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("helm")
