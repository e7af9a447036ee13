"""The public chat page (Gradio Blocks): streamed replies, thumbs up/down, "talk to a human",
new conversation, and, when the ``chat.show_internals`` setting is on (and always on the
reviewers' "Try the bot" tab), a side panel with the predicted intent and confidence.

Every handler has an ``api_name`` so the page can be driven with ``gradio_client`` (tests do):
``/send`` (message) -> (chat messages, "", info), ``/feedback`` (turn_id, rating, comment),
``/human``, ``/new_conversation`` and ``/updates`` -> chat messages (what an agent wrote since).
``info`` holds only the turn id (for ``/feedback``) unless internals are shown. Session state
(the conversation id and which turn each bot message is) lives in ``gr.State``, so a client can
only rate turns of its own conversation; the chat's own clear icon starts a new conversation like
the button does.

Untrusted text is inert: customer and model text is shown as plain text, never as Markdown
(``render_markdown=False``: no image, link or remote resource from a customer), HTML special
characters are escaped (:func:`as_text`) and Gradio's sanitiser stays on.

The page survives a reload: the conversation id and its token (only the token's digest is
stored, as for the REST channel) are kept in the browser (``gr.BrowserState``), and on load the
chat is rebuilt from the store with its thumbs. While a person handles the conversation a timer
(every :data:`POLL_S` s) fetches what the agent wrote (:meth:`bot.router.Router.updates`); a
customer message gets the bot's acknowledgement while it waits for an agent (the turn's reply,
:meth:`bot.handoff.Inbox.acknowledgement`) and no bot message once an agent holds it.
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from bot.errors import SupportbotError
from bot.records import BOT_ROUTES, Route, Turn
from bot.router import ReplyChunk, Router
from bot.text import normalise
from ui.api import digest, new_token

TITLE = "Customer support"
POLL_S = 1.0
"""How often the page asks for an agent's replies, in seconds."""


@dataclass
class ChatSession:
    """One browser session's chat.

    Attributes:
        conversation_id: the store's conversation id, None until the first message.
        messages: the chat as Gradio message dicts (``role``, ``content``).
        turn_ids: index in ``messages`` of a bot reply -> the turn id in the store.
        token: the conversation token (kept in the browser to reopen the conversation).
        shown: index of the last turn the page shows (turns after it are fetched by the timer).
    """

    conversation_id: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    turn_ids: dict[int, int] = field(default_factory=dict)
    token: str | None = None
    shown: int = -1


def turn_messages(turn: Turn) -> list[dict[str, str]]:
    """The chat messages of a stored turn: the customer's text, then the reply (an agent's
    prefixed with the agent's name), text escaped (:func:`as_text`)."""
    route = turn.decision.route if turn.decision else None
    messages = []
    if turn.user_text or route == Route.HANDOFF:
        messages.append({"role": "user", "content": as_text(turn.user_text or "(asked for a human)")})
    if turn.reply:
        prefix = f"{turn.agent} (support team): " if route == Route.AGENT else ""
        messages.append({"role": "assistant", "content": as_text(prefix + turn.reply)})
    elif turn.status != "complete" and route is None:
        messages.append({"role": "assistant", "content": "(no reply: interrupted)"})
    return messages


def as_text(text: str) -> str:
    """``text`` with HTML special characters escaped, so the chat shows tags as typed instead of
    rendering them (the Chatbot renders Markdown and HTML)."""
    return html.escape(text, quote=False)


def _info(chunk: ReplyChunk, internals: bool) -> dict[str, Any]:
    turn = chunk.turn
    if turn is None:
        return {}
    if not internals:
        return {"turn_id": turn.id}
    info: dict[str, Any] = {"turn_id": turn.id, "route": turn.decision.route,
                            "reason": turn.decision.reason}
    if turn.prediction is not None:
        info.update(intent=turn.prediction.intent, confidence=round(turn.prediction.confidence, 3),
                    top3=[[i, round(p, 3)] for i, p in turn.prediction.top_k[:3]],
                    oos_score=round(turn.prediction.oos_score, 3))
    if turn.missing_slots:
        info["missing_slots"] = turn.missing_slots
    return info


RATINGS = {True: 1, "Like": 1, False: -1, "Dislike": -1}
"""Gradio's ``LikeData.liked`` -> stored rating; anything else (``""`` when the customer clicks a
selected thumb again) withdraws the rating (0)."""


