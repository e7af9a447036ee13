"""The reviewers' pages (Gradio Blocks, mounted behind a login by :mod:`ui.server`):
the review queue with its actions, the dashboard, and "Try the bot" (the chat with its intent
panel on).

API endpoints (all behind the login): ``/next_item`` (filters) -> (counts, item, conversation,
intent, reply, note), ``/review_action`` (turn id, action, intent, reply, note, filters) ->
(status, counts, item, conversation, intent, reply, note), ``/undo_review`` (filters) -> the same
as ``/review_action``, undoing the logged-in reviewer's latest review in effect, ``/dashboard`` ->
(totals, three plots). The reviewer's name is the logged-in user.

The turn's details name the approved replies retrieved for it (``retrieved``: answer id, source,
review id, similarity score, excerpt; :class:`bot.records.AnswerRef`) and the answer store's
``answers_version``.

The form shows each item fresh: the note is empty, the reply is the bot's, and the intent is the
predicted one only for an answered turn; on a fallback, handoff or interrupted turn it is empty,
so "approve" stores "out of scope was right" (:mod:`bot.reviews`) unless the reviewer picks an
intent. Conversation text is shown as plain text (no Markdown: a customer's image or link never
loads), escaped as on the chat page.
"""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr

from bot.errors import SupportbotError
from bot.records import BOT_ROUTES, CLASSIFIED_ROUTES, OUT_OF_SCOPE, Route
from bot.reviews import ReviewFilter, ReviewLog
from bot.store import ConversationStore
from ui.chat import as_text, chat_panel
from ui.plots import dashboard_figures

ROUTES = ["", *(route.value for route in (*BOT_ROUTES, Route.HUMAN))]
FEEDBACK = ["", "down", "up", "none"]


def _filters(since: str, until: str, intent: str, route: str, feedback: str) -> ReviewFilter:
    return ReviewFilter(since or None, until or None, intent or None, route or None, feedback or None)


def _counts_text(counts: dict[str, int]) -> str:
    return "**Left to review:** " + " · ".join(f"{bucket}: {n}" for bucket, n in counts.items())


class ReviewHandlers:
    """Event handlers of the review page, bound to one store and the known intents."""

    def __init__(self, store: ConversationStore, intents: list[str]):
        self.store = store
        self.log = ReviewLog(store)
        self.intents = sorted(set(intents)) + [OUT_OF_SCOPE]

    def next_item(self, since="", until="", intent="", route="", feedback=""):
        """The counts and the first queue item under these filters."""
        filters = _filters(since, until, intent, route, feedback)
        counts = _counts_text(self.log.counts(filters))
        queue = self.log.queue(filters, limit=1)
        if not queue:
            return counts, {}, [], None, "", ""
        item = queue[0]
        turn = item.turn
        route = turn.decision.route if turn.decision else None
        details = {"turn_id": turn.id, "why in queue": item.bucket, "feedback": item.rating,
                   "route": route, "reason": turn.decision.reason if turn.decision else None,
                   "intent": turn.prediction.intent if turn.prediction else None,
                   "confidence": round(turn.prediction.confidence, 3) if turn.prediction else None,
                   "top3": turn.prediction.top_k[:3] if turn.prediction else [],
                   "interrupted": turn.interrupted, "text changed": list(turn.text_changes),
                   "redacted": turn.redacted, "started_at": turn.started_at,
                   "retrieved": [asdict(ref) for ref in turn.retrieved], "answers_version": turn.answers_version}
        prefilled = details["intent"] if route in CLASSIFIED_ROUTES else None
        return (counts, details, self._conversation(turn.conversation_id, turn.id),
                prefilled, turn.reply or "", "")

    def _conversation(self, conversation_id: str, focus: int) -> list[dict[str, str]]:
        """The conversation as chat messages, text escaped as on the chat page (:func:`as_text`)."""
        messages = []
        for turn in self.store.conversation(conversation_id):
            marker = "▶ " if turn.id == focus else ""
            missing = "(no reply: interrupted)" if turn.interrupted else "(no reply: incomplete)"
            messages.append({"role": "user", "content": as_text(marker + (turn.user_text or "(no text)"))})
            messages.append({"role": "assistant", "content": as_text(turn.reply or missing)})
        return messages

    def act(self, turn_id, action: str, intent: str, reply: str, note: str,
            since="", until="", filter_intent="", route="", feedback="", request: gr.Request = None):
        """Store one review action by the logged-in reviewer, then show the next item.

        Raises:
            gr.Error: no item selected, or the action is incomplete (e.g. relabel without intent).
        """
        if not turn_id:
            raise gr.Error("no turn selected")
        reviewer = getattr(request, "username", None) or "unknown"
        try:
            review_id = self.log.record(int(turn_id), reviewer, action, intent=intent if action != "skip" else None,
                                        reply=reply if action == "rewrite" else None, note=note or None)
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        status = f"saved review {review_id}: {action} of turn {int(turn_id)} by {reviewer}"
        return (status, *self.next_item(since, until, filter_intent, route, feedback))

    def undo(self, since="", until="", filter_intent="", route="", feedback="", request: gr.Request = None):
        """Undo the logged-in reviewer's latest review in effect (a new ``undo`` row), then show
        the next item (the undone turn is back in the queue unless an earlier review stands).

        Raises:
            gr.Error: this reviewer has no review in effect.
        """
        reviewer = getattr(request, "username", None) or "unknown"
        try:
            undo_id, turn_id = self.log.undo(reviewer)
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        status = f"saved review {undo_id}: undo of {reviewer}'s last review of turn {turn_id}"
        return (status, *self.next_item(since, until, filter_intent, route, feedback))

    def dashboard(self):
        """Totals (JSON) and three matplotlib figures."""
        return dashboard_figures(self.store)


