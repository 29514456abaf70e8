"""Shared fixtures: the platform-side request builder of the test app (secrets: tests.support.credentials)."""

from __future__ import annotations

import pytest

from bridge_devtools.platform import Platform
from tests.support.credentials import KEY


@pytest.fixture
def platform() -> Platform:
    """The platform as configured with the current encrypt key."""
    return Platform(encrypt_key=KEY)
