"""The helm binary for the chart tests (found by :func:`tests.support.helm.find_helm`).

Without one the tests fail when ``CI`` is ``true`` (CI must run them) and are skipped otherwise.
"""

from __future__ import annotations

import os

import pytest

from tests.support.helm import find_helm


@pytest.fixture(scope="session")
def helm() -> str:
    found = find_helm()
    if found is None:
        reason = (
            "no helm binary: run .ci/helm.sh (builds it into "
            "${XDG_CACHE_HOME:-~/.cache}/lark-bridge/bin), set $HELM or put helm on PATH"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found
