"""The REST channel: a JSON API under ``/api/v1/`` for websites, apps and messaging channels.

A FastAPI app mounted at ``/api/v1`` by :mod:`ui.server`; its OpenAPI description is served at
``/api/v1/openapi.json`` and read at ``/api/v1/docs``. It uses the chat page's router (same
routing, store and logging).

Who may call it:

- **integrations** send an API key in ``X-API-Key``; only the key's sha256 digest is configured
  (``[api] keys``, ``supportbot api-key NAME``). A key may use the conversations it created.
- **anonymous clients** (a website's own chat widget) may create a conversation when
  ``[api] anonymous`` is on (default); the answer holds a *conversation token*, sent back in
  ``X-Conversation-Token`` on every later call. Only its sha256 digest is stored.

A caller never reaches another caller's conversation (403). Requests are limited per API key
(``[api] key_rate``) and, without a key, per client address (``[api] address_rate``): 429 with
``Retry-After``. Errors are JSON ``{"error": {"status": ..., "message": ...}}``: 400 bad JSON
or fields, 401 no or unknown credentials, 403 not this caller's conversation, 404 unknown
conversation or turn, 413 message or body too long, 429 too many requests.

The API has no agent actions: agents work in the inbox page (``/inbox/``, login).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name
# dependencies defined inside build_api.

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from bot.errors import SupportbotError
from bot.records import FALLBACK_ROUTES, Route, Turn
from bot.router import Router
from bot.settings import ApiConfig
from bot.text import MAX_CHARS

MAX_BODY_BYTES = 64 * 1024
"""Larger request bodies are refused with 413 before they are parsed."""

POLL_S = 0.5
"""How often ``/events`` looks for new turns, in seconds."""


def digest(secret: str) -> str:
    """The sha256 hex digest of an API key or conversation token, as configured and stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new random API key and the ``sha256:<hex>`` line to put in ``[api] keys``."""
    key = "sb_" + secrets.token_urlsafe(32)
    return key, f"sha256:{digest(key)}"


def new_token() -> tuple[str, str]:
    """A new conversation token and its digest (stored with the conversation)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


async def in_own_thread(chunks: Iterator) -> AsyncIterator:
    """Iterate the blocking generator ``chunks`` (for instance :meth:`bot.router.Router.respond`)
    in a thread of its own, and close it in that thread once the consumer stops: when the client
    disconnects, the server cancels the consumer, and the generator is closed at its next item, so
    a customer who leaves mid-reply frees their generation slot and leaves an interrupted turn.

    A plain ``iterate_in_threadpool`` cannot do this: a cancelled ``next()`` keeps running in its
    worker thread, so the generator cannot be closed from the event loop, and is left suspended
    with its queue ticket until garbage collection.

    Yields:
        The items of ``chunks``; an exception it raises is raised here.
    """
    loop, items, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

    def put(item: tuple) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the server's event loop is closed: nobody listens any more
            pass

    def drive() -> None:
        try:
            with closing(chunks):
                for chunk in chunks:
                    if stop.is_set():
                        return
                    put((True, chunk))
            put((False, None))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    threading.Thread(target=drive, name="api-reply", daemon=True).start()
    try:
        while True:
            more, item = await items.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """The exception an endpoint raises for a JSON error reply."""
    return HTTPException(status, message, headers=headers)


class MessageIn(BaseModel):
    """A customer message."""

    text: str = Field(description="the customer's message; at most [api] max_message_chars characters")

    model_config = {"extra": "forbid"}


class FeedbackIn(BaseModel):
    """A customer's rating of one reply."""

    rating: Literal[1, -1] = Field(description="1 = thumbs up, -1 = thumbs down")
    comment: str | None = Field(None, max_length=MAX_CHARS)

    model_config = {"extra": "forbid"}


class TurnOut(BaseModel):
    """One turn as a client sees it: the customer's text and the reply (bot, agent or notice)."""

    id: int
    index: int
    user_text: str
    reply: str | None
    route: Route | None = Field(description="human: left for the agent (the reply, when not empty, is the bot's "
                                            "acknowledgement while the conversation waits for an agent); agent: an "
                                            "agent's reply; notice: a status message; the others: the bot's reply")
    reason: str | None
    intent: str | None = Field(description="the intent the reply is for (for a follow-up, the one decided with "
                                           "the previous message); null when the message was not understood "
                                           "(rephrase, fallback)")
    confidence: float | None = Field(description="the classifier's confidence in its top intent for this message alone")
    agent: str | None = Field(description="the staff member who wrote the reply, if a person did")
    status: str
    started_at: str | None
    finished_at: str | None
    rating: int | None = Field(None, description="the customer's latest rating of the reply, 1 or -1")


