"""Team-answer files (bot/answer_files.py): CSV, JSONL and Markdown FAQ read into answers; each
bad file refused with one line naming the file, the row or line, and the field."""

from __future__ import annotations

import json

import pytest

from bot.answer_files import check_answer, read_answers
from bot.errors import DataError, SettingError

KNOWN = {"track_order", "cancel_order", "out_of_scope"}


def test_csv_with_its_own_column_names_and_an_optional_request(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_text("Intent,Question,Reply,owner\n"
                    "track_order, where is my parcel ,\"Track it at {{Order Tracking URL}}.\nThanks!\",ana\n"
                    "cancel_order,,Open Orders and press Cancel.,bo\n", encoding="utf-8")
    assert read_answers(path, KNOWN) == [
        {"intent": "track_order", "reply": "Track it at {{Order Tracking URL}}.\nThanks!", "request": "where is my parcel"},
        {"intent": "cancel_order", "reply": "Open Orders and press Cancel.", "request": None},
    ]


def test_jsonl_keys_may_differ_per_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [{"intent": "track_order", "reply": "Tracking is under Orders.", "text": "where's my stuff"},
             {"intent": "cancel_order", "reply": "Press Cancel.", "request": "stop my order", "text": "ignored"},
             {"intent": "cancel_order", "reply": "We can cancel it."}]
    path.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    assert read_answers(path) == [
        {"intent": "track_order", "reply": "Tracking is under Orders.", "request": "where's my stuff"},
        {"intent": "cancel_order", "reply": "Press Cancel.", "request": "stop my order"},
        {"intent": "cancel_order", "reply": "We can cancel it.", "request": None},
    ]


def test_markdown_faq(tmp_path):
    path = tmp_path / "faq.md"
    path.write_text("# track_order\n\n"
                    "## Where is my parcel?\n"
                    "Open {{Order Tracking URL}}.\n\n"
                    "- it updates hourly\n\n"
                    "```\n# a code line, not a heading\n```\n"
                    "### More help\n"
                    "Write to us.\n\n"
                    "## How long does delivery take?\r\n"
                    "Two to five days.\r\n"
                    "# `cancel_order`\n"
                    "## Stop my order\n"
                    "Press *Cancel* under Orders.\n", encoding="utf-8")
    assert read_answers(path, KNOWN) == [
        {"intent": "track_order", "request": "Where is my parcel?",
         "reply": "Open {{Order Tracking URL}}.\n\n- it updates hourly\n\n```\n# a code line, not a heading\n```\n"
                  "### More help\nWrite to us."},
        {"intent": "track_order", "request": "How long does delivery take?", "reply": "Two to five days."},
        {"intent": "cancel_order", "request": "Stop my order", "reply": "Press *Cancel* under Orders."},
    ]


@pytest.mark.parametrize("name,content,message", [
    ("a.txt", "intent,reply\n", "a.txt: unknown format '.txt'; expected one of .csv, .jsonl, .md, .markdown"),
    ("a.csv", b"intent,reply\ntrack_order,caf\xe9\n",
     "a.csv: not UTF-8 text: byte 0xe9 at offset 28 (line 2); save the file as UTF-8"),
    ("a.csv", "intent,answer\ntrack_order,hi\n",
     "a.csv, field 'reply': missing; the columns are: intent, answer; "
     "expected the fields intent, reply and optionally request (or text/question)"),
    ("a.csv", "intent,reply\ntrack_order,Fine.\ncancel_order,  \n",
     "a.csv, row 2, field 'reply': must not be empty (the answer's text)"),
    ("a.csv", "INTENT,reply\ntrack_order,Fine.\n,Fine.\n",
     "a.csv, row 2, field 'INTENT': must not be empty (the intent the answer is for)"),
    ("a.csv", "intent,reply\ntrack_order,Fine.,extra\n", "a.csv, row 1: 3 values for 2 columns"),
    ("a.csv", "intent,reply\nrefund,Fine.\n",
     "a.csv, row 1, field 'intent': 'refund' is not an intent the production classifier knows "
     "(known: cancel_order, track_order)"),
    ("a.csv", "intent,reply\nout_of_scope,Sorry.\n",
     "a.csv, row 1, field 'intent': 'out_of_scope' is never answered; expected an intent the bot answers"),
    ("a.csv", "intent,reply\n", "a.csv: no answers found; expected the fields intent, reply and optionally request"),
    ("a.jsonl", '{"intent": "track_order", "reply": "Fine."}\n{"intent": "track_order", "reply": "x"\n',
     "a.jsonl, row 2: not valid JSON (Expecting ',' delimiter at column 39)"),
    ("a.jsonl", '{"intent": "track_order", "reply": "Fine."}\n\n{"intent": "track_order"}\n',
     "a.jsonl, row 3, field 'reply': missing; the keys are: intent; expected the fields intent, reply"),
    ("a.jsonl", '{"intent": "track_order", "reply": 42}\n',
     "a.jsonl, row 1, field 'reply': must be text, not int"),
    ("a.jsonl", '["track_order", "Fine."]\n', "a.jsonl, row 1: expected a JSON object, got list"),
    ("faq.md", "## Where is my parcel?\nUnder Orders.\n",
     "faq.md, line 1: an answer ('## Where is my parcel?') before any intent heading; "
     "expected a '# intent_name' heading above it"),
    ("faq.md", "# track_order\n## Where is my parcel?\nUnder Orders.\n## Late?\n\n# cancel_order\n",
     "faq.md, line 4, field 'reply': must not be empty (the answer's text)"),
    ("faq.md", "Our FAQ\n\n# track_order\n## Where?\nHere.\n",
     "faq.md, line 1: text outside an answer; expected a '## question' heading above it"),
    ("faq.md", "# track_order\nAll about tracking.\n## Where?\nHere.\n",
     "faq.md, line 2: text outside an answer"),
    ("faq.md", "# track_order\n## Where?\nHere.\n# Refunds\n## Money back?\nYes.\n",
     "faq.md, line 4, field 'intent': 'Refunds' is not an intent the production classifier knows"),
    ("faq.md", "# \n## Where?\nHere.\n", "faq.md, line 1, field 'intent': must not be empty"),
    ("faq.md", "just some notes\n", "faq.md, line 1: text outside an answer"),
    ("faq.md", "\n\n", "faq.md: no answers found; expected '# intent' headings with '## question' headings"),
])
def test_bad_files_are_one_line_naming_file_row_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as caught:
        read_answers(path, KNOWN)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(caught.value)


def test_check_answer_without_known_intents_takes_any_but_out_of_scope():
    assert check_answer({"intent": " refund ", "reply": " Yes. ", "request": "  "}) == \
        {"intent": "refund", "reply": "Yes.", "request": None}
    with pytest.raises(SettingError) as caught:
        check_answer({"intent": "out_of_scope", "reply": "x"})
    assert caught.value.field == "intent"
    many = {f"intent_{i:02d}" for i in range(30)}
    with pytest.raises(SettingError, match=r"known: intent_00, .*, intent_11, \.\.\. \(30 in all\)"):
        check_answer({"intent": "other", "reply": "x"}, many)
