"""The agents' inbox (Gradio Blocks, mounted at ``/inbox/`` behind a login by :mod:`ui.server`):
conversations waiting for a person, oldest first, with their waiting time and handoff reason;
open one to see every turn with its intent and route; take it, reply, hand it back to the bot,
or close it. The agent is the logged-in user; an ``admin`` may act in a conversation another
agent holds.

API endpoints (all behind the login): ``/inbox`` -> (table, conversation choices),
``/open_conversation`` (id) -> (chat, turns table, state), ``/take`` (id), ``/reply`` (id, text),
``/hand_back`` (id), ``/close`` (id), each -> (status, chat, turns table, state[, cleared reply]).
"""

from __future__ import annotations

import gradio as gr

from bot.errors import SupportbotError
from bot.handoff import Inbox
from bot.records import Route, Turn
from bot.store import ConversationStore
from ui.chat import as_text

REFRESH_S = 2.0
"""How often the page refreshes the list and the open conversation, in seconds."""

LIST_COLUMNS = ["conversation", "waiting", "state", "reason", "last customer message"]
TURN_COLUMNS = ["#", "who", "text", "intent", "confidence", "route", "reason", "time (UTC)"]


def waited(seconds: float) -> str:
    """A waiting time in words: ``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def _clock(iso: str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` of a stored UTC time."""
    return (iso or "")[:19].replace("T", " ")


def _rows(turn: Turn) -> list[list]:
    """Turn table rows: the customer's message, then the reply, each with the turn's intent and route."""
    route = turn.decision.route if turn.decision else None
    common = [turn.prediction.intent if turn.prediction else "",
              round(turn.prediction.confidence, 3) if turn.prediction else None,
              route or turn.status, turn.decision.reason if turn.decision else "",
              _clock(turn.started_at)]
    rows = []
    if turn.user_text:
        rows.append([turn.index, "customer", turn.user_text, *common])
    if turn.reply:
        who = {Route.AGENT: f"agent {turn.agent}", Route.NOTICE: "notice"}.get(route, "bot")
        rows.append([turn.index, who, turn.reply, *common])
    return rows


def _messages(turn: Turn) -> list[dict[str, str]]:
    route = turn.decision.route if turn.decision else None
    messages = []
    if turn.user_text:
        messages.append({"role": "user", "content": as_text(turn.user_text)})
    if turn.reply:
        who = {Route.AGENT: f"{turn.agent} (agent)", Route.NOTICE: "notice"}.get(route, "bot")
        messages.append({"role": "assistant", "content": as_text(f"[{who}] {turn.reply}")})
    return messages


