"""Helpers shared by tests: the real server (``supportbot serve``) as a process, driven with
gradio_client like a browser would; tiny language models with a fixed greedy output."""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradio_client import Client


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``supportbot`` script as a user would; stdout and stderr as text."""
    exe = shutil.which("supportbot")
    assert exe, "the supportbot script is not installed (run make setup)"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120, input=input, cwd=cwd)


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> Path:
    """Write a UTF-8 CSV file (``header``, then ``rows``); returns ``path``."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def anonymous_post(url: str, body: dict | None = None) -> int:
    """HTTP status of a POST without credentials of ``body`` as JSON (default ``{"data": []}``,
    a Gradio API call)."""
    request = urllib.request.Request(url, data=json.dumps(body or {"data": []}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    """Poll ``url`` every 0.5 s until it answers.

    Raises:
        AssertionError: the process exited (the message holds its log) or ``seconds`` passed.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("server did not start in time")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the server is still finishing open connections after 10 s (a
    process that already ended is only reaped)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def running_server(home: Path, log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``supportbot serve`` on a free port with ``SUPPORTBOT_HOME=home`` and the extra
    environment variables ``env``, its output in ``log``; yields (base URL, process) once the
    page answers, and stops the process on exit (also when the test killed it)."""
    port = free_port()
    variables = {**os.environ, "SUPPORTBOT_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", **env}
    with log.open("w") as output:
        process = subprocess.Popen([shutil.which("supportbot"), "serve", "--port", str(port)], env=variables,
                                   stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process, log)
        yield url, process
    finally:
        stop(process)


def converse(url: str, texts: list[str]) -> tuple[Client, list[dict]]:
    """Send ``texts`` one after the other through the chat's ``/send`` endpoint in one new
    session and check each gets a non-empty reply; returns the client (the session, to go on
    with) and the info panel of each turn (``turn_id``, ``route``...)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    infos = []
    for text in texts:
        messages, cleared, info = client.predict(text, api_name="/send")
        assert cleared == ""
        assert messages[-2]["content"] == [{"type": "text", "text": html.escape(text, quote=False)}]
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"][0]["text"].strip()
        infos.append(info)
    return client, infos


def integrity_check(db: Path) -> list[tuple]:
    """The rows of ``PRAGMA integrity_check`` on the SQLite file ``db`` (``[("ok",)]`` when sound)."""
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchall()


def save_chain_lm(source: Path, folder: Path, chain: list[int], default: int) -> Path:
    """Save to ``folder`` a copy of the tiny Llama ``source`` (with its tokenizer) whose greedy
    next token depends on the current token only: ``chain[i]`` is followed by ``chain[i + 1]``,
    any other token by ``default``. Its layers are zeroed, so a position's hidden state is its
    token's embedding: one embedding dimension per chained token, the last one for all others,
    and the LM head maps each to the next token (logit 10, all others 0).

    Raises:
        ValueError: more distinct chained tokens than the model has dimensions for, or a token
            followed by two different ones.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    successors = dict(zip(chain, chain[1:]))
    if any(successors[token] != following for token, following in zip(chain, chain[1:])):
        raise ValueError("a token of the chain is followed by two different tokens")
    model = LlamaForCausalLM.from_pretrained(source, tie_word_embeddings=False)
    other = model.config.hidden_size - 1
    if len(successors) > other:
        raise ValueError(f"{len(successors)} chained tokens, but only {other} dimensions for them")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros_like(model.model.embed_tokens.weight)
        head = torch.zeros_like(model.lm_head.weight)
        embed[:, other], head[default, other] = 1.0, 10.0
        for state, (token, following) in enumerate(successors.items()):
            embed[token, other], embed[token, state], head[following, state] = 0.0, 1.0, 10.0
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def drain(stream) -> tuple[list, object]:
    """All items of the generator ``stream`` and its return value (a reply stream's finish
    reason, :class:`bot.interfaces.Generator`)."""
    items = []
    while True:
        try:
            items.append(next(stream))
        except StopIteration as end:
            return items, end.value
