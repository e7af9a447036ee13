"""The reviewers' "Retrain" and "Models" tabs: start a retraining in the background and follow
it; list versions, promote, roll back. Added to the review app (behind its login) by
``build_review_app(..., extra_tabs=model_tabs(home))``.

API endpoints: ``/start_retrain`` (what), ``/retrain_status``, ``/models``, ``/promote`` (kind,
version), ``/rollback`` (kind).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from bot.errors import SupportbotError
from bot.manifest import read
from bot.registry import KINDS, Registry
from training import jobs

COLUMNS = ["kind", "version", "status", "created", "base model"]


class ModelHandlers:
    """Handlers bound to one home folder (registry, models, retrain jobs)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.registry = Registry(self.home)

    def start_retrain(self, what: str, request: gr.Request = None) -> dict:
        """Start ``supportbot retrain --what WHAT`` in the background, unless one is running."""
        jobs.recover(self.home)
        running = jobs.latest(self.home)
        if running is not None and jobs.status(running)["state"] == "running":
            raise gr.Error(f"retraining {running.name} is still running")
        if what not in ("intents", "replies", "both"):
            raise gr.Error("choose intents, replies or both")
        jobs.start_background(self.home, what)
        return {"started": what, "by": getattr(request, "username", None)}

    def retrain_status(self) -> tuple[dict, str]:
        """The newest job's status (without its log) and the end of its log."""
        folder = jobs.latest(self.home)
        if folder is None:
            return {"state": "no retraining yet"}, ""
        state = jobs.status(folder)
        return {k: v for k, v in state.items() if k != "log"}, state["log"]

    def table(self) -> list[list[str]]:
        """One row per version: kind, version, production/candidate, created, base model."""
        rows = []
        for kind in KINDS:
            state = self.registry.state(kind)
            for version in reversed(self.registry.versions(kind)):
                manifest = read(self.registry.folder(kind, version))
                status = "production" if version == state["production"] else (
                    "candidate" if version in state["candidates"] else "")
                rows.append([kind, version, status, manifest.created, manifest.base_model])
        return rows

    def promote(self, kind: str, version: str, request: gr.Request = None) -> list[list[str]]:
        """Put ``version`` in production; the chat switches before its next turn."""
        try:
            self.registry.promote(kind, version.strip(), "promoted on the models page",
                                  by=getattr(request, "username", None) or "page")
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        return self.table()

    def rollback(self, kind: str, request: gr.Request = None) -> list[list[str]]:
        """Put back the previous production version of ``kind``."""
        try:
            self.registry.rollback(kind, by=getattr(request, "username", None) or "page")
        except SupportbotError as exc:
            raise gr.Error(str(exc)) from None
        return self.table()


def model_tabs(home: Path):
    """A function that adds the two tabs inside a ``gr.Blocks`` context."""
    handlers = ModelHandlers(home)

    def add(app: gr.Blocks) -> None:
        with gr.Tab("Retrain"):
            gr.Markdown("Trains new versions from the reviewed corrections. A version is promoted only "
                        "if it does not regress on the frozen test split and the corrections slice; "
                        "the chat keeps serving meanwhile.")
            what = gr.Radio(["intents", "replies", "both"], value="intents", label="What to retrain")
            start, refresh = gr.Button("Start retraining", variant="primary"), gr.Button("Refresh status")
            started, state, log = gr.JSON(label="Started"), gr.JSON(label="Status"), gr.Textbox(label="Log", lines=12)
            start.click(handlers.start_retrain, what, started, api_name="start_retrain")
            refresh.click(handlers.retrain_status, None, [state, log], api_name="retrain_status")
            gr.Timer(3).tick(handlers.retrain_status, None, [state, log], api_name=False)
        with gr.Tab("Models"):
            table = gr.Dataframe(headers=COLUMNS, interactive=False, label="Versions")
            with gr.Row():
                kind = gr.Dropdown(list(KINDS), value="intents", label="Kind")
                version = gr.Textbox(label="Version")
                promote, rollback = gr.Button("Promote"), gr.Button("Roll back")
            show = gr.Button("Refresh")
            show.click(handlers.table, None, table, api_name="models")
            promote.click(handlers.promote, [kind, version], table, api_name="promote")
            rollback.click(handlers.rollback, kind, table, api_name="rollback")
            app.load(handlers.table, None, table, api_name=False)

    return add
