"""The routing policy: every route and its reason."""

import pytest

from bot.records import Prediction
from bot.router import decide
from bot.settings import RouterConfig

CONFIG = RouterConfig(templates={"newsletter_subscription": "Subscribe at {{Website URL}}."},
                      handoff_intents=["contact_human_agent"])
THRESHOLD = 0.5


def predict(intent="track_order", oos=0.1, confidence=0.9):
    return Prediction(intent, confidence, [(intent, confidence)], oos)


@pytest.mark.parametrize("text,prediction,fallbacks,route,reason", [
    ("", None, 0, "rephrase", "empty message"),
    ("where is my parcel", predict(), 0, "answer", "intent 'track_order' with confidence 0.90"),
    ("tell me a joke", predict(oos=0.8), 0, "rephrase", "out of scope: score 0.800 > threshold 0.500"),
    ("tell me a joke", predict(oos=0.8), 1, "handoff", "out of scope again (2 fallbacks in a row)"),
    ("I want to talk to a human", predict(), 0, "handoff", "customer asked for a person"),
    ("agent please", predict(oos=0.9), 0, "handoff", "customer asked for a person"),
    ("contact support", predict("contact_human_agent"), 0, "handoff",
     "intent 'contact_human_agent' is handed off by configuration"),
    ("newsletter", predict("newsletter_subscription"), 0, "template",
     "intent 'newsletter_subscription' has a fixed reply"),
])
def test_routes(text, prediction, fallbacks, route, reason):
    decision = decide(text, prediction, THRESHOLD, fallbacks, CONFIG)
    assert (decision.route, decision.reason) == (route, reason)
    assert decision.threshold == THRESHOLD


def test_rephrase_limit_is_configurable():
    config = RouterConfig(rephrase_limit=3)
    assert decide("joke", predict(oos=0.9), 0.5, 1, config).route == "rephrase"
    assert decide("joke", predict(oos=0.9), 0.5, 2, config).route == "handoff"
