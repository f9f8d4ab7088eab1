"""The card-number guard: what counts as a payment card number."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.card_numbers import holds_card_number, luhn_valid, text_holds_card_number


def luhn_complete(body: str) -> str:
    """Append the check digit that makes `body` pass Luhn."""
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "card: 5500 0000 0000 0004 exp 12/27",
        "378282246310005",  # American Express, 15 digits
        "4111111111111111 12/25",  # number and expiry written together
        "6011111111111117",
        "4222222222222",  # 13 digits
        # Every separator a person types between groups (issue 15: dots and underscores
        # were missed), and a few of them together.
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111/1111/1111/1111",
        "4111\u00b71111\u00b71111\u00b71111",
        "4111 \u2013 1111 \u2013 1111 \u2013 1111",
        "4111\u00a01111\u00a01111\u00a01111",  # no-break spaces
        "4111\t1111\t1111\t1111",
        "4111  1111  1111  1111",
        # full-width digits and dots
        "\uff14\uff11\uff11\uff11" + "\uff0e\uff11\uff11\uff11\uff11" * 3,
        "card 4111-1111.1111_1111 thanks",
    ],
)
def test_card_numbers_are_found(text):
    assert text_holds_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "order 123456789012",  # 12 digits: too short
        "94001118992233445566778",  # a 23-digit tracking number
        "call +49 30 1234 567",
        "2026-11-25",
        "",
        "no digits at all",
        "version 1.2.3.4.5.6.7.8.9.10.11",
        "1.234.567,89 €",
        "12/25/2026 10:30",
        "order 4111 1111\n1111 1111 (two lines, two numbers)",
    ],
)
def test_other_digits_are_not_card_numbers(text):
    assert not text_holds_card_number(text)


def test_nested_values_and_keys_and_numbers_are_searched():
    assert holds_card_number({"items": [{"note": "pay with 4111111111111111"}]})
    assert holds_card_number({"4111 1111 1111 1111": "as a key"})
    assert holds_card_number({"number": 4111111111111111})
    assert not holds_card_number({"qty": 2, "flag": True, "price": 12.5, "none": None})


@given(
    body=st.text(alphabet="0123456789", min_size=12, max_size=18),
    separator=st.sampled_from(["", " ", "-", ".", "_", "/", " - ", "\u2013", "\u00a0"]),
    prefix=st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=20),
)
def test_any_luhn_valid_number_of_13_to_19_digits_is_found(body, separator, prefix):
    number = luhn_complete(body)
    grouped = separator.join(number[i : i + 4] for i in range(0, len(number), 4))
    assert holds_card_number({"note": f"{prefix} {grouped} thanks"})
