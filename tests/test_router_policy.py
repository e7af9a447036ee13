"""The routing policy: every route and its reason."""

import pytest

from bot.records import Decision, Prediction, Turn
from bot.router import decide, follow_up
from bot.settings import RouterConfig
from bot.text import for_classifier

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
    ("r u a real person?", predict("smalltalk_bot"), 0, "smalltalk", "small talk 'smalltalk_bot' with confidence 0.90"),
    ("are you a real person? I want to speak to a real person", predict("smalltalk_bot"), 0, "smalltalk",
     "small talk 'smalltalk_bot' with confidence 0.90"),
    ("can I speak to a real person", predict("smalltalk_bot"), 0, "handoff", "customer asked for a person"),
    ("contact support", predict("contact_human_agent"), 0, "handoff",
     "intent 'contact_human_agent' is handed off by configuration"),
    ("newsletter", predict("newsletter_subscription"), 0, "template",
     "intent 'newsletter_subscription' has a fixed reply"),
    ("hi", predict("smalltalk_greeting"), 1, "smalltalk", "small talk 'smalltalk_greeting' with confidence 0.90"),
    ("thanks!", predict("smalltalk_thanks"), 5, "smalltalk", "small talk 'smalltalk_thanks' with confidence 0.90"),
    ("good morning", predict("smalltalk_greeting", oos=0.6, confidence=0.55), 0, "smalltalk",
     "small talk 'smalltalk_greeting' with confidence 0.55"),
    ("wheres my stuff", predict("smalltalk_thanks", oos=0.7, confidence=0.3), 0, "rephrase",
     "out of scope: score 0.700 > threshold 0.500"),
    ("what's the weather", Prediction("track_order", 0.01, [], 0.99, oos_class=True), 1, "fallback",
     "out of scope: the out-of-scope class wins (score 0.990 > 0.500)"),
])
def test_routes(text, prediction, fallbacks, route, reason):
    decision = decide(text, prediction, THRESHOLD, fallbacks, CONFIG)
    assert (decision.route, decision.reason) == (route, reason)
    assert decision.threshold == THRESHOLD


@pytest.mark.parametrize("text", ["???", "...", ":-)", "x" * 2000, "AAAA!!", "- - -"])
def test_a_message_without_words_is_asked_to_rephrase_whatever_the_classifier_says(text):
    """Issue 13: "x" * 2500 and "😡😡😡" were small talk 'yes' with confidence 0.83 (the classifier
    read both as one [UNK]); "???" was small talk 'no'."""
    for prediction in (predict("smalltalk_affirm", oos=0.2, confidence=0.83), predict(), predict(oos=0.9)):
        decision = decide(text, prediction, THRESHOLD, 0, CONFIG)
        assert (decision.route, decision.code, decision.reason) == ("rephrase", "no_words", "no words to classify")


@pytest.mark.parametrize("text,intent,route", [
    ("👍", "smalltalk_affirm", "smalltalk"),   # an emoji is named in words: it counts
    ("k", "smalltalk_affirm", "smalltalk"),    # one letter is a word (the built-in small talk has "k", "y", "n")
    ("12345", "track_order", "answer"),        # a number is something to classify (an order number)
    ("hmm", "smalltalk_other", "smalltalk"),
    ("¿Dónde está mi pedido?", "track_order", "answer"),
])
def test_emoji_numbers_and_short_words_are_classified(text, intent, route):
    assert decide(text, predict(intent), THRESHOLD, 0, CONFIG).route == route


def test_emoji_are_named_in_words_for_the_classifier():
    assert for_classifier("thanks 🙏") == "thanks folded hands"
    assert for_classifier("😡😡😡") == "enraged face enraged face enraged face"
    assert for_classifier("ok👍🏽\nbye") == "ok thumbs up medium skin tone \nbye"
    assert for_classifier("snake_case  text :-)") == "snake_case  text :-)"   # no emoji: as it was


def test_rephrase_limit_is_configurable():
    config = RouterConfig(rephrase_limit=3)
    assert decide("joke", predict(oos=0.9), 0.5, 1, config).route == "rephrase"
    assert decide("joke", predict(oos=0.9), 0.5, 2, config).route == "handoff"


