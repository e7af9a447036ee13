"""The docs stay true: every CLI command is documented and has help; docs/architecture.md names
only modules that exist (after sqlite-utils' tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer.main

from ui.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md").read_text() + (ROOT / "docs" / "architecture.md").read_text()


def _commands(group, prefix: str = "supportbot"):
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        path = f"{prefix} {name}"
        if hasattr(command, "list_commands"):  # a group (typer's own or click's)
            yield from _commands(command, path)
        else:
            yield path, command


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_cli_has_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("path,command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_is_documented_and_has_help(path, command):
    assert path in DOCS, f"'{path}' is not mentioned in README.md or docs/architecture.md"
    assert (command.help or "").strip(), f"'{path}' has no help text"
    for parameter in command.params:
        if getattr(parameter, "param_type_name", "") == "option":
            assert (parameter.help or "").strip(), f"'{path} {parameter.opts[0]}' has no help text"


def test_architecture_names_only_modules_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"\b((?:bot|training|ui|bench|scripts|tests)/[\w/]+\.(?:py|csv))\b", text))
    assert named, "no module named at all"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
