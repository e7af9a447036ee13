"""Placeholder filling: profile loading, entity extraction, slot rules, real Bitext replies."""

from __future__ import annotations

import csv
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import SupportbotError
from bot.placeholders import extract_entities, fill, is_fact_slot, load_profile, only_entities, slot_key
from bot.settings import DEFAULT_PROFILE

PHONE = "+1 (555) 010-4477"


@pytest.fixture(scope="module")
def profile() -> dict[str, str]:
    return load_profile(DEFAULT_PROFILE)


def _bitext_replies(data_dir, contains: str, count: int) -> list[tuple[str, str]]:
    """``count`` (instruction, response) pairs whose response holds ``contains``, spread over the file."""
    path = data_dir / "bitext-customer-support" / "bitext_customer_support_v1.csv"
    with path.open(encoding="utf-8") as handle:
        rows = [(r["instruction"], r["response"]) for r in csv.DictReader(handle) if contains in r["response"]]
    return rows[:: max(1, len(rows) // count)][:count]


# -- profile -----------------------------------------------------------------------------------

def test_the_shipped_profile_loads_with_aliases(profile):
    assert profile["customer_support_phone_number"] == PHONE
    assert profile["customer_service_phone_number"] == PHONE
    assert profile["support_email"] == profile["customer_support_email"]


def test_slot_key_is_snake_case_without_anonymized():
    assert slot_key("Customer Support Phone Number") == "customer_support_phone_number"
    assert slot_key(" Live Chat Anonymized ") == "live_chat"
    assert slot_key("Website/App Name") == "website_app_name"


@pytest.mark.parametrize("text, message", [
    ("phone = 5550104477\n", "key 'phone' must be a string, not int"),
    ("phone = \n", "cannot be read"),
    ('[aliases]\nphone = "customer_support_phone_number"\n', "alias 'aliases.phone' names"),
    ('aliases = "x"\n', "'aliases' must be a table"),
    ('a = "x"\n[aliases]\nb = 3\n', "key 'aliases.b' must be a string"),
    ("[support]\nphone = '1'\n", "key 'support' must be a string, not dict"),
])
def test_bad_profiles_are_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "profile.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SupportbotError, match=re.escape(message)) as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


def test_a_missing_profile_file_is_refused(tmp_path):
    with pytest.raises(SupportbotError, match="nowhere.toml not found"):
        load_profile(tmp_path / "nowhere.toml")


def test_an_empty_value_counts_as_missing(tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text('Customer_Support_Phone_Number = "  "\nlive_chat = "Live Chat"\n', encoding="utf-8")
    assert load_profile(path) == {"live_chat": "Live Chat"}


# -- entities ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("where is order 113542617735902?", {"order_number": "113542617735902"}),
    ("my order number is ABC-12345.", {"order_number": "ABC-12345"}),
    ("I need invoice #INV-2231 please", {"invoice_number": "INV-2231"}),
    ("check bill #85632 and purchase no. 00123842", {"invoice_number": "85632", "order_number": "00123842"}),
    ("tracking number: 1Z999AA10123456784", {"tracking_number": "1Z999AA10123456784"}),
    ("I ordered 3 items in 2023 and my order is late", {}),
    ("", {}),
])
def test_extract_entities(text, expected):
    assert extract_entities(text) == expected


@pytest.mark.parametrize("text, asked, expected", [
    ("88213", "To check it, may I please have the order number?", {"order_number": "88213"}),
    ("it's #A-22931", "Could you share the tracking number?", {"tracking_number": "A-22931"}),
    ("yes", "May I have the order number?", {}),
    ("88213", "Open Orders to see your order number.", {}),   # not asked: a bare number stays unknown
    ("88213", "Is it the order number or the invoice number?", {}),  # which one is unclear
    ("order 4471", "May I have the invoice number?", {"order_number": "4471"}),  # named: as said
])
def test_a_bare_number_answers_the_question_that_asked_for_it(text, asked, expected):
    assert extract_entities(text, [asked]) == expected


# -- slot rules --------------------------------------------------------------------------------

def test_profile_facts_are_filled(profile):
    filled = fill("Call {{Customer Support Phone Number}} or use {{Live Chat}}.", profile)
    assert filled.text == f"Call {PHONE} or use Live Chat."
    assert (filled.missing_slots, filled.needs_fallback) == ([], False)


def test_ui_labels_are_shown_as_their_words(profile):
    filled = fill("Go to the {{Order History}} or {{Account Settings}} section.", profile)
    assert filled.text == "Go to the Order History or Account Settings section."
    assert filled.missing_slots == []


@pytest.mark.parametrize("slot", ["Customer Support Phone Number", "Business Hours Start Time", "Case 1",
                                  "number of days", "list of circumstances where customers can request refunds"])
def test_business_facts_are_recognised(slot):
    assert is_fact_slot(slot)


@pytest.mark.parametrize("slot", ["Order History", "Account Settings", "Refund Policy", "Contact Us"])
def test_ui_labels_are_not_facts(slot):
    assert not is_fact_slot(slot)


def test_a_fact_missing_from_the_profile_drops_its_sentence():
    reply = "Sorry about that. Please call {{Customer Support Phone Number}} today. We reply within {{Response Time}}.\n" \
            "1. Open {{Order History}}.\n2. Email {{Support Email}}.\n3. Pick the order."
    filled = fill(reply, {})
    assert filled.text == "Sorry about that.\n1. Open Order History.\n2. Pick the order."
    assert filled.missing_slots == ["Customer Support Phone Number", "Response Time", "Support Email"]


def test_entities_fill_order_and_invoice_slots(profile):
    entities = extract_entities("what about order 113542617735902 and invoice #INV-2231")
    reply = ("Order {{Order Number}} ({{Purchase ID Anonymized}}) is on invoice {{Invoice Number}}. "
             "Look for the order with the number {{113542617735902}}.")
    filled = fill(reply, profile, entities)
    assert filled.text == ("Order 113542617735902 (113542617735902) is on invoice INV-2231. "
                           "Look for the order with the number 113542617735902.")


def test_personal_values_not_given_are_removed_with_their_lead_in(profile):
    reply = ("No worries, {{Name Field Anonymized}}, I'm here. Look for the order with the number "
             "{{Order Number Anonymized}}. Track order #{{Order ID Anonymized}} now.\n- Date of purchase: "
             "{{Purchase Date Anonymized}}")
    filled = fill(reply, profile, {})
    assert filled.text == "No worries, I'm here. Look for the order. Track your order now.\n- Date of purchase"
    assert filled.missing_slots == ["Name Field Anonymized", "Order Number Anonymized",
                                    "Order ID Anonymized", "Purchase Date Anonymized"]


@pytest.mark.parametrize("reply,expected", [
    ("I understand your need to cancel order number {{Order Number}}.", "I understand your need to cancel your order."),
    ("It's hard, especially if it's order number {{Purchase ID Anonymized}}.", "It's hard, especially if it's your order."),
    ("Order number {{Order Number}} was shipped.", "Your order was shipped."),
    ("Canceling the purchase number {{Order Number Anonymized}} is easy.", "Canceling the purchase is easy."),
    ("Enter it in the {{Order Number}} field.", "Enter it in the field."),  # an entity slot is never a label
    ("3. Find the purchase associated with {{Order ID Anonymized}}.", "3. Find the purchase."),
    ("Look for the order with the reference number {{Order Number}}.", "Look for the order."),
    ("Find the invoice identified as {{Invoice Number}}.", "Find the invoice."),
    ("Look for the order with the number Purchase Number Anonymized.", "Look for the order."),  # braces lost
])
def test_an_order_number_not_given_leaves_the_order(profile, reply, expected):
    filled = fill(reply, profile, {})
    assert (filled.text, len(filled.missing_slots)) == (expected, 1)


def test_nothing_useful_left_asks_for_a_fallback():
    filled = fill("Certainly! Call {{Customer Support Phone Number}} or visit {{Website URL}}.", {})
    assert filled.needs_fallback and filled.text == "Certainly!"
    assert fill("", {}).needs_fallback
    assert not fill("Certainly! You can change your address under Account Settings.", {}).needs_fallback


@pytest.mark.parametrize("reply, expected", [
    ("Hello {{ }} there.", "Hello there."),
    ("Open {{Order History}} }} now {{", "Open Order History now"),
    ("A {{{{Order History}}}} b", "A Order History b"),
    ("Half {{Order\nHistory}} slot", "Half Order\nHistory slot"),
])
def test_malformed_slots_leave_no_braces(profile, reply, expected):
    assert fill(reply, profile).text == expected


def test_sentences_are_not_split_inside_slots_or_after_list_numbers(profile):
    reply = "1. Visit {{Website Name}}. 2. Done, e.g. {{Case 1. Situation 2}} here."
    assert fill(reply, profile).text == "1. Visit acme-outfitters.example."


_FRAGMENTS = st.sampled_from([
    "{{", "}}", "{", "}", "{{ }}", "{{Customer Support Phone Number}}", "{{Order History}}", "{{Case 1}}",
    "{{Order Number Anonymized}}", "{{113542617735902}}", ". ", "\n", " ", ", ", "1. ", "Hello",
])


@settings(max_examples=300, deadline=None)
@given(reply=st.one_of(st.text(), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5))).map("".join)),
       values=st.dictionaries(st.sampled_from(["customer_support_phone_number", "order_history", "x"]),
                              st.text(max_size=8)),
       entities=st.dictionaries(st.sampled_from(["order_number", "invoice_number"]), st.text(max_size=8)))
