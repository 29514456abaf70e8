"""The test app's secrets: its verification token, its encrypt key and a previous key (rotation)."""

from __future__ import annotations

from typing import Final

TOKEN: Final = "vt-4f1c2d9a0b7e4e21a5c3"
KEY: Final = "ek-9b2e71c4d8a34f0e"
OLD_KEY: Final = "ek-old-31aa0c5e77d2"