class InboxHandlers:
    """Event handlers of the inbox page, bound to one :class:`bot.handoff.Inbox`.

    Args:
        inbox: the agents' actions on the store.
        admins: names of the accounts with role ``admin``.
    """

    def __init__(self, inbox: Inbox, admins: set[str]):
        self.inbox = inbox
        self.store: ConversationStore = inbox.store
        self.admins = admins

    def listing(self, request: gr.Request = None):
        """The open handoffs (waiting first, oldest first) and the conversation choices."""
        me = getattr(request, "username", None)
        rows = []
        for handoff, seconds in self.inbox.waiting():
            customer = [t.user_text for t in self.store.conversation(handoff.conversation_id) if t.user_text]
            state = "waiting" if handoff.agent is None else (
                "held by you" if handoff.agent == me else f"held by {handoff.agent}")
            rows.append([handoff.conversation_id, waited(seconds), state, handoff.reason,
                         (customer[-1] if customer else "")[:120]])
        choices = [row[0] for row in rows]
        return rows, gr.Dropdown(choices=choices)

    def open(self, conversation_id: str, request: gr.Request = None):
        """The whole conversation (chat and turn table) and who handles it."""
        if not conversation_id:
            return [], [], "Pick a conversation."
        try:
            turns = self.store.conversation(conversation_id)
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        me = getattr(request, "username", None)
        handoff = self.store.open_handoff(conversation_id)
        if handoff is None:
            state = "The bot handles this conversation."
        elif handoff.agent is None:
            state = f"**Waiting for an agent** since {_clock(handoff.requested_at)} UTC: {handoff.reason}"
        else:
            state = f"**Held by {'you' if handoff.agent == me else handoff.agent}** since {_clock(handoff.taken_at)} UTC"
        messages = [message for turn in turns for message in _messages(turn)]
        rows = [row for turn in turns for row in _rows(turn)]
        return messages, rows, state

    def _act(self, action, conversation_id: str, request: gr.Request, done: str):
        agent = getattr(request, "username", None)
        if not agent:
            raise gr.Error("log in first")
        if not conversation_id:
            raise gr.Error("pick a conversation first")
        try:
            action(agent, agent in self.admins)
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        return (done, *self.open(conversation_id, request))

    def take(self, conversation_id: str, request: gr.Request = None):
        """Take the conversation: the customer is told the agent's name; the bot stays silent."""
        return self._act(lambda agent, admin: self.inbox.take(conversation_id, agent),
                         conversation_id, request, "You hold this conversation.")

    def reply(self, conversation_id: str, text: str, request: gr.Request = None):
        """Send a reply to the customer (stored redacted, as an ``agent`` turn)."""
        return (*self._act(lambda agent, admin: self.inbox.reply(conversation_id, agent, text, admin),
                           conversation_id, request, "Sent."), "")

    def hand_back(self, conversation_id: str, request: gr.Request = None):
        """Give the conversation back to the bot."""
        return self._act(lambda agent, admin: self.inbox.hand_back(conversation_id, agent, admin),
                         conversation_id, request, "Handed back to the bot.")

    def close(self, conversation_id: str, request: gr.Request = None):
        """Close the conversation (it leaves the inbox)."""
        return self._act(lambda agent, admin: self.inbox.close(conversation_id, agent, admin),
                         conversation_id, request, "Closed.")


def build_inbox_app(inbox: Inbox, admins: set[str] | None = None) -> gr.Blocks:
    """The inbox page; refreshes every :data:`REFRESH_S` seconds."""
    handlers = InboxHandlers(inbox, admins or set())
    with gr.Blocks(title="Supportbot inbox") as app:
        gr.Markdown("## Conversations waiting for a person")
        listing = gr.Dataframe(headers=LIST_COLUMNS, interactive=False, label="Inbox (oldest first)", wrap=True)
        with gr.Row():
            conversation_id = gr.Dropdown([], label="Conversation", allow_custom_value=True, filterable=True, scale=3)
            show = gr.Button("Open", scale=1)
        state = gr.Markdown()
        with gr.Row():
            chat = gr.Chatbot(label="Conversation", height=380, allow_tags=False, sanitize_html=True,
                              render_markdown=False, feedback_options=None, scale=1)
            turns = gr.Dataframe(headers=TURN_COLUMNS, interactive=False, label="Turns: intent and route",
                                 wrap=True, scale=1)
        reply = gr.Textbox(label="Your reply to the customer", lines=3)
        with gr.Row():
            take = gr.Button("Take", variant="primary")
            send = gr.Button("Send reply", variant="primary")
            hand_back, close = gr.Button("Hand back to the bot"), gr.Button("Close conversation")
        status = gr.Markdown()
        shown = [chat, turns, state]
        app.load(handlers.listing, None, [listing, conversation_id], api_name=False)
        refresh = gr.Button("Refresh list")
        refresh.click(handlers.listing, None, [listing, conversation_id], api_name="inbox")
        show.click(handlers.open, conversation_id, shown, api_name="open_conversation")
        conversation_id.select(handlers.open, conversation_id, shown, api_name=False)
        take.click(handlers.take, conversation_id, [status, *shown], api_name="take")
        send.click(handlers.reply, [conversation_id, reply], [status, *shown, reply], api_name="reply")
        reply.submit(handlers.reply, [conversation_id, reply], [status, *shown, reply], api_name=False)
        hand_back.click(handlers.hand_back, conversation_id, [status, *shown], api_name="hand_back")
        close.click(handlers.close, conversation_id, [status, *shown], api_name="close")
        timer = gr.Timer(REFRESH_S)
        timer.tick(handlers.listing, None, [listing, conversation_id], api_name=False, show_progress="hidden")
        timer.tick(handlers.open, conversation_id, shown, api_name=False, show_progress="hidden")
    return app
