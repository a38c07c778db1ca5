"""Checks for the model configs' `__post_init__`, beside `harness.config.one_of` and `positive`.

Each raises a ConfigError that names the option as the user types it (`model.dropout`), the bad value and
what would be allowed.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError


def probability(key: str, value: Any) -> None:
    """A dropout rate: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} must be a number in [0, 1)")


def at_least(key: str, value: Any, low: int) -> None:
    """An integer >= low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")


def even(key: str, value: Any) -> None:
    """A positive even integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
        raise ConfigError(f"{key}={value!r} must be an even integer >= 2")


def divides(key: str, value: int, into_key: str, into: int) -> None:
    """`value` divides `into` (e.g. attention heads into the width)."""
    if into % value:
        raise ConfigError(f"{key}={value} must divide {into_key}={into}")
