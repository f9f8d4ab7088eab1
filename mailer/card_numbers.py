"""Find payment card numbers in any data the service is handed, so it can refuse to keep them.

The privacy policy promises card numbers are never stored. A card number here
is 13 to 19 digits, written together or in groups split by single spaces or
dashes, that passes the Luhn check. Inside a longer run of digit groups, every
stretch of whole groups is checked too, so "4111 1111 1111 1111 12/25" is
caught; one unbroken run of more than 19 digits (a tracking number) is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_DIGIT_RUN = re.compile(r"(?<![\d])\d+(?:[ -]\d+)*(?![\d])")
_GROUP_SEPARATOR = re.compile(r"[ -]")
MIN_DIGITS, MAX_DIGITS = 13, 19


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _candidates(text: str) -> Iterator[str]:
    for run in _DIGIT_RUN.finditer(text):
        groups = _GROUP_SEPARATOR.split(run.group())
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > MAX_DIGITS:
                    break
                if len(digits) >= MIN_DIGITS:
                    yield digits


def text_holds_card_number(text: str) -> bool:
    """True when `text` contains something that is a payment card number by the rule above."""
    if sum(char.isdigit() for char in text) < MIN_DIGITS:
        return False
    return any(luhn_valid(candidate) for candidate in _candidates(text))


def holds_card_number(value: Any) -> bool:
    """True when any string inside `value` (nested dicts and lists, keys included) holds one."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if text_holds_card_number(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            # A card number sent as a JSON number is still a card number.
            and text_holds_card_number(str(item))
        ):
            return True
    return False