class ChatHandlers:
    """The event handlers of the chat page, bound to one router and store.

    Args:
        router: the bot.
        internals: put the prediction and the routing reason in the info panel.
    """

    def __init__(self, router: Router, internals: bool = False):
        self.router = router
        self.streaming: set[str] = set()  # conversations whose reply streams now: the timer waits
        self.internals = internals

    def _stream(self, session: ChatSession, user_text: str, chunks):
        # shown as the router logs it (bot/text.py): a lone surrogate could not even be sent back
        session.messages.append({"role": "user", "content": as_text(normalise(user_text).text)})
        session.messages.append({"role": "assistant", "content": "…"})
        index = len(session.messages) - 1
        self.streaming.add(session.conversation_id)
        try:
            for chunk in chunks:
                shown = "\n\n".join(part for part in (chunk.text, chunk.notice and f"({chunk.notice})") if part)
                session.messages[index]["content"] = as_text(shown) or "…"
                if chunk.turn is not None:
                    if not shown:  # an agent holds the conversation: no bot reply, only the customer's message
                        session.messages.pop(index)
                    elif chunk.turn.decision.route in BOT_ROUTES:
                        session.turn_ids[index] = chunk.turn.id
                    if chunk.turn.index == session.shown + 1:  # nothing new came in between
                        session.shown = chunk.turn.index
                yield session.messages, "", _info(chunk, self.internals), session
        finally:
            self.streaming.discard(session.conversation_id)

    def _conversation(self, session: ChatSession | None) -> ChatSession:
        session = session or ChatSession()
        if session.conversation_id is None:
            session.token, hashed = new_token()
            session.conversation_id = self.router.new_conversation("web", None, hashed)
        return session

    def _rebuild(self, session: ChatSession) -> tuple[Any, ChatSession]:
        """The chat from the store (with the customer's thumbs), as a Chatbot update."""
        turns = self.router.updates(session.conversation_id)
        ratings = self.router.ratings(session.conversation_id)
        session.messages, session.turn_ids, thumbs = [], {}, []
        for turn in turns:
            for message in turn_messages(turn):
                session.messages.append(message)
                if message["role"] == "assistant":
                    rating = ratings.get(turn.id)
                    thumbs.append({1: "Like", -1: "Dislike"}.get(rating))
                    if turn.decision and turn.decision.route in BOT_ROUTES:
                        session.turn_ids[len(session.messages) - 1] = turn.id
        session.shown = turns[-1].index if turns else -1
        return gr.Chatbot(value=session.messages, feedback_value=thumbs), session

    def restore(self, saved: dict | None):
        """On page load: the conversation kept in the browser, when its token still opens it;
        returns (chat, info, session)."""
        saved = saved or {}
        conversation_id, token = saved.get("conversation_id"), saved.get("token")
        if conversation_id and token:
            try:
                owner = self.router.owner(conversation_id)
            except SupportbotError:
                owner = None
            if owner is not None and owner.token_hash == digest(token):
                chat, session = self._rebuild(ChatSession(conversation_id, token=token))
                return chat, {}, session
        return [], {}, ChatSession()

    @staticmethod
    def saved(session: ChatSession | None) -> dict:
        """What the browser keeps: the conversation id and its token."""
        if session is None or session.conversation_id is None:
            return {"conversation_id": None, "token": None}
        return {"conversation_id": session.conversation_id, "token": session.token}

    def updates(self, session: ChatSession | None):
        """What was written since the page last showed the conversation (an agent's replies,
        notices): the whole chat rebuilt from the store, or no change (``gr.skip()``)."""
        if session is None or session.conversation_id is None or session.conversation_id in self.streaming:
            return gr.skip(), gr.skip()
        if not self.router.updates(session.conversation_id, session.shown):
            return gr.skip(), gr.skip()
        return self._rebuild(session)

    def send(self, message: str, session: ChatSession | None):
        """Answer one customer message; yields (messages, cleared textbox, info, session)."""
        session = self._conversation(session)
        yield from self._stream(session, message or "", self.router.respond(session.conversation_id, message or ""))

    def human(self, session: ChatSession | None):
        """Hand the conversation to a person."""
        session = self._conversation(session)
        yield from self._stream(session, "(asked for a human)", self.router.request_human(session.conversation_id))

    def new_conversation(self, session: ChatSession | None):
        """Start over with an empty chat; the next message opens a new conversation."""
        return [], {}, ChatSession()

    def feedback(self, turn_id: float, rating: float, comment: str, session: ChatSession | None) -> str:
        """Store thumbs up (+1), down (-1) or withdraw the rating (0), with an optional comment,
        for a turn of this session; the latest counts, earlier ones are kept as history.

        Raises:
            gr.Error: the turn is not part of this session's conversation, or rating is not 1, -1 or 0.
        """
        if session is None or turn_id is None or int(turn_id) not in session.turn_ids.values():
            raise gr.Error("that reply is not part of this conversation")
        if rating is None or int(rating) not in (1, -1, 0):
            raise gr.Error("rating must be 1 (thumbs up), -1 (thumbs down) or 0 (withdraw)")
        try:
            self.router.feedback(int(turn_id), int(rating), comment or None)
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        return "thanks for the feedback"

    def like(self, session: ChatSession | None, data: gr.LikeData) -> None:
        """Thumbs up/down clicked on a bot message in the page."""
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        if session is None or index not in session.turn_ids:
            return
        self.router.feedback(session.turn_ids[index], RATINGS.get(data.liked, 0))


