"""Data loading: built-in sets, user formats, malformed files, stratified splits."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil

import pytest

from bot.errors import SupportbotError
from training.data import DataError, load, split



def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_bitext_counts_and_split(data_dir):
    data = load("bitext", data_dir=data_dir)
    assert len(data.examples) == 4514
    assert len(data.intents) == 27
    assert all(e.reply for e in data.examples)
    parts = split(data, seed=42)
    assert parts.sizes() == {"train": 3610, "validation": 452, "test": 452}
    texts = lambda xs: {(e.text, e.intent) for e in xs}  # noqa: E731
    assert not texts(parts.train) & texts(parts.test)
    assert {e.intent for e in parts.test} == set(data.intents)


def test_bitext_split_is_stable(data_dir):
    """The same file and seed give the same rows on every machine (digest recorded once)."""
    parts = split(load("bitext", data_dir=data_dir), seed=42)
    digest = hashlib.sha256("\n".join(e.source for e in parts.test).encode()).hexdigest()
    assert digest[:16] == "9053d5ebd8ee6665"
    other = split(load("bitext", data_dir=data_dir), seed=7)
    assert [e.source for e in other.test] != [e.source for e in parts.test]


def test_banking77_uses_official_test(data_dir):
    data = load("banking77", data_dir=data_dir)
    assert (len(data.examples), len(data.test), len(data.intents)) == (10003, 3080, 77)
    parts = split(data)
    assert parts.test == data.test
    assert len(parts.train) + len(parts.validation) == 10003
    assert "+" in data.sha256


def test_generic_csv_jsonl_and_rasa(tmp_path):
    csv_file = write(tmp_path, "a.csv", 'text,intent,reply\n"Where, is my order?",track_order,It is on its way.\nhi,greet,\n')
    data = load(str(csv_file))
    assert [(e.text, e.intent, e.reply) for e in data.examples] == [
        ("Where, is my order?", "track_order", "It is on its way."),
        ("hi", "greet", None),
    ]
    jsonl = write(tmp_path, "a.jsonl", '{"text": "refund please", "intent": "get_refund"}\n\n{"text": "hello", "intent": "greet", "reply": "Hi!"}\n')
    assert [e.reply for e in load(str(jsonl)).examples] == [None, "Hi!"]
    rasa = write(tmp_path, "nlu.yml", """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey there
    - good morning
- intent: check_weather
  examples: |
    - weather in [Berlin](city) today
    - is it raining in [Paris]{"entity": "city"}
- synonym: Berlin
  examples: |
    - BER