def build_review_app(store: ConversationStore, intents: list[str], extra_tabs=None, router=None) -> gr.Blocks:
    """The reviewers' app: "Review queue" and "Dashboard" tabs, "Try the bot" (the chat with
    its intent panel, API names prefixed ``try_``) when a ``router`` is given, plus
    ``extra_tabs(app)`` when given (the retrain and models tabs)."""
    handlers = ReviewHandlers(store, intents)
    with gr.Blocks(title="Supportbot review") as app, gr.Tabs():
        with gr.Tab("Review queue"):
            with gr.Row():
                since, until = gr.Textbox(label="From (YYYY-MM-DD)"), gr.Textbox(label="To (YYYY-MM-DD)")
                filter_intent = gr.Dropdown([""] + handlers.intents, label="Intent", value="")
                route = gr.Dropdown(ROUTES, label="Route", value="")
                feedback = gr.Dropdown(FEEDBACK, label="Feedback", value="")
                refresh = gr.Button("Apply filters")
            counts = gr.Markdown()
            with gr.Row():
                conversation = gr.Chatbot(label="Conversation (▶ = the turn under review)", height=380,
                                          allow_tags=False, sanitize_html=True, render_markdown=False,
                                          feedback_options=None)
                details = gr.JSON(label="Turn")
            with gr.Row():
                intent = gr.Dropdown(handlers.intents, value=None, allow_custom_value=True, filterable=True,
                                     label="Correct intent (type a new name to add one; "
                                           "empty on a fallback or handoff: approve = out of scope)")
                note = gr.Textbox(label="Note (optional)")
            reply = gr.Textbox(label="Reply the bot should have given", lines=5)
            with gr.Row():
                approve, relabel = gr.Button("Approve as is", variant="primary"), gr.Button("Save intent")
                rewrite, skip = gr.Button("Save intent and reply"), gr.Button("Skip")
                undo = gr.Button("Undo my last review")
            status = gr.Markdown()
            turn_id = gr.Number(visible=False, precision=0)
            action = gr.Textbox(visible=False)
            api = gr.Button(visible=False)
        with gr.Tab("Dashboard"):
            show = gr.Button("Refresh dashboard")
            totals = gr.JSON(label="Totals")
            per_day, intents_plot, corrected = gr.Plot(), gr.Plot(), gr.Plot()
        if router is not None:
            with gr.Tab("Try the bot"):
                chat_panel(app, router, internals=True, api_prefix="try_")
        if extra_tabs is not None:
            extra_tabs(app)
        filters = [since, until, filter_intent, route, feedback]
        shown = [counts, details, conversation, intent, reply, note]
        details.change(lambda d: (d or {}).get("turn_id"), details, turn_id, api_name=False)
        refresh.click(handlers.next_item, filters, shown, api_name="next_item")
        app.load(handlers.next_item, filters, shown, api_name=False)
        inputs = [turn_id, action, intent, reply, note, *filters]
        for button, name in ((approve, "approve"), (relabel, "relabel"), (rewrite, "rewrite"), (skip, "skip")):
            button.click(lambda n=name: n, None, action, api_name=False).then(
                handlers.act, inputs, [status, *shown], api_name=False)
        api.click(handlers.act, [turn_id, action, intent, reply, note, *filters], [status, *shown],
                  api_name="review_action")
        undo.click(handlers.undo, filters, [status, *shown], api_name="undo_review")
        show.click(handlers.dashboard, None, [totals, per_day, intents_plot, corrected], api_name="dashboard")
    return app