class ConversationOut(BaseModel):
    """A conversation's state and turns."""

    conversation_id: str
    handled_by: Literal["bot", "waiting for an agent", "agent"]
    agent: str | None
    turns: list[TurnOut]


class CreatedOut(BaseModel):
    """A new conversation: its id and the token that opens it."""

    conversation_id: str
    token: str = Field(description="send it in X-Conversation-Token on every call about this conversation")


class ReplyOut(BaseModel):
    """The finished turn of a message."""

    turn: TurnOut


def turn_out(turn: Turn, rating: int | None = None) -> TurnOut:
    """A stored turn as the API shows it."""
    return TurnOut(id=turn.id, index=turn.index, user_text=turn.user_text, reply=turn.reply,
                   route=turn.decision.route if turn.decision else None,
                   reason=turn.decision.reason if turn.decision else None,
                   intent=turn.decision.intent if turn.decision and turn.decision.route not in FALLBACK_ROUTES else None,
                   confidence=turn.prediction.confidence if turn.prediction else None,
                   agent=turn.agent, status=turn.status, started_at=turn.started_at,
                   finished_at=turn.finished_at, rating=rating)


@dataclass(frozen=True)
class Caller:
    """Who sends a request: an API key's name (None without a key) and the client address."""

    key: str | None
    address: str


class Limiter:
    """Moving-window request limits per API key and per client address (the ``limits`` package,
    https://limits.readthedocs.io/), in memory: one server process."""

    def __init__(self, key_rate: str, address_rate: str):
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.key_rate, self.address_rate = parse(key_rate), parse(address_rate)

    def hit(self, kind: str, name: str) -> None:
        """Count one request of ``name`` (a key or an address).

        Raises:
            HTTPException: 429 with ``Retry-After`` (seconds) when over the limit.
        """
        rate = self.key_rate if kind == "key" else self.address_rate
        if not self.limiter.hit(rate, kind, name):
            reset = self.limiter.get_window_stats(rate, kind, name).reset_time
            wait = max(1, int(reset - time.time() + 0.999))
            raise error(429, f"too many requests from this {'API key' if kind == 'key' else 'address'} "
                             f"(limit {rate}); retry in {wait} s", {"Retry-After": str(wait)})


