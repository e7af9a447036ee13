"""Property-based tests (hypothesis): malformed data files and arbitrary customer messages.

* Data loader (:func:`training.data.load`): whatever bytes a CSV or JSONL file holds, loading
  returns valid examples or raises :class:`bot.errors.DataError` naming the file, never another
  exception, and writes no file; rows written properly load back exactly; the command line
  turns a bad file into one ``error:`` line.
* Text normalisation (:func:`bot.text.normalise`) and the store: any text, lone surrogates,
  NUL and other control characters and bidi overrides included, comes out storable, free of them,
  at most ``MAX_CHARS`` long, and reads back from SQLite exactly.
* Router: any text (the above, any Unicode, very long, HTML, personal data) gets exactly one
  complete logged turn, stored at most ``MAX_CHARS`` long, and a reply without a raw
  ``{{placeholder}}``. The example counts are printed (``pytest -s``) and checked.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bot.errors import DataError
from bot.text import CHANGES, MAX_CHARS, normalise
from training.data import load

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
"""For the loader tests; the home fixture is only read, so sharing it between examples is fine."""

# -- the data loader ------------------------------------------------------------------------------

FIELDS = st.text(max_size=30) | st.sampled_from(["", " ", '"', '""', "a,b", "x\ny", "\r", "\x00", "\ufeff"])
CSV_TEXT = st.builds(
    lambda header, rows: "\n".join([header] + [",".join(row) for row in rows]),
    st.sampled_from(["text,intent", "text,intent,reply", "intent,text", "text,text,intent", "utterance,label",
                     '"text","intent"', "", "text;intent"]),
    st.lists(st.lists(FIELDS, max_size=4), max_size=6),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["text", "intent", "reply", "other"]) | st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
JSONL_TEXT = st.lists(
    st.builds(json.dumps, JSON_VALUES) | st.text(max_size=40) | st.just('{"text": "hi", "intent": "greet"}'),
    max_size=6,
).map("\n".join)
FILE_BYTES = st.one_of(
    st.binary(max_size=300),
    CSV_TEXT.map(lambda text: text.encode("utf-8")),
    JSONL_TEXT.map(lambda text: text.encode("utf-8")),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
)


def _listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _load_checked(suffix: str, content: bytes, home: Path):
    """Load ``content`` written to a fresh ``data<suffix>``; check the contract; returns the
    examples, or None when the loader refused the file."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"data{suffix}"
        path.write_bytes(content)
        before, home_before = _listing(folder), _listing(home)
        try:
            examples = load(str(path)).examples
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ") or str(exc).startswith(f"{path}, row ")
            assert "\n" not in str(exc) and "\r" not in str(exc)  # one line
            examples = None
        assert _listing(folder) == before and _listing(home) == home_before  # no file written
    for e in examples or []:
        assert isinstance(e.text, str) and e.text == e.text.strip() and e.text
        assert isinstance(e.intent, str) and e.intent == e.intent.strip() and e.intent
        assert e.reply is None or (isinstance(e.reply, str) and e.reply == e.reply.strip() and e.reply)
        assert e.source.startswith(f"data{suffix}:")
    return examples


@FAST
@given(content=FILE_BYTES, suffix=st.sampled_from([".csv", ".jsonl"]))
@example(content=b"[" * 100_000, suffix=".jsonl")                      # nesting too deep
@example(content=b'{"text": ' + b"1" * 5000 + b"}", suffix=".jsonl")   # a 5000-digit number
@example(content=b"text,intent\n\"" + b"a" * 200_000 + b"\",x\n", suffix=".csv")  # field over csv's limit
@example(content=b"\xef\xbb\xbftext,intent\nhi,greet\n", suffix=".csv")  # BOM
@example(content=b"text,intent\n\xff\xfe,x\n", suffix=".csv")          # not UTF-8
@example(content=b'"utter\nance",label\nhi,greet\n', suffix=".csv")    # a line break in a header name
def test_any_file_loads_or_is_refused_with_its_name(content, suffix, isolated_home):
    _load_checked(suffix, content, isolated_home)


ROW_TEXT = st.text(min_size=1, max_size=40).filter(str.strip)
ROWS = st.lists(st.tuples(ROW_TEXT, ROW_TEXT, st.none() | ROW_TEXT), min_size=1, max_size=8)


def _as_csv(rows) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["text", "intent", "reply"])
    writer.writerows([(text, intent, reply or "") for text, intent, reply in rows])
    return out.getvalue().encode("utf-8")


def _as_jsonl(rows) -> bytes:
    lines = [json.dumps({"text": t, "intent": i, "reply": r}, ensure_ascii=False) for t, i, r in rows]
    return "\n".join(lines).encode("utf-8")


@FAST
@given(rows=ROWS, fmt=st.sampled_from([(".csv", _as_csv), (".jsonl", _as_jsonl)]))
@example(rows=[("a\u2028b", "x\x85y", None)], fmt=(".jsonl", _as_jsonl))  # line separators inside a string
def test_well_formed_rows_load_back_exactly(rows, fmt, isolated_home):
    suffix, write = fmt
    examples = _load_checked(suffix, write(rows), isolated_home)
    assert [(e.text, e.intent, e.reply) for e in examples] == [
        (text.strip(), intent.strip(), reply.strip() if reply and reply.strip() else None)
        for text, intent, reply in rows]


