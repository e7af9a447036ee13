"""One web server for everything: the public chat at ``/`` and the reviewers' pages at
``/review/`` behind a login (Gradio apps mounted on one FastAPI app, served by uvicorn).

Gradio exposes every event handler of a Blocks app as an API endpoint; mounting the reviewers'
app with ``auth`` puts its page *and* its API behind the login, so no review, retrain or model
action can be called anonymously. Passwords are checked against argon2 hashes
(https://argon2-cffi.readthedocs.io/); only hashes are configured (``reviewers`` setting).
"""

from __future__ import annotations

import logging

import gradio as gr
from fastapi import FastAPI

log = logging.getLogger(__name__)


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


def build_server(chat: gr.Blocks, review: gr.Blocks | None, reviewers: dict[str, str]) -> FastAPI:
    """The FastAPI app: ``review`` at ``/review`` (login required) when given and reviewers are
    configured, ``chat`` at ``/``."""
    app = FastAPI()
    if review is not None and reviewers:
        app = gr.mount_gradio_app(app, review.queue(), "/review", auth=password_checker(reviewers),
                                  auth_message="Reviewers only: log in.")
    elif review is not None:
        log.warning("review pages disabled: no reviewers configured (setting 'reviewers')")
    # No Gradio limit on the chat's events (its default is 1 at a time per event): the router's
    # queue bounds generation and shows the customer's place; nothing in Gradio's queue times out.
    return gr.mount_gradio_app(app, chat.queue(default_concurrency_limit=None), "/")
