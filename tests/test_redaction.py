"""Personal-data redaction with realistic messages, including numbers that must be kept, and the
corpus ``tests/data/redaction_corpus.jsonl`` scored by ``bench/redaction_corpus.py``."""

import sys
from pathlib import Path

import pytest

from bot.redaction import redact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from redaction_corpus import load_corpus, score  # noqa: E402

REDACTED = [
    ("my email is jane.doe+shop@example.co.uk thanks", "my email is <EMAIL> thanks"),
    ("card 4111 1111 1111 1111 was charged twice", "card <CARD> was charged twice"),
    ("I paid with 5500-0000-0000-0004 yesterday", "I paid with <CARD> yesterday"),
    ("refund to DE89 3704 0044 0532 0130 00 please", "refund to <IBAN> please"),
    ("my IBAN is GB82WEST12345698765432", "my IBAN is <IBAN>"),
    ("call me on +44 20 7946 0958", "call me on <PHONE>"),
    ("phone: 555-010-4477", "phone: <PHONE>"),
    ("reach me at (555) 010 4477 or bob@mail.com", "reach me at <PHONE> or <EMAIL>"),
    # the three that escaped redaction in issue 17
    ("please refund to my card number: 4111 1111 1111 1111", "please refund to my card number: <CARD>"),
    ("refund it to card no. 4111111111111111 please", "refund it to card no. <CARD> please"),
    ("my number is 4155550199", "my number is <PHONE>"),
    ("new number +4915123456789 pls update", "new number <PHONE> pls update"),
    ("ES91 2100 0418 4502 0005 1332 is my account", "<IBAN> is my account"),
    ("refund my order 12345 to card 4111111111111111", "refund my order 12345 to card <CARD>"),
]

KEPT = [
    "how can I cancel purchase 113542617735902?",  # passes the Luhn check, but it is a purchase
    "where is order #00004587345",
    "my order number is 5521",  # "number is" belongs to the order, it is not a phone word (found by QA)
    "invoice number 4111111111111111 is wrong",
    "I was charged 1,299.00 dollars on 2024-05-01",
    "my postcode is 10115 and I ordered 3 shirts",
    "tracking 1Z999AA10123456784",
    "order number 4155550199 hasn't shipped",
    "USPS tracking number 9400111899223856928499 says delivered",
    "between 2024-01-01 and 2024-12-31 I ordered 14 times",
    "total was 1.234.567,89 EUR on the B2B invoice",
    "ISBN 978-3-16-148410-0 book missing",
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


def test_the_company_s_own_values_can_be_allowed():
    reply = "Call us on +1 (555) 010-4477 or write to help@shop.example; your card 4111111111111111"
    result = redact(reply, allowed=["+1 (555) 010-4477", "help@shop.example"])
    assert result.text == "Call us on +1 (555) 010-4477 or write to help@shop.example; your card <CARD>"


def test_corpus_precision_and_recall():
    """At least 100 realistic messages (cards, phones, e-mails, IBANs to remove; order, invoice and
    tracking numbers, dates and amounts to keep). The redactor of before issue 17 scored precision
    0.893, recall 0.882 (9 items missed) here."""
    corpus = load_corpus()
    assert len(corpus) >= 100 and sum(1 for row in corpus if not row["pii"]) >= 50
    result = score(redact, corpus)
    print({key: result[key] for key in ("precision", "recall", "caught", "items", "false_alarms", "missed")})
    assert result["recall"] >= 0.97 and result["precision"] >= 0.97, result
    assert sum(result["missed"].values()) <= 2, result["missed_items"]
