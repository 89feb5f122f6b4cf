"""The error of a profile or mix that cannot be used."""

from __future__ import annotations

from engine import SparkNetError


class ConfigError(SparkNetError):
    """A profile, mix or override that cannot be used; its message names the file, the key and the fix."""
