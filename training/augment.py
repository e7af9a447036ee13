"""Noisy copies of training utterances, so the classifier meets customers' writing in training.

Real customers write in lower case, without punctuation, with typos and contractions, drop
words, and wrap a request in a greeting or a second sentence; data sets such as Bitext are
cleaner and template-like. :func:`noisy` applies one to three of these edits at random. The
edits are character- and word-level perturbations of the kind studied as natural noise by
Belinkov & Bisk ("Synthetic and Natural Noise Both Break Neural Machine Translation", ICLR 2018)
and used as easy data augmentation by Wei & Zou ("EDA", EMNLP 2019). They are applied to every
kind of row alike (in-scope, small talk, out-of-scope), so noise itself never signals a class.
"""

from __future__ import annotations

import random
import re
import string

_CONTRACTIONS = {
    "i am": "i'm", "do not": "don't", "does not": "doesn't", "did not": "didn't", "can not": "can't",
    "cannot": "can't", "is not": "isn't", "it is": "it's", "i have": "i've", "i would": "i'd",
    "have not": "haven't", "was not": "wasn't", "what is": "what's", "where is": "where's",
    "you are": "you're", "i will": "i'll", "could not": "couldn't", "would like": "'d like",
}
_SHORT = {"please": "pls", "you": "u", "your": "ur", "thanks": "thx", "are": "r", "because": "cuz",
          "tomorrow": "tmrw", "message": "msg", "information": "info", "account": "acct"}
_OPENERS = ("hi", "hello", "hey", "hi there,", "good morning,", "hello,", "excuse me,", "quick question:",
            "sorry to bother you but", "ok so", "um")
_CLOSERS = ("thanks", "thank you", "thx", "pls", "please", "asap", "?", "??", "!", "thanks in advance",
            "help", "cheers")


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop one
        return word[:i] + word[i + 1:]
    if kind == 2:  # double one
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]  # hit a wrong key


def _edits(rng: random.Random):
    def lower(t):
        return t.lower()

    def no_punctuation(t):
        return re.sub(r"[^\w\s'{}]", "", t)

    def typos(t):
        words = t.split()
        for _ in range(rng.randint(1, 2)):
            if words:
                j = rng.randrange(len(words))
                words[j] = _typo(words[j], rng)
        return " ".join(words)

    def drop_word(t):
        words = t.split()
        if len(words) > 4:
            del words[rng.randrange(len(words))]
        return " ".join(words)

    def contract(t):
        low = t.lower()
        for long, short in _CONTRACTIONS.items():
            low = re.sub(rf"\b{long}\b", short, low)
        return low

    def texting(t):
        return " ".join(_SHORT.get(w.lower(), w) if rng.random() < 0.7 else w for w in t.split())

    def wrap(t):
        if rng.random() < 0.5:
            return f"{rng.choice(_OPENERS)} {t}"
        return f"{t} {rng.choice(_CLOSERS)}"

    return (lower, no_punctuation, typos, drop_word, contract, texting, wrap)


def noisy(text: str, rng: random.Random) -> str:
    """A noisy variant of ``text``: one to three of lower-casing, dropped punctuation, typos,
    a dropped word, contractions, texting abbreviations, a greeting or closing added.

    Args:
        text: an utterance.
        rng: the random source (seeded by the caller, so runs repeat).

    Returns:
        The variant; never empty (``text`` itself when every edit emptied it).
    """
    edits = _edits(rng)
    out = text
    for edit in rng.sample(edits, rng.randint(1, 3)):
        out = edit(out)
    out = " ".join(out.split())
    return out or text


# Concrete details customers add to a request. Deliberately generic (ids, dates, amounts, names,
# e-mail addresses, everyday goods): they must not hint at any one intent.
_GOODS = ("a pair of jeans", "the desk chair", "a set of plates", "the wireless earbuds", "two duvet covers",
          "a backpack", "the rain boots", "a frying pan", "the smartwatch", "three candles", "a yoga mat",
          "the printer cartridges", "a baby stroller", "the leather belt", "a board game", "the curtains",
          "a waffle iron", "the bike helmet", "some tights", "a picture frame", "the hall mirror", "a rug")
_NAMES = ("Maria", "John Smith", "Ahmed", "Li Wei", "Sophie", "Carlos Diaz", "Emma Brown", "Raj")
_DAYS = ("on Monday", "yesterday", "last week", "two days ago", "on the 3rd", "this morning", "in March",
         "10 days ago", "on Friday", "last month")
_DETAILS = (
    "my order number is {id}.", "order #{id}", "it's order {id}.", "ref {id}", "(order {id})",
    "I ordered {goods} {day}.", "I bought {goods} {day}.", "it's about {goods}.", "this is for {goods}.",
    "my email is {email}.", "I paid {amount}.", "it was {amount}.", "my name is {name}.",
    "I've been a customer for years.", "I already wrote to you {day}.", "sorry for my english.",
    "I'm in a bit of a hurry.", "my account is under {email}.", "the total was {amount}.",
)
_GENERIC_OBJECT = re.compile(r"\b(?:an? |the |some |my )?(?:items?|products?|articles?)\b", re.IGNORECASE)
_LONG_ID = re.compile(r"\b\d{9,}\b")


def _detail_values(rng: random.Random) -> dict[str, str]:
    number = str(rng.randint(1000, 99999))
    return {
        "id": rng.choice((number, f"A-{number}", f"{rng.randint(10, 99)}-{number}", number[:4])),
        "goods": rng.choice(_GOODS), "day": rng.choice(_DAYS), "name": rng.choice(_NAMES),
        "email": f"{rng.choice(_NAMES).split()[0].lower()}{rng.randint(1, 99)}@{rng.choice(('gmail.com', 'web.de', 'outlook.com', 'mail.com'))}",
        "amount": rng.choice((f"${rng.randint(5, 300)}.{rng.randint(0, 99):02d}", f"{rng.randint(5, 300)} euros",
                              f"£{rng.randint(5, 300)}")),
    }


def with_details(text: str, rng: random.Random) -> str:
    """``text`` with concrete details of the kind customers add, for in-scope training rows.

    Template data sets (Bitext) name "the item" and 15-digit ids, while customers name the
    goods, short order numbers, dates, amounts, e-mail addresses, and add a sentence of
    context; a classifier trained on templates alone learns that concrete content means out of
    scope. One or two of: a long id replaced by a short one, a generic object ("the item")
    replaced by named goods, a detail sentence added before or after. The details are
    generic, so they never signal an intent.

    Args:
        text: an in-scope utterance.
        rng: the random source (seeded by the caller).

    Returns:
        The variant (never empty).
    """
    values = _detail_values(rng)
    out = _LONG_ID.sub(values["id"], text)
    if _GENERIC_OBJECT.search(out) and rng.random() < 0.6:
        out = _GENERIC_OBJECT.sub(values["goods"], out, count=1)
    if out == text or rng.random() < 0.7:
        detail = rng.choice(_DETAILS).format(**values)
        out = f"{detail} {out}" if rng.random() < 0.4 else f"{out.rstrip()} {detail}"
    return " ".join(out.split()) or text
