"""Peak memory of the serving process with both real models loaded, after N chat turns.

Starts ``supportbot serve`` on a free localhost port (the home's production models), sends N
messages through ``gradio_client`` in one conversation after another (Bitext-style requests and
off-topic ones, cycling), then reads the server's peak resident set size (``VmHWM`` in
/proc/<pid>/status) and its current RSS. Bounded: N turns, then it stops the server.

    python bench/serve_memory.py --turns 50 [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

MESSAGES = [
    "I want to cancel my order 113542617735902", "how do I change my shipping address?",
    "where is my refund?", "I need an invoice for my last purchase", "what payment methods do you accept?",
    "tell me a joke about cats", "what's the weather in Paris?", "my package has not arrived yet",
    "how can I delete my account?", "I want to leave a complaint",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--home", type=Path, default=None, help="SUPPORTBOT_HOME (default: the setting)")
    parser.add_argument("--per-conversation", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.home:
        env["SUPPORTBOT_HOME"] = str(args.home)
    port = _free_port()
    log = open("/tmp/serve_memory.log", "w")
    server = subprocess.Popen([shutil.which("supportbot"), "serve", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"server exited, see /tmp/serve_memory.log")
                time.sleep(1)
        loaded_kib = _status_kib(server.pid, "VmRSS")
        client, started = None, time.perf_counter()
        for turn in range(args.turns):
            if turn % args.per_conversation == 0:
                client = Client(url, verbose=False)
            client.predict(MESSAGES[turn % len(MESSAGES)], api_name="/send")
        elapsed = time.perf_counter() - started
        peak, now = _status_kib(server.pid, "VmHWM"), _status_kib(server.pid, "VmRSS")
        print(f"turns: {args.turns} in {elapsed:.0f} s ({elapsed / args.turns:.1f} s per turn)")
        print(f"RSS after loading both models: {loaded_kib / 1024:.0f} MiB")
        print(f"RSS after {args.turns} turns: {now / 1024:.0f} MiB; peak (VmHWM): {peak / 1024:.0f} MiB "
              f"= {peak / 1024 / 1024:.2f} GiB (target <= 1.5 GB = {1.5e9 / 2**30:.2f} GiB)")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
