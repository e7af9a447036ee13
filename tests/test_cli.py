"""The supportbot command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import shutil
import subprocess


def run(*args, env=None):
    exe = shutil.which("supportbot")
    assert exe, "the supportbot script is not installed (run make setup)"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "data" in result.stdout


def test_data_show_bitext(data_dir):
    result = run("data", "show", "bitext", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "4,514" in result.stdout
    assert "│ intents           │ 27" in result.stdout
    assert "train 3,610, validation 452, test 452" in result.stdout


def test_user_mistake_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance,label\nhi,greet\n")
    result = run("data", "show", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("missing column(s) text, intent; the header has: utterance, label")
    assert result.stderr.count("\n") == 1


def test_bad_config_value(tmp_path):
    import os

    config = tmp_path / "supportbot.toml"
    config.write_text('seed = "not a number"\n')
    result = run("data", "show", "bitext", env={**os.environ, "SUPPORTBOT_CONFIG": str(config)})
    assert result.returncode == 2
    assert "error: invalid configuration: seed:" in result.stderr
