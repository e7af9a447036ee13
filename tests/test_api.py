"""The REST channel on the real server (tiny models), driven with httpx: every error status,
a streamed reply read as Server-Sent Events, one client never reaching another's conversation."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import httpx
import pytest
from helpers import running_server

from test_handoff import always_open
from ui.api import digest
from ui.server import hash_password

KEYS = {"website": "sb_website_key_for_tests", "app": "sb_app_key_for_tests", "burst": "sb_burst_key_for_tests"}
STAFF = {"ana": ("agent", "ana's long password"), "rex": ("reviewer", "rex's long password"),
         "root": ("admin", "root's long password")}
KEY_RATE, ADDRESS_RATE = 20, 150


@pytest.fixture(scope="module")
def server(tiny_home_template, tmp_path_factory):
    """One server for the module: keys, staff accounts, an always-open profile, low rate limits."""
    folder = tmp_path_factory.mktemp("api-server")
    home = folder / "home"
    shutil.copytree(tiny_home_template, home)
    env = {"SUPPORTBOT_API__KEYS": json.dumps({name: f"sha256:{digest(key)}" for name, key in KEYS.items()}),
           "SUPPORTBOT_API__KEY_RATE": f"{KEY_RATE}/minute", "SUPPORTBOT_API__ADDRESS_RATE": f"{ADDRESS_RATE}/minute",
           "SUPPORTBOT_STAFF": json.dumps({name: {"password_hash": hash_password(password), "role": role}
                                           for name, (role, password) in STAFF.items()}),
           "SUPPORTBOT_PROFILE": str(always_open(folder))}
    with running_server(home, folder / "server.log", **env) as (url, _):
        yield url, home


@pytest.fixture()
def api(server):
    url, home = server
    with httpx.Client(base_url=url + "api/v1", timeout=120) as client:
        yield client


def create(api, key: str | None = None) -> tuple[str, dict[str, str]]:
    """A new conversation; returns its id and the headers that open it."""
    headers = {"X-API-Key": KEYS[key]} if key else {}
    response = api.post("/conversations", headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["conversation_id"], headers or {"X-Conversation-Token": body["token"]}


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and words in error["message"], error


def test_converse_read_history_rate_and_ask_for_a_person(api, server):
    conversation, headers = create(api)
    answer = api.post(f"/conversations/{conversation}/messages", json={"text": "please refund my order"},
                      headers=headers)
    assert answer.status_code == 200, answer.text
    turn = answer.json()["turn"]
    assert turn["index"] == 0 and turn["reply"]
    assert (turn["intent"] in {"refund", "cancel", "track", "invoice"} if turn["route"] not in {"rephrase", "fallback"}
            else turn["intent"] is None)
    rated = api.post(f"/conversations/{conversation}/turns/{turn['id']}/feedback",
                     json={"rating": -1, "comment": "wrong, mail me at jo@example.com"}, headers=headers)
    assert rated.status_code == 201 and rated.json()["feedback_id"] >= 1
    person = api.post(f"/conversations/{conversation}/handoff", headers=headers).json()["turn"]
    assert person["route"] == "handoff" and "555" in person["reply"]
    history = api.get(f"/conversations/{conversation}", headers=headers).json()
    assert history["handled_by"] == "waiting for an agent" and history["agent"] is None
    assert [t["route"] for t in history["turns"]] == [turn["route"], "handoff"]
    assert history["turns"][1]["intent"] is None  # pressed "talk to a human": no intent decided
    assert history["turns"][0]["rating"] == -1
    assert api.get(f"/conversations/{conversation}", params={"after": 0}, headers=headers).json()["turns"][0]["index"] == 1
    db = sqlite3.connect(server[1] / "conversations.db")
    assert db.execute("SELECT channel, client, token_hash = ? FROM conversations WHERE id = ?",
                      [digest(headers["X-Conversation-Token"]), conversation]).fetchone() == ("api", None, 1)
    assert db.execute("SELECT comment FROM feedback").fetchall() == [("wrong, mail me at <EMAIL>",)]


def test_streamed_reply_read_with_a_plain_http_client(api):
    conversation, headers = create(api, "website")
    events = []
    with api.stream("POST", f"/conversations/{conversation}/messages/stream",
                    json={"text": "can you track my parcel"}, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in response.iter_lines():
            if line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif not line and event:
                events.append(event)
                event = {}
    assert [e["event"] for e in events][-1] == "turn"
    assert all(e["event"] == "reply" for e in events[:-1]) and events[:-1]
    turn = events[-1]["data"]
    assert turn["reply"] == events[-2]["data"]["text"] and turn["status"] == "complete"
    stored = api.get(f"/conversations/{conversation}", headers=headers).json()["turns"]
    assert [(t["id"], t["reply"]) for t in stored] == [(turn["id"], turn["reply"])]


def test_a_client_never_reaches_another_clients_conversation(api):
    mine, my_headers = create(api)
    theirs, their_headers = create(api)
    keyed, key_headers = create(api, "website")
    api.post(f"/conversations/{theirs}/messages", json={"text": "invoice my order"}, headers=their_headers)
    turn_id = api.get(f"/conversations/{theirs}", headers=their_headers).json()["turns"][0]["id"]
    for target, headers, status in ((theirs, my_headers, 403), (keyed, my_headers, 403),
                                    (theirs, {"X-API-Key": KEYS["app"]}, 403), (keyed, {"X-API-Key": KEYS["app"]}, 403),
                                    (theirs, {}, 401), (keyed, {}, 401),
                                    (theirs, {"X-Conversation-Token": "guess"}, 403)):
        assert_error(api.get(f"/conversations/{target}", headers=headers), status, "")
        assert_error(api.post(f"/conversations/{target}/messages", json={"text": "hi"}, headers=headers), status, "")
        assert_error(api.post(f"/conversations/{target}/messages/stream", json={"text": "hi"}, headers=headers),
                     status, "")
        assert_error(api.post(f"/conversations/{target}/handoff", headers=headers), status, "")
        assert_error(api.post(f"/conversations/{target}/turns/{turn_id}/feedback", json={"rating": 1},
                              headers=headers), status, "")
        assert_error(api.get(f"/conversations/{target}/events", headers=headers), status, "")
    # a conversation's own turn only
    assert_error(api.post(f"/conversations/{mine}/turns/{turn_id}/feedback", json={"rating": 1}, headers=my_headers),
                 404, f"no turn {turn_id} in conversation")
    assert len(api.get(f"/conversations/{theirs}", headers=their_headers).json()["turns"]) == 1
    assert api.get(f"/conversations/{keyed}", headers=key_headers).status_code == 200


def test_every_error_status(api):
    conversation, headers = create(api)
    url = f"/conversations/{conversation}/messages"
    assert_error(api.post(url, content=b"{not json", headers={**headers, "Content-Type": "application/json"}),
                 400, "JSON")
    assert_error(api.post(url, json={"txt": "hi"}, headers=headers), 400, "text")
    assert_error(api.post(url, json={"text": 42}, headers=headers), 400, "text")
    assert_error(api.post(f"/conversations/{conversation}/turns/1/feedback", json={"rating": 5}, headers=headers),
                 400, "rating")
    assert_error(api.post("/conversations", headers={"X-API-Key": "sb_wrong"}), 401, "unknown API key")
    assert_error(api.get(f"/conversations/{conversation}"), 401, "X-Conversation-Token")
    assert_error(api.get(f"/conversations/{conversation}", headers={"X-Conversation-Token": "nope"}), 403, "token")
    assert_error(api.get("/conversations/0123456789abcdef0123456789abcdef", headers=headers), 404, "no conversation")
    assert_error(api.post(url, json={"text": "x" * 2001}, headers=headers), 413, "at most 2000")
    assert_error(api.post(url, content=b'{"text": "' + b"x" * 70_000 + b'"}',
                          headers={**headers, "Content-Type": "application/json"}), 413, "")
    assert_error(api.get("/nowhere"), 404, "")
    assert api.get(f"/conversations/{conversation}", headers=headers).json()["turns"] == []  # nothing logged
    for _ in range(KEY_RATE):
        response = api.post("/conversations", headers={"X-API-Key": KEYS["burst"]})
        if response.status_code == 429:
            break
    assert_error(api.post("/conversations", headers={"X-API-Key": KEYS["burst"]}), 429, "API key")
    assert int(response.headers.get("Retry-After", api.post("/conversations", headers={"X-API-Key": KEYS["burst"]})
                                    .headers["Retry-After"])) >= 1
    assert api.post("/conversations", headers={"X-API-Key": KEYS["website"]}).status_code == 201  # its own limit


def test_openapi_docs(api):
    spec = api.get("/openapi.json").json()
    assert {"/conversations", "/conversations/{conversation_id}/messages",
            "/conversations/{conversation_id}/messages/stream", "/conversations/{conversation_id}/handoff",
            "/conversations/{conversation_id}/turns/{turn_id}/feedback"} <= set(spec["paths"])
    assert api.get("/docs").status_code == 200


def test_zz_per_address_limit(api):
    """Runs last in the module: it uses up this address's allowance."""
    statuses = [api.post("/conversations").status_code for _ in range(ADDRESS_RATE + 1)]
    assert statuses[-1] == 429 and 201 in statuses
    response = api.post("/conversations")
    assert_error(response, 429, "address")
    assert int(response.headers["Retry-After"]) >= 1
    assert api.post("/conversations", headers={"X-API-Key": KEYS["website"]}).status_code == 201


