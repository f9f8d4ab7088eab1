"""The spellings of on and off that every setting and URL option accepts."""

from __future__ import annotations

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_flag(value: str) -> bool | None:
    """True or False for a known spelling of on/off (1/0, true/false, yes/no, on/off, any
    case), None for anything else: the caller refuses it in its own words."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None