@pytest.mark.parametrize("name,content", [
    ("bad.csv", b"text,intent\n\xff\xfe,x\n"),
    ("bad.csv", b'text,intent\n"never closed,x\n'),
    ("bad.jsonl", b"[" * 100_000),
    ("bad.jsonl", b'{"text": ' + b"1" * 5000 + b"}"),
    ("bad.jsonl", b'["a list", "not an object"]\n'),
    ("bad.jsonl", b""),
])
def test_the_command_line_reports_a_bad_file_in_one_line(tmp_path, monkeypatch, capsys, name, content):
    from ui.cli import main

    path = tmp_path / name
    path.write_bytes(content)
    monkeypatch.setattr("sys.argv", ["supportbot", "data", "show", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}")


# -- normalisation and the store ------------------------------------------------------------------

SURROGATES = st.characters(categories=["Cs"])                  # lone halves of UTF-16 pairs
CONTROLS = st.characters(categories=["Cc"]) | st.sampled_from(["\x00", "\x1b[31m", "\r\n", "\x7f", "\x85"])
BIDI = st.sampled_from(["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                        "\u2069", "\u200e", "\u200f"])
HOSTILE = st.lists(st.text(max_size=6) | SURROGATES | CONTROLS | BIDI, max_size=40).map("".join)
"""Text as broken clients and attackers send it: surrogates, control characters, bidi controls."""
_FORBIDDEN = re.compile("[\ud800-\udfff\u202a-\u202e\u2066-\u2069]|(?![\n\t])[\x00-\x1f\x7f-\x9f]")


@FAST
@given(text=HOSTILE | st.text() | st.builds(lambda t, n: t * n, HOSTILE, st.integers(1, 400)))
@example(text="hello\ud83d")
@example(text="a\ud83d\ude00b")
def test_normalised_text_is_clean_short_and_stable(text):
    normal = normalise(text)
    assert not _FORBIDDEN.search(normal.text) and len(normal.text) <= MAX_CHARS
    normal.text.encode("utf-8")                                  # storable: no surrogate left
    assert normalise(normal.text) == type(normal)(normal.text)   # idempotent, nothing left to report
    assert set(normal.changes) <= set(CHANGES)
    assert ("cut" in normal.changes) == (len(normalise(text, max_chars=10**9).text) > MAX_CHARS)


def test_the_store_keeps_any_normalised_text_exactly(tmp_path):
    from bot.store import ConversationStore

    seen = []
    with ConversationStore(tmp_path / "c.db") as store:
        conversation = store.new_conversation()

        @FAST
        @given(text=HOSTILE | st.text(max_size=300))
        def check(text):
            normal = normalise(text)
            turn = store.start_turn(conversation, normal.text, normal.changes)
            stored = store.turn(turn.id)
            assert (stored.user_text, stored.text_changes) == (normal.text, normal.changes)
            length = store.db.execute("SELECT length(user_text) FROM turns WHERE id = ?", [turn.id]).fetchone()[0]
            assert length == len(normal.text)                    # no NUL cuts sqlite's length()
            seen.append(normal.changes)

        check()
    changed = {change: sum(change in changes for changes in seen) for change in CHANGES}
    print(f"store fuzz: {len(seen)} examples, changed by normalisation: {changed}")
    assert len(seen) >= 100 and all(changed[c] for c in ("surrogate", "control", "bidi"))


# -- the router -----------------------------------------------------------------------------------

HTML = st.sampled_from(["<script>alert('x')</script>", "<img src=x onerror=alert(1)>", "<b>", "&amp;",
                        "{{Order Number}}", "{{", "}}", "</div>"])
PERSONAL = st.sampled_from(["a@b.co", "+1 555 010 4477", "4111 1111 1111 1111", "refund"])
MESSAGES = st.one_of(
    st.text(max_size=300),
    HOSTILE,
    HOSTILE.map(lambda hostile: f"where is my order{hostile} please"),
    st.lists(st.text(max_size=5) | HTML, max_size=30).map("".join),
    st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=8), st.integers(200, 3000)),
    st.lists(PERSONAL, min_size=1, max_size=800).map(" ".join),  # redaction tags are longer than short e-mails
)
PLACEHOLDER = re.compile(r"\{\{.*?\}\}", re.DOTALL)


@pytest.fixture()
def router(tiny_home):
    from bot.runtime import load_router
    from bot.settings import load_settings

    loaded = load_router(load_settings())
    yield loaded
    loaded.store.close()


ROUTER_EXAMPLES = 60


def test_any_message_gets_one_complete_turn_without_raw_placeholders(router):
    seen = []

    @settings(max_examples=ROUTER_EXAMPLES, deadline=None)
    @given(message=MESSAGES)
    @example(message="a@b.co " * 400)
    @example(message="\x00\x1b[31m\u202e\ufeff\r\n\t")
    @example(message="hello\ud83d")
    @example(message="card 4111 1111 1111 1111 \u202egnp.exe\x00")
    def check(message):
        conversation = router.store.new_conversation()
        chunks = list(router.respond(conversation, message))
        turn = chunks[-1].turn
        assert turn is not None and all(chunk.turn is None for chunk in chunks[:-1])
        event(f"route: {turn.decision.route}")  # shown by pytest --hypothesis-show-statistics
        stored = router.store.conversation(conversation)
        assert [(t.id, t.status) for t in stored] == [(turn.id, "complete")]
        assert len(stored[0].user_text) <= MAX_CHARS and not _FORBIDDEN.search(stored[0].user_text)
        assert stored[0].text_changes == normalise(message).changes
        assert stored[0].reply == turn.reply and turn.reply.strip() and chunks[-1].text.strip()
        assert all(not PLACEHOLDER.search(chunk.text) for chunk in chunks)
        seen.append(turn.text_changes)

    check()
    changed = {change: sum(change in changes for changes in seen) for change in CHANGES}
    print(f"router fuzz: {len(seen)} examples, each one complete logged turn; changed by normalisation: {changed}")
    assert len(seen) >= ROUTER_EXAMPLES and all(changed[c] for c in ("surrogate", "control", "bidi"))