def browser_secret(home: Path) -> str:
    """The key that encrypts what the chat keeps in the browser, made once and kept in
    ``<home>/chat-secret`` (readable by its owner only), so a restarted server still reopens
    the customers' conversations."""
    path = Path(home) / "chat-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def chat_panel(app: gr.Blocks, router: Router, internals: bool = False, api_prefix: str = "",
               secret: str | None = None) -> None:
    """The chat's components and events, added to ``app`` while it is built (the public page, or
    the reviewers' "Try the bot" tab with ``internals`` and an ``api_prefix`` such as ``try_``).

    Its events have no Gradio concurrency limit: the router's queue (:mod:`bot.queue`, setting
    ``router.max_concurrent_generations``) bounds replies generated at once and streams each
    waiting customer their place in line. Gradio itself still runs at most ``max_threads`` (40)
    events of the page at once and shows its own queue position beyond that.

    Args:
        secret: encrypts the conversation kept in the browser (:func:`browser_secret`); None: a
            new one, so chats start afresh after a restart.
    """
    handlers = ChatHandlers(router, internals)
    session = gr.State(None)
    saved = gr.BrowserState({}, storage_key=f"supportbot-{api_prefix}chat", secret=secret)
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=480, allow_tags=False, sanitize_html=True,
                                 render_markdown=False, group_consecutive_messages=False,  # each reply its own thumbs
                                 feedback_options=("Like", "Dislike"))
            message = gr.Textbox(label="Your message", placeholder="Type your question and press Enter")
            with gr.Row():
                send = gr.Button("Send", variant="primary")
                human = gr.Button("Talk to a human")
                new = gr.Button("New conversation")
        with gr.Column(scale=1, visible=internals):
            info = gr.JSON(label="Last turn: intent, confidence, route")
    with gr.Row(visible=False):
        turn_id, rating, comment = gr.Number(precision=0), gr.Number(precision=0), gr.Textbox()
        rate, rated = gr.Button("rate"), gr.Textbox()
    outputs = [chatbot, message, info, session]
    generating = {"concurrency_limit": None}
    keep = {"fn": handlers.saved, "inputs": session, "outputs": saved, "api_name": False}
    message.submit(handlers.send, [message, session], outputs, api_name=f"{api_prefix}send", **generating).then(**keep)
    send.click(handlers.send, [message, session], outputs, api_name=False, **generating).then(**keep)
    human.click(handlers.human, [session], outputs, api_name=f"{api_prefix}human", **generating).then(**keep)
    new.click(handlers.new_conversation, [session], [chatbot, info, session],
              api_name=f"{api_prefix}new_conversation").then(**keep)
    chatbot.clear(handlers.new_conversation, [session], [chatbot, info, session], api_name=False).then(**keep)
    app.load(handlers.restore, saved, [chatbot, info, session], api_name=False)
    gr.Timer(POLL_S).tick(handlers.updates, session, [chatbot, session], api_name=f"{api_prefix}updates",
                          concurrency_limit=None, show_progress="hidden")
    chatbot.like(handlers.like, [session], None, api_name=False)
    rate.click(handlers.feedback, [turn_id, rating, comment, session], rated, api_name=f"{api_prefix}feedback")


def build_chat_app(router: Router, secret: str | None = None, internals: bool = False) -> gr.Blocks:
    """The public chat page (:func:`chat_panel`); ``internals`` is the ``chat.show_internals``
    setting, ``secret`` see :func:`browser_secret`."""
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"## {TITLE}")
        chat_panel(app, router, internals, secret=secret)
    return app
