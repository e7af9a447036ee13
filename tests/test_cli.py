"""The supportbot command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import os

import pytest
from helpers import run_cli as run


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "data" in result.stdout


def test_eval_oos_help_lists_the_choices_and_the_training_defaults():
    result = run("eval", "oos", "--help", env={**os.environ, "COLUMNS": "200"})  # rich wraps at the width
    assert result.returncode == 0, result.stderr
    assert "<msp+knn|msp|energy>" in result.stdout and "<finetune|head>" in result.stdout
    assert "[default: msp+knn]" in result.stdout and "[default: 4.0]" in result.stdout
    result = run("eval", "oos", "--oos-method", "cosine")
    assert result.returncode == 2 and "'cosine' is not one of 'msp+knn', 'msp', 'energy'" in result.stderr


def test_data_show_bitext(data_dir):
    result = run("data", "show", "bitext", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "4,514" in result.stdout
    assert "│ intents           │ 27" in result.stdout
    assert "train 3,610, validation 452, test 452" in result.stdout


def test_user_mistake_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("words,tag\nhi,greet\n")
    result = run("data", "show", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == (f"error: {bad}: no text column found; the columns are: words, tag; name one "
                             "text/utterance/sentence/query/question or give --text-column\n")


def test_data_show_reads_its_own_column_names_and_out_of_scope_labels(tmp_path):
    rows = [("track my parcel", "track"), ("where is my parcel", "track"), ("cancel it", "cancel"),
            ("stop my order", "cancel"), ("play jazz", "none"), ("weather tomorrow", "none")]
    data = tmp_path / "mine.csv"
    data.write_text("id,phrase,tag\n" + "".join(f"{i},{t},{l}\n" for i, (t, l) in enumerate(rows)))
    result = run("data", "show", str(data), "--text-column", "phrase", "--intent-column", "tag",
                 "--oos-label", "none")
    assert result.returncode == 0, result.stderr
    assert "text='phrase', intent='tag'" in result.stdout
    assert "│ out-of-scope rows │ 2" in result.stdout and "│ intents           │ 2" in result.stdout
    result = run("data", "show", str(data), "--text-column", "nope")
    assert result.returncode == 2
    assert result.stderr == (f"error: {data}: no column 'nope'; the columns are: id, phrase, tag; "
                             "give --text-column one of them\n")


def test_bad_config_value(tmp_path):
    import os

    config = tmp_path / "supportbot.toml"
    config.write_text('seed = "not a number"\n')
    result = run("data", "show", "bitext", env={**os.environ, "SUPPORTBOT_CONFIG": str(config)})
    assert result.returncode == 2
    assert "error: invalid configuration: seed:" in result.stderr


def _log_with_an_old_and_a_recent_conversation(path):
    """A conversation log whose first conversation (one turn) dates from 2000; returns the ids."""
    import sqlite3
    from contextlib import closing

    from bot.store import ConversationStore

    with ConversationStore(path) as store:
        old, recent = store.new_conversation(), store.new_conversation()
        store.start_turn(old, "an old message")
        store.start_turn(recent, "a recent message")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE conversations SET started_at = '2000-01-01T00:00:00.000000+00:00' WHERE id = ?", [old])
        conn.execute("UPDATE turns SET started_at = '2000-01-01T00:00:00.000000+00:00' WHERE conversation_id = ?", [old])
    return old, recent


def _rows(path, sql):
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def test_db_prune_deletes_old_conversations_and_keeps_recent_ones(tmp_path):
    path = tmp_path / "conversations.db"
    old, recent = _log_with_an_old_and_a_recent_conversation(path)
    result = run("db", "prune", "--older-than", "30", "--yes", "--db", str(path))
    assert result.returncode == 0, result.stderr
    assert "deleted 1 conversations, 1 turns, 0 feedback, 0 reviews" in result.stdout
    assert _rows(path, "SELECT id FROM conversations") == [(recent,)]
    assert _rows(path, "SELECT conversation_id, user_text FROM turns") == [(recent, "a recent message")]
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_db_prune_asks_before_deleting(tmp_path):
    path = tmp_path / "conversations.db"
    _log_with_an_old_and_a_recent_conversation(path)
    result = run("db", "prune", "--older-than", "30", "--db", str(path), input="n\n")
    assert result.returncode == 1
    assert "delete 1 conversations, 1 turns, 0 feedback, 0 reviews from" in result.stdout
    assert _rows(path, "SELECT count(*) FROM turns") == [(2,)]


@pytest.mark.parametrize("days,message", [
    ("0", "error: the retention period must be a positive number of days, not 0.0"),
    ("-2", "error: the retention period must be a positive number of days, not -2.0"),
    ("nan", "error: the retention period must be a positive number of days, not nan"),
    ("abc", "Invalid value for '--older-than'"),
])
def test_db_prune_refuses_a_bad_period(tmp_path, days, message):
    path = tmp_path / "conversations.db"
    _log_with_an_old_and_a_recent_conversation(path)
    result = run("db", "prune", "--older-than", days, "--yes", "--db", str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert _rows(path, "SELECT count(*) FROM turns") == [(2,)]


def test_missing_data_dir_is_reported(tmp_path):
    """A usage error is one plain line whatever the terminal width and path length (issue 18:
    rich used to draw it in a box that wrapped the path)."""
    nowhere = tmp_path / ("a-long-folder-name-" * 8) / "nowhere"
    env = {**os.environ, "COLUMNS": "40"}
    result = run("data", "show", "bitext", "--data-dir", str(nowhere), env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: Invalid value for '--data-dir': dir '{nowhere}' does not exist. "
                             "(see 'supportbot data show --help')\n")
    result = run("data", "show", "bitext", env={**env, "SUPPORTBOT_DATA_DIR": str(nowhere)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{nowhere}: no such folder" in result.stderr and result.stderr.count("\n") == 1


def test_usage_errors_are_one_plain_line():
    env = {**os.environ, "COLUMNS": "40"}
    result = run("data", "show", "--no-such-option", env=env)
    assert (result.returncode, result.stderr) == (2, "error: No such option: --no-such-option "
                                                     "(see 'supportbot data show --help')\n")
    result = run("data", "validate", env=env)
    assert (result.returncode, result.stderr) == (2, "error: Missing argument 'FILE'. "
                                                     "(see 'supportbot data validate --help')\n")
    result = run("data", env=env)  # no command: the help, as before
    assert result.returncode == 2 and "show" in result.stdout and "validate" in result.stdout


def test_prune_and_export_leave_other_files_alone(tmp_path):
    """A file that is not a conversation log is refused and left byte for byte; the log itself
    is never an export target."""
    import sqlite3
    from contextlib import closing

    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    before = other.read_bytes()
    result = run("db", "prune", "--older-than", "1", "--yes", "--db", str(other))
    assert result.returncode == 2 and "not a supportbot conversation log" in result.stderr
    assert other.read_bytes() == before
    log = tmp_path / "conversations.db"
    _log_with_an_old_and_a_recent_conversation(log)
    result = run("export", "--db", str(log), "--output", str(log), "--overwrite")
    assert result.returncode == 2 and "is the conversation log itself" in result.stderr
    assert _rows(log, "PRAGMA integrity_check") == [("ok",)]
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me", encoding="utf-8")
    result = run("export", "--db", str(log), "--output", str(taken))
    assert result.returncode == 2 and result.stderr.strip().endswith("choose another name or pass --overwrite")
    assert taken.read_text(encoding="utf-8") == "keep me"


def test_serve_refuses_a_port_out_of_range():
    result = run("serve", "--port", "99999")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "less than or equal to 65535" in result.stderr


def test_data_show_of_a_file_too_small_to_split_still_shows_it(tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("text,intent\nhi there,greet\nhello,greet\nbye,bye\n")
    result = run("data", "show", str(small))
    assert result.returncode == 0, result.stderr
    assert "not possible" in result.stdout and "too few rows" in result.stdout
    assert "greet 2" in result.stdout and "n_samples" not in result.stdout


def test_a_bad_training_option_names_its_flag(tmp_path):
    """Training errors name the setting (``epochs``); the command line names its flag instead."""
    result = run("train", "intents", "--data", str(tmp_path / "unused.csv"), "--epochs", "0")
    assert (result.returncode, result.stderr) == (2, "error: --epochs must be > 0\n")