def answered(intent="cancel_order", index=1, reply="Sure, which order?"):
    return Turn("c", index, "I want to cancel my order", predict(intent),
                Decision("answer", f"intent '{intent}'", intent, THRESHOLD), reply, status="complete")


@pytest.mark.parametrize("message,previous,combined,entities,expected,text", [
    # "it's order 4471" alone is out of scope; with the previous message it is a cancellation
    (predict("track_order", oos=0.9), answered(), predict("cancel_order", oos=0.1), {"order_number": "4471"},
     ("cancel_order", "classified with the previous message (turn 1)"), ""),
    # the combined text is still unclear, but the message gives an order number: keep the intent
    (predict("track_order", oos=0.9), answered(), predict("track_order", oos=0.8), {"order_number": "4471"},
     ("cancel_order", "kept the intent of turn 1: the message gives order number"), ""),
    # an order number with no clear intent of its own (in scope, but no majority) takes the context
    (predict("track_order", oos=0.3, confidence=0.29), answered(), predict("cancel_order", oos=0.1),
     {"order_number": "4471"}, ("cancel_order", "classified with the previous message (turn 1)"), ""),
    # a clear request that gives an order number decides alone
    (predict("track_order", oos=0.1, confidence=0.9), answered(), predict("cancel_order", oos=0.1),
     {"order_number": "4471"}, None, "where is order 4471"),
    # a message that is nothing but an order number takes the context, however sure its own intent
    (predict("track_order", oos=0.1, confidence=0.9), answered(), predict("cancel_order", oos=0.1),
     {"order_number": "4471"}, ("cancel_order", "classified with the previous message (turn 1)"), "it's order #4471"),
    # a bare "yes" to an answer's question continues its topic
    (predict("smalltalk_affirm", oos=0.05), answered("delete_account"), predict("delete_account", oos=0.2), {},
     ("delete_account", "classified with the previous message (turn 1)"), ""),
    # an "ok" after an answer that asked nothing acknowledges it: small talk, never the answer again
    (predict("smalltalk_affirm", oos=0.05), answered(reply="Open Orders.\nClick Cancel. Is it done? Then you are set."),
     predict("cancel_order", oos=0.2), {}, None, ""),
    # unless it gives an order number
    (predict("smalltalk_affirm", oos=0.05), answered(reply="Open Orders and click Cancel."),
     predict("cancel_order", oos=0.2), {"order_number": "4471"},
     ("cancel_order", "classified with the previous message (turn 1)"), ""),
    # an off-topic message (the out-of-scope class wins) after an answer stays off topic...
    (Prediction("track_order", 0.01, [], 0.99, oos_class=True), answered(), predict("cancel_order", oos=0.1), {},
     None, ""),
    # ...unless it gives an entity
    (Prediction("track_order", 0.01, [], 0.99, oos_class=True), answered(), predict("cancel_order", oos=0.1),
     {"order_number": "4471"}, ("cancel_order", "classified with the previous message (turn 1)"), ""),
    # clear messages, and messages after a turn that was not answered, decide alone
    (predict("track_order", oos=0.1), answered(), predict("cancel_order"), {}, None, ""),
    (predict("track_order", oos=0.9), None, None, {"order_number": "4471"}, None, ""),
    (predict("track_order", oos=0.9), answered(), predict("smalltalk_thanks", oos=0.1), {}, None, ""),
    (predict("smalltalk_thanks", oos=0.05), answered(), predict("cancel_order", oos=0.1), {}, None, ""),
])
def test_follow_ups_are_decided_in_context(message, previous, combined, entities, expected, text):
    found = follow_up(message, THRESHOLD, previous, combined, entities, text)
    if expected is None:
        assert found is None
    else:
        prediction, context = found
        assert (prediction.intent, context) == expected
        assert decide("x", prediction, THRESHOLD, 0, CONFIG).route == "answer"


def test_small_talk_never_counts_as_a_fallback():
    config = RouterConfig(rephrase_limit=1)
    assert decide("hello", predict("smalltalk_greeting", oos=0.1), THRESHOLD, 3, config).route == "smalltalk"