""")
    got = [(e.text, e.intent) for e in load(str(rasa)).examples]
    assert got == [("hey there", "greet"), ("good morning", "greet"),
                   ("weather in Berlin today", "check_weather"), ("is it raining in Paris", "check_weather")]


MALFORMED = [
    ("missing column", "x.csv", "words,intent\nhi,greet\n", "x.csv: no text column found; the columns are: words, intent"),
    ("empty text", "x.csv", "text,intent\nhi,greet\n  ,greet\n", "x.csv, row 2, field 'text': empty text"),
    ("empty intent", "x.csv", "text,intent\nhi,\n", "x.csv, row 1, field 'intent': empty intent"),
    ("too many values", "x.csv", "text,intent\nhi,greet,extra\n", "x.csv, row 1: 3 values for 2 columns"),
    ("bad json", "x.jsonl", '{"text": "a", "intent": "b"}\n{"text": "a", \n', "x.jsonl, row 2: not valid JSON"),
    ("json not object", "x.jsonl", '["a", "b"]\n', "x.jsonl, row 1: expected a JSON object, got list"),
    ("json number text", "x.jsonl", '{"text": 5, "intent": "b"}\n', "x.jsonl, row 1, field 'text': expected a string, got int"),
    ("no examples", "x.csv", "text,intent\n", "x.csv: no examples found"),
    ("unknown format", "x.tsv", "hi\n", "x.tsv: unknown format '.tsv'"),
    ("rasa without nlu", "nlu.yml", "version: '3.1'\nrules: []\n", "nlu.yml, field 'nlu': expected a top-level 'nlu:' list"),
    ("rasa bad yaml", "nlu.yml", "nlu:\n- intent: a\n  examples: [\n", "nlu.yml, row 4: not valid YAML"),
    ("rasa examples not a block", "nlu.yml", "nlu:\n- intent: greet\n  examples: 3\n", "nlu.yml, row 1, field 'examples': intent 'greet'"),
]


@pytest.mark.parametrize("case,name,content,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_name_file_row_field(tmp_path, case, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        load(str(path))
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path))


def test_own_column_names_and_out_of_scope_labels(tmp_path):
    rows = "sentence,label\nwhere is my parcel,track_order\nset an alarm,none\nplay jazz,OOS\nrefund pls,get_refund\n"
    path = write(tmp_path, "own.csv", rows)
    data = load(str(path), oos_labels=["none"])
    assert data.columns == {"text": "sentence", "intent": "label"}
    assert [e.intent for e in data.examples] == ["track_order", "out_of_scope", "out_of_scope", "get_refund"]
    assert data.intents == ["get_refund", "track_order"] and len(data.out_of_scope) == 2
    named = load(str(write(tmp_path, "two.csv", "query,text,topic\nwhere,x,track\n")), text_column="query",
                 intent_column="topic")
    assert named.columns == {"text": "query", "intent": "topic"} and named.examples[0].text == "where"
    with pytest.raises(DataError, match=r"two.csv: no column 'msg'; the columns are: query, text, topic; "
                                         r"give text_column one of them") as err:
        load(str(tmp_path / "two.csv"), text_column="msg")
    assert err.value.setting == "text_column"


def test_a_built_in_data_set_is_looked_up_where_the_caller_says(tmp_path):
    with pytest.raises(SupportbotError, match=r"^bitext: bitext_customer_support_v1.csv is not in data_dir "
                                              rf"\({tmp_path}\) and there is no home to download it into"):
        load("bitext", data_dir=tmp_path)


def test_hwu64_csv_is_rebuilt_from_its_published_line_files(tmp_path, data_dir):
    from training.datasets import BUILTIN, _csv_from_lines, locate

    dataset = BUILTIN["hwu64"]
    shipped = locate(dataset, dataset.test, data_dir, tmp_path)
    rows = list(csv.reader(shipped.open(newline="", encoding="utf-8")))[1:]
    (tmp_path / "seq.in").write_text("\n".join(r[0] for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "label").write_text("\n".join(r[1] for r in rows) + "\n", encoding="utf-8")
    built = _csv_from_lines(dataset.test, tmp_path, [tmp_path / "seq.in", tmp_path / "label"])
    assert built.read_bytes() == shipped.read_bytes()
    (tmp_path / "label").write_text("alarm_query\n", encoding="utf-8")
    with pytest.raises(DataError, match="1076 utterances but 1 labels"):
        _csv_from_lines(dataset.test, tmp_path, [tmp_path / "seq.in", tmp_path / "label"])


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, "latin.csv", "text,intent\ncafé,order\n".encode("latin-1"), mode="wb")
    with pytest.raises(DataError, match=r"latin.csv: not UTF-8 text: byte 0xe9 at offset 15 \(line 2\)"):
        load(str(path))


def test_missing_file_names_builtins(tmp_path):
    with pytest.raises(DataError, match="no such file, and not a built-in data set .built-in: bitext, banking77"):
        load(str(tmp_path / "nope.csv"))


def test_checksum_mismatch(tmp_path, data_dir):
    folder = tmp_path / "bitext-customer-support"
    folder.mkdir()
    source = data_dir / "bitext-customer-support" / "bitext_customer_support_v1.csv"
    damaged = folder / source.name
    shutil.copy(source, damaged)
    with damaged.open("a") as handle:
        handle.write("\n")
    with pytest.raises(DataError) as err:
        load("bitext", data_dir=tmp_path)
    assert "bitext_customer_support_v1.csv: sha256 is" in str(err.value)
    assert "expected 079b0cec" in str(err.value)


def test_single_example_intent_warns_and_stays_in_train(tmp_path, caplog):
    rows = "".join(f"utterance {i},common\n" for i in range(10)) + "lonely one,rare\n"
    path = write(tmp_path, "x.csv", "text,intent\n" + rows)
    with caplog.at_level(logging.WARNING):
        data = load(str(path))
    assert "x.csv, row 11, field 'intent': intent 'rare' has a single example: it cannot be split" in caplog.text
    parts = split(data, seed=1)
    assert "rare" in {e.intent for e in parts.train}
    assert sum(parts.sizes().values()) == 11


@pytest.mark.parametrize("name,content,message", [
    ("few.csv", "text,intent\na,b\nc,d\ne,f\n", "few.csv: too few rows to make train/validation/test splits (3 rows, 3 intents"),
    ("dup.csv", "text,intent,text\nx,y,z\n", "dup.csv: column(s) text appear more than once in the header"),
    ("nlu.yml", "nlu:\n- intent:\n  examples: |\n    - hi\n", "nlu.yml, row 1, field 'intent': an intent without a name"),
])
def test_more_malformed_files(tmp_path, name, content, message):
    with pytest.raises(DataError) as err:
        split(load(str(write(tmp_path, name, content))))
    assert message in str(err.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a folder; give a CSV, JSONL or nlu.yml file"):
        load(str(tmp_path))


def test_case_variants_and_conflicting_labels_warn_with_rows(tmp_path, caplog):
    rows = ("text,intent\n" + "".join(f"cancel it {i},cancel_order\n" for i in range(4))
            + "please cancel,Cancel_Order\nwhere is my parcel,track_order\nWhere is  my parcel,cancel_order\n")
    path = write(tmp_path, "x.csv", rows)
    with caplog.at_level(logging.WARNING):
        load(str(path))
    assert "field 'intent': intent names that differ only in case are different intents: Cancel_Order, " \
           "cancel_order" in caplog.text
    assert "x.csv, rows 6, 7, field 'text': the same utterance 'where is my parcel' is labelled with 2 intents: " \
           "track_order (row 6), cancel_order (row 7)" in caplog.text


def test_loading_logs_the_first_problems_and_points_at_data_validate(tmp_path, caplog):
    rows = "".join(f"hello {i},greet\nhello {i},bye\n" for i in range(7))
    path = write(tmp_path, "x.csv", "text,intent\n" + rows)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        load(str(path))
    assert caplog.text.count("is labelled with 2 intents") == 5
    assert f"{path}: 2 more problem(s); `supportbot data validate {path}` lists them all" in caplog.text


def test_hwu64_conversation_moves_teach_small_talk_and_are_never_out_of_scope(data_dir, tmp_path):
    """HWU64's affirm/negate/praise become small-talk rows (relabelled, at most MOVES_PER_INTENT each);
    no conversation move is ever an out-of-scope example; without a background set there are none."""
    import random

    from bot.settings import load_settings
    from training.intents import MOVES_PER_INTENT, IntentTrainConfig, background_rows, background_set, conversation_moves

    settings = load_settings(data_dir=str(data_dir), home=str(tmp_path))
    config = IntentTrainConfig()
    background = background_set(config, settings)
    moves = conversation_moves(config, background, random.Random(0))
    by_intent = {i: [e for e in moves if e.intent == i] for i in {e.intent for e in moves}}
    assert {i: len(rows) for i, rows in by_intent.items()} == dict.fromkeys(
        ["smalltalk_affirm", "smalltalk_negate", "smalltalk_thanks"], MOVES_PER_INTENT)
    hwu = {e.text: e.intent for e in load("hwu64", data_dir=data_dir).examples}
    assert {hwu[e.text] for e in by_intent["smalltalk_thanks"]} == {"general_praise"}
    trained, held, _ = background_rows(config, background, [], None, random.Random(0))
    assert not {hwu[e.text] for e in trained + held} & {"general_affirm", "general_commandstop", "general_praise"}
    nothing = IntentTrainConfig(background="none")
    assert conversation_moves(nothing, background_set(nothing, settings), random.Random(0)) == []
