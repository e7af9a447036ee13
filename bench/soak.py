"""Soak test: N simulated customers chat with the real server at once for a bounded time.

Starts ``supportbot serve`` on a free localhost port for ``--home`` (or uses a running server at
``--url``; its conversation log must then be ``--home``'s or ``--db``, and ``chat.show_internals`` on, so
each reply names its route), then runs ``--customers``
threads, each a ``gradio_client`` session like one browser tab: it sends a message (mostly
customer requests from the Bitext test split, some off-topic, empty, very long or HTML ones),
waits for the streamed reply, sometimes rates it (``/feedback``), thinks, and now and then starts
a new conversation. After ``--duration`` seconds no new message is sent; turns in flight may
finish for ``--grace`` more seconds, after which an unfinished turn counts as an error.

Measured on the client: time to the first reply chunk (the generation queue's "You're number N
in the queue" message does not count) and to the full reply, the waits in the queue and the
places seen. On the server: peak RSS of its process tree (sampled each second with psutil, or
/proc without it). From the SQLite log: turns and feedback rows of the conversations the soak
created. Prints a table, writes JSON (``--output``) and exits 1 when a sent turn is not logged
complete, or on any error.

    python bench/soak.py --home DIR [--customers 20] [--duration 600]
    python bench/soak.py --url http://127.0.0.1:7860/ --home DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bot.router import QUEUE_MESSAGE

REPO = Path(__file__).resolve().parents[1]

QUEUE_PATTERN = re.compile(re.escape(QUEUE_MESSAGE).replace(re.escape("{position}"), r"(\d+)"))
"""The queue message as the chat shows it; group 1 is the place in line."""

OFF_TOPIC = ["tell me a joke about cats", "what's the weather in Paris tomorrow?", "who won the match yesterday?",
             "write me a poem about the sea", "I want to talk to a human", "asdf qwerty",
             "¿Dónde está mi pedido? Quiero cancelarlo.", "😀🙏🔥"]
HTML = ['<img src=x onerror="window.__xss=1">', "<script>alert('x')</script> where is my order?",
        '<a href="javascript:alert(1)">refund</a> please', "<b>cancel</b> my <i>order</i> &amp; refund"]
KINDS = {"bitext": 0.76, "off_topic": 0.1, "html": 0.06, "empty": 0.04, "long": 0.04}
"""Share of each kind of message a customer sends."""

POLL_S = 0.1
"""How often a customer looks at its streaming reply (the resolution of the latencies)."""


@dataclass
class TurnResult:
    """One message sent by a simulated customer; times in seconds from sending it.

    ``first_s`` is the first reply text shown (not the queue message, not "…"), ``waited_s`` the
    time until the queue message (if any) was replaced, ``place`` the highest place seen in line.
    """

    customer: int
    kind: str
    first_s: float | None = None
    full_s: float | None = None
    waited_s: float = 0.0
    place: int = 0
    route: str | None = None
    turn_id: int | None = None
    error: str | None = None


@dataclass
class Tally:
    """What all customers did, appended to from their threads (list.append is atomic).
    ``errors`` are failures outside a turn (feedback, connecting); a turn's is in its result."""

    turns: list[TurnResult] = field(default_factory=list)
    feedback: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    new_conversations: int = 0

    def all_errors(self) -> list[str]:
        """Every failure, turns first."""
        return [f"customer {t.customer} turn ({t.kind}): {t.error}" for t in self.turns if t.error] + self.errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True,
                        help="SUPPORTBOT_HOME of the server (its models; its conversations.db is counted)")
    parser.add_argument("--url", help="a running server's chat URL instead of starting one")
    parser.add_argument("--db", type=Path, help="conversation log to count (default HOME/conversations.db)")
    parser.add_argument("--customers", type=int, default=20, help="simulated customers at once")
    parser.add_argument("--duration", type=float, default=600, help="seconds during which messages are sent")
    parser.add_argument("--grace", type=float, default=600, help="seconds turns in flight may take after that")
    parser.add_argument("--think", type=float, default=5.0, help="mean think time between messages, seconds")
    parser.add_argument("--new-conversation", type=float, default=0.2, help="chance to start over after a turn")
    parser.add_argument("--feedback", type=float, default=0.2, help="chance to rate a reply")
    parser.add_argument("--max-concurrent", type=int, help="router.max_concurrent_generations of the started server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "soak.json")
    return parser.parse_args(argv)


def message_pool(seed: int) -> dict[str, list[str]]:
    """Messages by kind (:data:`KINDS`); ``bitext`` is the Bitext test split's texts."""
    from bot.settings import load_settings
    from training.data import load, split

    settings = load_settings()
    bitext = [example.text for example in split(load("bitext", settings.data_dir, settings.home), seed=42).test]
    rng = random.Random(seed)
    long = [" ".join(rng.choices(bitext, k=60)) for _ in range(5)]
    return {"bitext": bitext, "off_topic": OFF_TOPIC, "html": HTML, "empty": ["", "   "], "long": long}


def last_reply(messages: list[dict]) -> str:
    """The text of the last assistant message in the chat as the client receives it."""
    content = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def watch(result: TurnResult, job, started: float) -> None:
    """Follow a streaming ``/send`` job, filling ``result``'s times, queue wait and place."""
    seen = 0
    while True:
        done, outputs = job.done(), job.outputs()
        now = time.monotonic() - started
        for output in outputs[seen:]:
            text = last_reply(output[0])
            queued = QUEUE_PATTERN.search(text)
            if queued:
                result.place = max(result.place, int(queued.group(1)))
            elif result.place and not result.waited_s:
                result.waited_s = now
            if not queued and text.strip() not in ("", "…") and result.first_s is None:
                result.first_s = now
        seen = len(outputs)
        if done:
            return
        time.sleep(POLL_S)


def send(client: Client, result: TurnResult, text: str) -> None:
    """One turn: submit, follow the stream, read the final turn's info into ``result``; an
    exception is recorded in ``result.error``."""
    started = time.monotonic()
    try:
        job = client.submit(text, api_name="/send")
        watch(result, job, started)
        _, _, info = job.result()
        result.full_s = time.monotonic() - started
        result.turn_id, result.route = info.get("turn_id"), info.get("route")
        if result.turn_id is None or result.route is None:
            result.error = f"no turn id or route in the reply's info (is chat.show_internals on?): {info}"
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
        result.error = f"{type(exc).__name__}: {exc}"


def customer(index: int, url: str, pool: dict[str, list[str]], args: argparse.Namespace,
             deadline: float, tally: Tally) -> None:
    """One simulated customer until ``deadline`` (monotonic seconds); a failure outside a turn
    (connecting, starting over) ends this customer and is counted as an error."""
    try:
        customer_loop(index, url, pool, args, deadline, tally)
    except Exception as exc:  # noqa: BLE001
        tally.errors.append(f"customer {index}: {type(exc).__name__}: {exc}")


def customer_loop(index: int, url: str, pool: dict[str, list[str]], args: argparse.Namespace,
                  deadline: float, tally: Tally) -> None:
    """The messages, ratings and new conversations of one customer (see :func:`customer`)."""
    rng = random.Random(args.seed * 1000 + index)
    client = Client(url, verbose=False, httpx_kwargs={"timeout": httpx.Timeout(120.0, read=None)})
    time.sleep(rng.uniform(0, args.think))
    while time.monotonic() < deadline:
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        result = TurnResult(index, kind)
        tally.turns.append(result)          # sent, whether or not it is ever answered
        send(client, result, rng.choice(pool[kind]))
        if not result.error and result.route not in ("human", "agent", "notice") and rng.random() < args.feedback:
            rate(client, result, rng.choice((1, -1)), tally)
        # after a handoff the bot stays silent until an agent hands the conversation back: start afresh
        if result.route == "handoff" or rng.random() < args.new_conversation:
            client.predict(api_name="/new_conversation")
            tally.new_conversations += 1
        time.sleep(min(rng.expovariate(1 / args.think), max(0.0, deadline - time.monotonic())))


def rate(client: Client, result: TurnResult, rating: int, tally: Tally) -> None:
    """Thumbs up or down on a finished turn, as the hidden ``/feedback`` endpoint does."""
    try:
        client.predict(result.turn_id, rating, "soak", api_name="/feedback")
        tally.feedback.append(result.turn_id)
    except Exception as exc:  # noqa: BLE001
        tally.errors.append(f"customer {result.customer} feedback: {type(exc).__name__}: {exc}")


class ServerProcess:
    """``supportbot serve`` for a home on a free localhost port (a context manager).

    Raises:
        RuntimeError: the server exited or did not answer within ``start_s`` seconds.
    """

    def __init__(self, home: Path, max_concurrent: int | None, start_s: float = 600):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{port}/", home / "soak-server.log"
        # the info panel names each turn's route (handoff -> start afresh; generated or not)
        env = {**os.environ, "SUPPORTBOT_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
               "SUPPORTBOT_CHAT__SHOW_INTERNALS": "true"}
        if max_concurrent is not None:
            env["SUPPORTBOT_ROUTER__MAX_CONCURRENT_GENERATIONS"] = str(max_concurrent)
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--port", str(port)], cwd=REPO,
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        self._wait_until_up(start_s)

    def _wait_until_up(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"server did not answer within {seconds:.0f} s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of a process and all its descendants (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _proc_tree_rss(pid: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class Sampler(threading.Thread):
    """Every ``every_s`` seconds until :meth:`stop`: the server tree's RSS (:func:`tree_rss_bytes`,
    keeps the peak; skipped without a pid) and the machine's 1-minute load average (``loads``),
    which tells how much other work shared the CPUs."""

    def __init__(self, pid: int | None, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak, self.loads = pid, every_s, 0, []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            self.loads.append(os.getloadavg()[0])
            try:
                self.peak = max(self.peak, tree_rss_bytes(self.pid)) if self.pid else 0
            except Exception:  # noqa: BLE001 - the server may be gone at the very end
                self.pid = None

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def count_logged(db: Path, turn_ids: list[int]) -> dict:
    """Rows in the log for the conversations that hold these turns: complete and incomplete
    turns, conversations, feedback rows on the rated turns, and the model versions seen."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        connection.execute("CREATE TEMP TABLE soak_turns (id INTEGER PRIMARY KEY)")
        connection.executemany("INSERT OR IGNORE INTO soak_turns VALUES (?)", [(i,) for i in turn_ids])
        mine = "conversation_id IN (SELECT conversation_id FROM turns WHERE id IN (SELECT id FROM soak_turns))"
        rows = dict(connection.execute(f"SELECT status, COUNT(*) FROM turns WHERE {mine} GROUP BY status"))
        conversations = connection.execute(f"SELECT COUNT(DISTINCT conversation_id) FROM turns WHERE {mine}").fetchone()[0]
        versions = connection.execute(f"SELECT DISTINCT classifier_version, generator_version FROM turns "
                                      f"WHERE {mine} AND generator_version IS NOT NULL").fetchall()
        feedback = connection.execute(f"SELECT COUNT(*) FROM feedback WHERE comment = 'soak' AND turn_id IN "
                                      f"(SELECT id FROM turns WHERE {mine})").fetchone()[0]
    return {"turns_logged": rows.get("complete", 0), "turns_incomplete": sum(rows.values()) - rows.get("complete", 0),
            "conversations": conversations, "feedback_logged": feedback, "versions": [list(v) for v in versions]}


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and max of ``values`` in seconds (None when empty)."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "max": round(max(values), 2)}


def summarise(tally: Tally, logged: dict, sampler: Sampler, args: argparse.Namespace, elapsed: float) -> dict:
    """The figures of the run, as written to JSON."""
    ok, errors = [t for t in tally.turns if not t.error], tally.all_errors()
    generated = [t for t in ok if t.route == "answer"]
    queued = [t for t in ok if t.place]
    return {
        "customers": args.customers, "duration_s": args.duration, "elapsed_s": round(elapsed, 1),
        "think_s": args.think,
        "turns_sent": len(tally.turns), **logged, "feedback_sent": len(tally.feedback),
        "new_conversations": tally.new_conversations, "errors": len(errors), "error_samples": errors[:20],
        "by_kind": {kind: sum(t.kind == kind for t in tally.turns) for kind in KINDS},
        "by_route": {route: sum(t.route == route for t in ok) for route in sorted({t.route for t in ok if t.route})},
        "first_chunk_s": percentiles([t.first_s for t in ok if t.first_s is not None]),
        "full_reply_s": percentiles([t.full_s for t in ok]),
        "generated_first_chunk_s": percentiles([t.first_s for t in generated if t.first_s is not None]),
        "generated_full_reply_s": percentiles([t.full_s for t in generated]),
        "generated_after_queue_s": percentiles([t.full_s - t.waited_s for t in generated]),
        "queued_turns": len(queued), "highest_place": max((t.place for t in queued), default=0),
        "queue_wait_s": percentiles([t.waited_s for t in queued]),
        "peak_rss_mib": round(sampler.peak / 2**20, 1) if sampler.peak else None,
        "cpus": os.cpu_count(),
        "load_avg_1m": {"mean": round(float(np.mean(sampler.loads)), 1) if sampler.loads else None,
                        "max": round(max(sampler.loads), 1) if sampler.loads else None},
        "turns": [asdict(t) for t in tally.turns],
    }


def print_table(summary: dict) -> None:
    """The headline figures as a rich table."""
    table = Table(title=f"soak: {summary['customers']} customers, {summary['duration_s']:.0f} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    latency = lambda key: "p50 {p50} s · p95 {p95} s · max {max} s".format(**summary[key])  # noqa: E731
    rows = [("turns sent", summary["turns_sent"]), ("turns logged complete", summary["turns_logged"]),
            ("turns logged incomplete", summary["turns_incomplete"]), ("conversations", summary["conversations"]),
            ("feedback sent / logged", f"{summary['feedback_sent']} / {summary['feedback_logged']}"),
            ("errors", summary["errors"]), ("routes", summary["by_route"]),
            ("first chunk, all turns", latency("first_chunk_s")), ("full reply, all turns", latency("full_reply_s")),
            ("first chunk, generated", latency("generated_first_chunk_s")),
            ("full reply, generated", latency("generated_full_reply_s")),
            ("full reply, generated, after leaving the queue", latency("generated_after_queue_s")),
            ("turns that waited in the queue", f"{summary['queued_turns']} (highest place {summary['highest_place']})"),
            ("queue wait", latency("queue_wait_s")),
            ("max concurrent generations", summary["max_concurrent_generations"]),
            ("peak RSS, server process tree", f"{summary['peak_rss_mib']} MiB"),
            (f"load average (1 min) on {summary['cpus']} CPUs", "mean {mean} · max {max}".format(**summary["load_avg_1m"]))]
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)


def run_customers(url: str, pool: dict[str, list[str]], args: argparse.Namespace, tally: Tally) -> None:
    """All customers for ``--duration`` s (progress on stderr), then at most ``--grace`` s more."""
    deadline = time.monotonic() + args.duration
    threads = [threading.Thread(target=customer, args=(i, url, pool, args, deadline, tally), daemon=True)
               for i in range(args.customers)]
    for thread in threads:
        thread.start()
    with tqdm(total=round(args.duration), unit="s", desc="soak", file=sys.stderr) as bar:
        while time.monotonic() < deadline:
            time.sleep(1)
            bar.n = min(round(args.duration - (deadline - time.monotonic())), bar.total)
            bar.set_postfix(turns=len(tally.turns), errors=len(tally.all_errors()), refresh=True)
    finish = time.monotonic() + args.grace
    for thread in threads:
        thread.join(max(0.0, finish - time.monotonic()))
    for turn in tally.turns:
        if turn.full_s is None and turn.error is None:
            turn.error = f"no reply {args.grace:.0f} s after the end"


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns the exit status (1 when turns are missing from the log or on errors)."""
    args = parse_args(argv)
    if not (args.home / "registry.json").is_file():
        sys.exit(f"error: {args.home}: not a supportbot home with trained models (no registry.json)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the started server on `kill` too
    from bot.settings import load_settings

    configured = load_settings(home=args.home).router.max_concurrent_generations
    pool, tally = message_pool(args.seed), Tally()
    started = time.monotonic()
    with ExitStack() as running:        # on the way out: the sampler, then the server, whatever fails
        server = None if args.url else running.enter_context(ServerProcess(args.home, args.max_concurrent))
        sampler = Sampler(server.pid if server else None)
        sampler.start()
        running.callback(sampler.stop)
        run_customers(args.url or server.url, pool, args, tally)
    turn_ids = [t.turn_id for t in tally.turns if t.turn_id is not None]
    logged = count_logged(args.db or args.home / "conversations.db", turn_ids)
    summary = summarise(tally, logged, sampler, args, time.monotonic() - started)
    summary["max_concurrent_generations"] = args.max_concurrent or configured
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print_table(summary)
    print(f"written: {args.output}")
    failed = summary["turns_sent"] != summary["turns_logged"] or summary["errors"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
