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
