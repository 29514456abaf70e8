"""Shared fixtures: secrets of a test app and the platform-side request builder."""

from __future__ import annotations

import pytest

from bridge.devtools.platform import Platform

TOKEN = "vt-4f1c2d9a0b7e4e21a5c3"
KEY = "ek-9b2e71c4d8a34f0e"
OLD_KEY = "ek-old-31aa0c5e77d2"


@pytest.fixture
def platform() -> Platform:
    """The platform as configured with the current encrypt key."""
    return Platform(encrypt_key=KEY)