def test_no_double_brace_ever_reaches_the_customer(reply, values, entities):
    text = fill(reply, values, entities).text
    assert "{{" not in text and "}}" not in text


# -- real Bitext replies -----------------------------------------------------------------------

def test_real_replies_with_the_phone_slot_show_the_phone_number(data_dir, profile):
    pairs = _bitext_replies(data_dir, "{{Customer Support Phone Number}}", 20)
    assert len(pairs) == 20
    for instruction, response in pairs:
        filled = fill(response, profile, extract_entities(instruction))
        assert "{{" not in filled.text and "}}" not in filled.text, response
        assert PHONE in filled.text, response
        assert not filled.needs_fallback


def test_real_replies_with_any_slot_keep_no_raw_slot(data_dir, profile):
    pairs = _bitext_replies(data_dir, "{{", 40)
    for instruction, response in pairs:
        filled = fill(response, profile, extract_entities(instruction))
        assert "{{" not in filled.text and "}}" not in filled.text, response
        assert len(filled.text) > 0.5 * len(SLOTLESS.sub("", response)), response


SLOTLESS = re.compile(r"\{\{[^{}]*\}\}")


@pytest.mark.parametrize("text,expected", [
    ("order 3310", True), ("it's order #A-2231", True), ("Order no. 4471, thanks!", True),
    ("cancel order 3310", False), ("order 3310 arrived broken", False), ("hello", False),
])
def test_only_entities_tells_a_bare_number_from_a_request(text, expected):
    assert only_entities(text, extract_entities(text)) is expected
