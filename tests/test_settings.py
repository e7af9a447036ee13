"""Settings: defaults, the TOML file, environment overrides, command-line overrides."""

from __future__ import annotations

import pytest

from bot.errors import SupportbotError
from bot.settings import load_settings


def test_file_then_env_then_overrides(tmp_path, monkeypatch):
    config = tmp_path / "supportbot.toml"
    config.write_text('seed = 7\nreply_base = "my/model"\n')
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(config))
    assert load_settings().seed == 7
    assert load_settings().reply_base == "my/model"
    monkeypatch.setenv("SUPPORTBOT_SEED", "9")
    assert load_settings().seed == 9
    assert load_settings(seed=11, reply_base=None).seed == 11


def test_unknown_key_is_refused(tmp_path, monkeypatch):
    config = tmp_path / "supportbot.toml"
    config.write_text("sed = 7\n")
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(config))
    with pytest.raises(SupportbotError, match="invalid configuration: sed: Extra inputs are not permitted"):
        load_settings()


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SupportbotError, match="SUPPORTBOT_CONFIG names .*absent.toml, which is not a file"):
        load_settings()


@pytest.mark.parametrize("content,message", [
    ("seed = 42 [\n", "not a valid UTF-8 TOML file"),
    ("seed = -5\n", "seed: Input should be greater than or equal to 0"),
    ('[router]\nhuman_request = "(unclosed"\n', "router.human_request: Value error, not a valid regular expression"),
    ("[router]\nfoo = 1\n", "router.foo: Extra inputs are not permitted"),
    ("[serving]\ndraft_tokens = -1\n", "serving.draft_tokens: Input should be greater than or equal to 0"),
    ("[serving]\ndtype = \"float16\"\n", "serving.dtype: Input should be 'auto', 'float32' or 'bfloat16'"),
])
def test_bad_config_files(tmp_path, monkeypatch, content, message):
    config = tmp_path / "supportbot.toml"
    config.write_text(content)
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(config))
    with pytest.raises(SupportbotError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as error:
        load_settings()
    assert str(config) in str(error.value)                # the file to fix is named


def test_bad_reviewers_variable(monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_REVIEWERS", "not json")
    with pytest.raises(SupportbotError, match="invalid configuration: error parsing value for field \"reviewers\""):
        load_settings()


def test_a_tilde_in_a_config_file_means_the_home_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from bot.settings import load_settings

    config = tmp_path / "supportbot.toml"
    config.write_text('home = "~/.supportbot-test"\n')
    monkeypatch.setenv("SUPPORTBOT_CONFIG", str(config))
    monkeypatch.delenv("SUPPORTBOT_HOME", raising=False)
    assert load_settings().home == Path.home() / ".supportbot-test"
