"""One web server for everything: the public chat at ``/``, the REST channel at ``/api/v1/``
(:mod:`ui.api`), the reviewers' pages at ``/review/`` and the agents' inbox at ``/inbox/``, both
behind a login (Gradio apps mounted on one FastAPI app, served by uvicorn).

Gradio exposes every event handler of a Blocks app as an API endpoint; mounting the reviewers'
and agents' apps with ``auth`` puts their pages *and* their APIs behind the login, so no review,
retrain, model or agent action can be called anonymously. Each page admits the staff roles of
:data:`bot.settings.ROLE_PAGES`. Passwords are checked against argon2 hashes
(https://argon2-cffi.readthedocs.io/); only hashes are configured (``staff`` and ``reviewers``
settings).
"""

from __future__ import annotations

import logging

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from gradio.route_utils import FnIndexInferError

log = logging.getLogger(__name__)

_FUNCTION_ROUTES = ("/queue/join", "/api/predict", "/run/predict")
"""Gradio routes that look an event up by ``fn_index`` (a ``KeyError`` there: no such index)."""


async def _unknown_function(request: Request, exc: Exception) -> JSONResponse:
    """A clean 404 with one log line for a call to a Gradio function that does not exist (an
    unknown API name, ``FnIndexInferError``, or an unknown ``fn_index``, ``KeyError``), where
    Gradio itself answers 500 and logs a traceback. Any other ``KeyError`` stays a logged 500."""
    if isinstance(exc, KeyError) and not request.url.path.endswith(_FUNCTION_ROUTES):
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)
    what = f"unknown function index {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
    log.warning("404 on %s: %s", request.url.path, what)
    return JSONResponse({"detail": what}, status_code=404)


APP_KWARGS = {"exception_handlers": {FnIndexInferError: _unknown_function, KeyError: _unknown_function}}
"""Passed to every mounted Gradio app (``mount_gradio_app(app_kwargs=...)``)."""


def password_checker(reviewers: dict[str, str]):
    """An ``auth`` callable for Gradio: True when ``password`` matches the user's argon2 hash."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = PasswordHasher()

    def check(username: str, password: str) -> bool:
        stored = reviewers.get(username)
        if stored is None:
            return False
        try:
            return hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    return check


def hash_password(password: str) -> str:
    """The argon2id hash to put in the ``reviewers`` setting for this password."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def build_server(chat: gr.Blocks, review: gr.Blocks | None, reviewers: dict[str, str],
                 inbox: gr.Blocks | None = None, agents: dict[str, str] | None = None,
                 api: FastAPI | None = None) -> FastAPI:
    """The FastAPI app: ``api`` at ``/api/v1`` when given, ``review`` at ``/review`` and
    ``inbox`` at ``/inbox`` (login required) when given and someone may log in to them, ``chat``
    at ``/``.

    Args:
        reviewers: name -> argon2 hash of those who may log in to the review pages.
        agents: name -> argon2 hash of those who may log in to the inbox.
    """
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    if api is not None:
        app.mount("/api/v1", api)
    for blocks, path, logins, who in ((review, "/review", reviewers, "Reviewers"), (inbox, "/inbox", agents, "Agents")):
        if blocks is not None and logins:
            app = gr.mount_gradio_app(app, blocks.queue(), path, auth=password_checker(logins),
                                      auth_message=f"{who} only: log in.", app_kwargs=dict(APP_KWARGS))
        elif blocks is not None:
            log.warning("%s disabled: no %s configured (setting 'staff')", path, who.lower())
    # No Gradio limit on the chat's events (its default is 1 at a time per event): the router's
    # queue bounds generation and shows the customer's place; nothing in Gradio's queue times out.
    return gr.mount_gradio_app(app, chat.queue(default_concurrency_limit=None), "/", app_kwargs=dict(APP_KWARGS))