def test_api_key_command_prints_a_key_and_its_digest():
    import shutil
    import subprocess

    result = subprocess.run([shutil.which("supportbot"), "api-key", "website"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    key = result.stdout.split("key (shown once): ")[1].split()[0]
    assert f'"website" = "sha256:{digest(key)}"' in result.stdout and len(key) > 40


def test_a_rest_client_that_leaves_mid_reply_frees_its_place_and_leaves_an_interrupted_turn(
        tiny_home_template, tmp_path):
    """One generation slot; a client reads the start of a long streamed reply and disconnects.
    The slot must be freed at once (the next customer is answered), the long generation stopped,
    and the turn kept, marked interrupted (it once stayed waiting forever, holding the slot)."""
    from test_openai_backend import drip_app, serving

    served: list[dict] = []
    home = tmp_path / "home"
    shutil.copytree(tiny_home_template, home)
    with serving(drip_app(served)) as backend, running_server(
            home, tmp_path / "server.log", SUPPORTBOT_SERVING__BACKEND="openai",
            SUPPORTBOT_SERVING__OPENAI__BASE_URL=backend, SUPPORTBOT_ROUTER__MAX_CONCURRENT_GENERATIONS="1",
            SUPPORTBOT_API__ADDRESS_RATE="1000/minute") as (url, _):
        with httpx.Client(base_url=url + "api/v1", timeout=30) as client:
            left, headers = create(client)
            with client.stream("POST", f"/conversations/{left}/messages/stream",
                               json={"text": "please refund my order"}, headers=headers) as response:
                assert response.status_code == 200
                lines = (line for line in response.iter_lines() if line.startswith("data: "))
                assert "looking into it" in next(lines)  # the reply has started: leave
            started = time.monotonic()
            other, headers = create(client)
            answer = client.post(f"/conversations/{other}/messages", json={"text": "quick, please refund my order"},
                                 headers=headers)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 20  # the long reply alone would take 60 s
            assert answer.json()["turn"]["route"] == "answer" and "looking into it" in answer.json()["turn"]["reply"]
        stored = sqlite3.connect(home / "conversations.db").execute(
            "SELECT status, interrupted_at IS NOT NULL, user_text FROM turns WHERE conversation_id = ?",
            [left]).fetchall()
        assert stored == [("incomplete", 1, "please refund my order")]
        assert [r["finished"] for r in served] == [False, True]  # the long generation was stopped
