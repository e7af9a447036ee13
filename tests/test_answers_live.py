"""Issue 14, live: on the real server with tiny models (a replies version trained on retrieval-
augmented prompts, with its answer store), a reviewer rewrites a reply on the review page and the
same request in a new conversation is answered from that rewrite at once, without a retrain; the
turn record names the review. Undoing the review withdraws the answer again."""

from __future__ import annotations

import json

import pytest
from helpers import converse, running_server, write_csv

from bot.records import Reason
from bot.registry import Registry
from bot.settings import load_settings
from bot.store import ConversationStore
from test_review_flow import Form
from test_server import REVIEWER
from ui.server import hash_password

TEXT = "invoice my order"
REWRITE = "You'll find the invoice under Orders > Invoices on {{Website URL}}."


@pytest.fixture()
def rag_home(tiny_home, tiny_lm_dir, tiny_encoder_dir, tmp_path):
    """``tiny_home`` with a retrieval-augmented replies version (v2, its intents the tiny
    classifier's) in production."""
    from training.replies import ReplyTrainConfig, train_replies

    data = write_csv(tmp_path / "replies.csv", ["text", "intent", "reply"],
                     [(f"please {intent} order {i}", intent, f"We can {intent} it: step {i}.")
                      for intent in ("cancel", "invoice", "refund", "track") for i in range(10)])
    settings = load_settings(home=tiny_home, reply_base=str(tiny_lm_dir), answers={"encoder": str(tiny_encoder_dir)})
    train_replies(str(data), settings, ReplyTrainConfig(max_steps=1, batch_size=2, max_length=128, lora_r=4,
                                                        lora_alpha=8, validation_examples=0),
                  output=tiny_home / "models" / "replies" / "v2")
    Registry(tiny_home).register("replies", "v2")
    Registry(tiny_home).promote("replies", "v2", "test")
    return tiny_home


def test_a_rewrite_on_the_review_page_answers_the_next_customer_at_once(rag_home):
    from gradio_client import Client

    reviewers = json.dumps({REVIEWER[0]: hash_password(REVIEWER[1])})
    with running_server(rag_home, rag_home / "server.log", SUPPORTBOT_REVIEWERS=reviewers) as (url, _):
        _, (first_info,) = converse(url, [TEXT])
        with ConversationStore(rag_home / "conversations.db") as store:
            first = store.turn(first_info["turn_id"])
        served = first.decision.code in {Reason.APPROVED_ANSWER, Reason.NO_CLOSE_ANSWER}  # an approved answer as it is
        assert first.decision.route == "answer" and first.generator_version == (None if served else "v2")
        assert first.retrieved and all(ref.source == "training" for ref in first.retrieved)
        assert first.answers_version.startswith("v2+")

        form = Form(Client(url + "review/", auth=REVIEWER, verbose=False))
        form.go_to(first.id)
        form.act("rewrite", reply=REWRITE)
        assert "saved" in form.status.lower()

        _, (second_info,) = converse(url, [TEXT])               # a new conversation, no retrain
        with ConversationStore(rag_home / "conversations.db") as store:
            second = store.turn(second_info["turn_id"])
            (review,) = [r for r in store.reviews_of(first.id) if r["action"] == "rewrite"]
        assert second.decision.code == Reason.APPROVED_ANSWER
        assert second.reply == "You'll find the invoice under Orders > Invoices on https://acme-outfitters.example."
        assert (second.retrieved[0].source, second.retrieved[0].review_id) == ("review", review["id"])
        assert f"r{review['id']}" in second.decision.reason and second.answers_version != first.answers_version

        form.undo()                                             # withdrawn: answered without it again
        _, (third_info,) = converse(url, [TEXT])
        with ConversationStore(rag_home / "conversations.db") as store:
            third = store.turn(third_info["turn_id"])
        assert all(ref.source == "training" for ref in third.retrieved)
