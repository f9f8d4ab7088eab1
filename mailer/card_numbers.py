"""Find payment card numbers in any data the service is handed, so it can refuse to keep them.

The privacy policy promises card numbers are never stored. A card number here
is 13 to 19 digits, written together or in groups split by what people type
between groups: spaces of any kind (also no-break and thin ones, tabs), dashes
and hyphens of any kind, dots, underscores, slashes and middle dots, up to three
of them together ("4111 - 1111"), that passes the Luhn check. Inside a longer run
of digit groups, every stretch of whole groups is checked too, so
"4111 1111 1111 1111 12/25" is caught; one unbroken run of more than 19 digits
(a tracking number) is not.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

# What people type between the groups of a card number: whitespace within a line (any
# Unicode space), the dashes and hyphens of Unicode (U+2010 to U+2015, the minus sign,
# full-width and small ones), dots (also full-width and ideographic), underscores, slashes
# and middle dots.
_SEPARATOR = (r"(?:[^\S\r\n]|[\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d._\uff0e\u3002\uff3f/"
              r"\uff0f\u00b7\u2027\u30fb])")
# \d is any Unicode digit: a card number typed in full-width digits is still one.
_DIGIT_RUN = re.compile(rf"(?<![\d])\d+(?:{_SEPARATOR}{{1,3}}\d+)*(?![\d])")
_GROUP_SEPARATOR = re.compile(rf"{_SEPARATOR}{{1,3}}")
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
        groups = ["".join(str(unicodedata.digit(c)) for c in group)
                  for group in _GROUP_SEPARATOR.split(run.group())]
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


def strings_in(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every text inside `value` with where it was: dict keys, nested values, and numbers
    (as their digits), each with a dotted path such as `attributes.note` or `items.0`."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            yield where, str(item)
        elif isinstance(item, float):
            if math.isfinite(item) and item == int(item):
                yield where, str(int(item))
            yield where, repr(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                # A key is reported at its parent's path: the path must never
                # echo the offending text back.
                stack.append((where, key))
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}.{i}" if where else str(i), child)
                         for i, child in enumerate(item))


def card_number_at(value: Any) -> str | None:
    """The path of the first text inside `value` that holds a card number, or None."""
    for where, text in strings_in(value):
        if text_holds_card_number(text):
            return where or "_body"
    return None


def holds_card_number(value: Any) -> bool:
    """True when any text inside `value` (keys, nested values, numbers) holds a card number."""
    return card_number_at(value) is not None
