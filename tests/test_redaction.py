"""Personal-data redaction with realistic messages, including numbers that must be kept."""

import pytest

from bot.redaction import redact

REDACTED = [
    ("my email is jane.doe+shop@example.co.uk thanks", "my email is <EMAIL> thanks"),
    ("card 4111 1111 1111 1111 was charged twice", "card <CARD> was charged twice"),
    ("I paid with 5500-0000-0000-0004 yesterday", "I paid with <CARD> yesterday"),
    ("refund to DE89 3704 0044 0532 0130 00 please", "refund to <IBAN> please"),
    ("my IBAN is GB82WEST12345698765432", "my IBAN is <IBAN>"),
    ("call me on +44 20 7946 0958", "call me on <PHONE>"),
    ("phone: 555-010-4477", "phone: <PHONE>"),
    ("reach me at (555) 010 4477 or bob@mail.com", "reach me at <PHONE> or <EMAIL>"),
]

KEPT = [
    "how can I cancel purchase 113542617735902?",  # passes the Luhn check, but it is a purchase
    "where is order #00004587345",
    "invoice number 4111111111111111 is wrong",
    "I was charged 1,299.00 dollars on 2024-05-01",
    "my postcode is 10115 and I ordered 3 shirts",
    "tracking 1Z999AA10123456784",
]


@pytest.mark.parametrize("text,expected", REDACTED)
def test_personal_data_is_redacted(text, expected):
    assert redact(text).text == expected


@pytest.mark.parametrize("text", KEPT)
def test_order_numbers_and_ordinary_numbers_are_kept(text):
    result = redact(text)
    assert result.text == text
    assert result.counts == {}


def test_counts():
    assert redact("a@b.io and c@d.io, card 4111111111111111").counts == {"EMAIL": 2, "CARD": 1}