def build_api(router: Router, config: ApiConfig) -> FastAPI:
    """The REST app, to mount at ``/api/v1`` (:func:`ui.server.build_server`).

    Args:
        router: the chat's router (the API's only way to the conversation log).
        config: keys, anonymous access, rate limits, message length.
    """
    keys = {hashed.removeprefix("sha256:"): name for name, hashed in config.keys.items()}
    limiter = Limiter(config.key_rate, config.address_rate)
    api = FastAPI(title="supportbot REST channel", version="1",
                  description=__doc__.split("\n\n", 1)[1])

    @api.middleware("http")
    async def _body_size(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if not length.isdigit():  # chunked: read it (the app is given the same bytes)
            length = str(len(await request.body()))
        if int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": {"status": 413, "message": f"the body is over {MAX_BODY_BYTES} bytes"}},
                                status_code=413)
        return await call_next(request)

    @api.exception_handler(HTTPException)
    def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"status": exc.status_code, "message": exc.detail}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        return JSONResponse({"error": {"status": 400, "message": problems}}, status_code=400)

    def caller(request: Request,
               x_api_key: Annotated[str | None, Header(description="an integration's API key")] = None) -> Caller:
        address = request.client.host if request.client else "unknown"
        if x_api_key is None:
            limiter.hit("address", address)
            return Caller(None, address)
        name = next((name for hashed, name in keys.items() if hmac.compare_digest(hashed, digest(x_api_key))), None)
        if name is None:
            limiter.hit("address", address)
            raise error(401, "unknown API key")
        limiter.hit("key", name)
        return Caller(name, address)

    def conversation(
        conversation_id: Annotated[str, Path(description="the id returned at creation")],
        who: Annotated[Caller, Depends(caller)],
        x_conversation_token: Annotated[str | None, Header(description="the token returned at creation")] = None,
    ) -> str:
        try:
            owner = router.owner(conversation_id)
        except SupportbotError:
            raise error(404, f"no conversation {conversation_id}") from None
        if who.key is not None and owner.client == who.key:
            return conversation_id
        if x_conversation_token is not None:
            if owner.token_hash and hmac.compare_digest(owner.token_hash, digest(x_conversation_token)):
                return conversation_id
            raise error(403, "this token does not open that conversation")
        if who.key is None:
            raise error(401, "send the conversation's X-Conversation-Token (or your X-API-Key)")
        raise error(403, "that conversation was not created with this API key")

    def message(body: MessageIn) -> str:
        if len(body.text) > config.max_message_chars:
            raise error(413, f"the message has {len(body.text)} characters; at most {config.max_message_chars}")
        return body.text

    Conversation = Annotated[str, Depends(conversation)]
    Message = Annotated[str, Depends(message)]

    @api.post("/conversations", status_code=201, response_model=CreatedOut, summary="Create a conversation")
    def create(who: Annotated[Caller, Depends(caller)]) -> CreatedOut:
        if who.key is None and not config.anonymous:
            raise error(401, "an X-API-Key is required")
        token, hashed = new_token()
        return CreatedOut(conversation_id=router.new_conversation("api", who.key, hashed), token=token)

    @api.get("/conversations/{conversation_id}", response_model=ConversationOut, summary="Read a conversation")
    def history(conversation_id: Conversation,
                after: Annotated[int, Query(description="only turns with a higher index")] = -1) -> ConversationOut:
        turns = router.updates(conversation_id, after)
        ratings = router.ratings(conversation_id)
        handoff = router.open_handoff(conversation_id)
        handled_by = "bot" if handoff is None else ("agent" if handoff.agent else "waiting for an agent")
        return ConversationOut(conversation_id=conversation_id, handled_by=handled_by,
                               agent=handoff.agent if handoff else None,
                               turns=[turn_out(turn, ratings.get(turn.id)) for turn in turns])

    @api.post("/conversations/{conversation_id}/messages", response_model=ReplyOut,
              summary="Send a message, get the whole reply")
    def send(conversation_id: Conversation, text: Message) -> ReplyOut:
        *_, last = router.respond(conversation_id, text)
        return ReplyOut(turn=turn_out(last.turn))

    @api.post("/conversations/{conversation_id}/messages/stream", response_class=EventSourceResponse,
              summary="Send a message, get the reply as Server-Sent Events")
    async def send_streamed(conversation_id: Conversation, text: Message) -> AsyncIterator[ServerSentEvent]:
        """Events: ``reply`` (``{"text": the reply so far}``, the whole text each time: show it in place of
        the last one; while the turn waits for a generation slot, its place in the queue; the safety
        net may replace a reply that strays with an approved answer, so it does not only grow),
        then ``turn`` (the finished turn, whose ``reply`` is final).
        A client that disconnects stops the reply; the turn stays, marked interrupted."""
        shown = None
        async for chunk in in_own_thread(router.respond(conversation_id, text)):
            if chunk.turn is None:
                if chunk.text != shown:  # the reply grows sentence by sentence, not every token
                    shown = chunk.text
                    yield ServerSentEvent(event="reply", data={"text": chunk.text})
            else:
                yield ServerSentEvent(event="turn", data=turn_out(chunk.turn).model_dump())

    @api.get("/conversations/{conversation_id}/events", response_class=EventSourceResponse,
             summary="Wait for new turns (an agent's replies) as Server-Sent Events")
    async def events(conversation_id: Conversation,
                     after: Annotated[int, Query(description="only turns with a higher index")] = -1,
                     wait: Annotated[float, Query(gt=0, le=120, description="seconds to keep the stream open")] = 60.0,
                     ) -> AsyncIterator[ServerSentEvent]:
        """One ``turn`` event per new complete turn, for ``wait`` seconds; reconnect with ``after``
        set to the last index seen."""
        deadline = asyncio.get_running_loop().time() + wait
        while asyncio.get_running_loop().time() < deadline:
            for turn in await run_in_threadpool(router.updates, conversation_id, after):
                after = turn.index
                yield ServerSentEvent(event="turn", id=str(turn.index), data=turn_out(turn).model_dump())
            await asyncio.sleep(POLL_S)

    @api.post("/conversations/{conversation_id}/turns/{turn_id}/feedback", status_code=201,
              summary="Rate a reply")
    def feedback(conversation_id: Conversation, turn_id: int, body: FeedbackIn) -> dict[str, int]:
        try:
            router.turn_of(conversation_id, turn_id)
        except SupportbotError as exc:
            raise error(404, str(exc)) from None
        try:
            return {"feedback_id": router.feedback(turn_id, body.rating, body.comment)}
        except SupportbotError as exc:
            raise error(400, str(exc)) from None

    @api.post("/conversations/{conversation_id}/handoff", response_model=ReplyOut, summary="Ask for a person")
    def handoff(conversation_id: Conversation) -> ReplyOut:
        *_, last = router.request_human(conversation_id)
        return ReplyOut(turn=turn_out(last.turn))

    return api
