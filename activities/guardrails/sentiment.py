"""Sentiment: a small lexicon scorer (valence sum, boosters, negation, caps and "!" emphasis).

The words and their weights are in ``data/lexicon_en.toml``; this module is only the arithmetic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

from activities.guardrails.datafiles import Entry, GuardrailDataError, read, validate
from activities.guardrails.normalise import normalise

LEXICON_FILE = "lexicon_en.toml"

_NEGATION_WINDOW = 3  # words: "not very happy" still flips, "not sure but the new view is great" doesn't
_NEGATION_SCALAR = -0.6  # "not great" is mildly negative, not the mirror image of "great"
_CAPS_BOOST = 1.3
_EXCLAMATION_STEP = 0.3
_COMPOUND_ALPHA = 10.0  # larger = slower saturation towards +-1

_TOKEN_RE = re.compile(
    r"[A-Za-z]+(?:'[A-Za-z]+)?|[!?.,;:]|[\U0001F300-\U0001FAFF\u2600-\u27BF]",
)
_SENTENCE_BREAKS = frozenset(".,;:!?")
_NEVER_BEEN_SO = re.compile(r".*\bnever\s+(?:been|felt|seen)\s+(?:so|this|more|such)$")
_SHOUT_WORD = re.compile(r"[A-Za-z]{2,}")


class _Words(Entry):
    negators: list[str]
    acronyms: list[str]
    feature_words: list[str]


class _LexiconFile(Entry):
    valence: dict[str, float]
    boosters: dict[str, float]
    words: _Words


@dataclass(frozen=True)
class Lexicon:
    """Word valences (about -3.5..3.5), booster multipliers, negators and all-caps initialisms."""

    valence: dict[str, float]
    boosters: dict[str, float]
    negators: frozenset[str]
    acronyms: frozenset[str]
    # Negative words that also name a part of the product ("the trash"): see lexicon_en.toml.
    feature_words: frozenset[str] = frozenset()


@cache
def lexicon() -> Lexicon:
    """The English lexicon, read and checked once."""
    data = validate(_LexiconFile, read(LEXICON_FILE), where=LEXICON_FILE)
    if "so" not in data.boosters:  # "never been so frustrated" is emphasised with the "so" booster
        raise GuardrailDataError(f'{LEXICON_FILE}: [boosters] must define "so"')
    return Lexicon(
        valence=data.valence,
        boosters=data.boosters,
        negators=frozenset(data.words.negators),
        acronyms=frozenset(data.words.acronyms),
        feature_words=frozenset(data.words.feature_words),
    )


def _lookback(tokens: list[str], j: int, n: int) -> list[str]:
    """Up to n lower-cased tokens ending at index j, nearest first, stopping at punctuation."""
    out: list[str] = []
    while j >= 0 and len(out) < n and tokens[j] not in _SENTENCE_BREAKS:
        out.append(tokens[j].lower())
        j -= 1
    return out


_FEATURE_BEFORE = frozenset({"the", "from", "to", "into", "in", "my", "our"})
_FEATURE_AFTER = frozenset({"bin", "can", "folder"})


def _names_the_feature(tokens: list[str], i: int) -> bool:
    """ "where is the trash bin", "restore from trash": the product's Trash, not "your app is trash"."""
    before = tokens[i - 1].lower() if i > 0 else ""
    after = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
    return before in _FEATURE_BEFORE or after in _FEATURE_AFTER


def score_sentiment(text: str) -> float:
    """Score text from -1.0 (very negative) to 1.0 (very positive) with a small lexicon."""
    lex = lexicon()
    text = normalise(text)
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(text)]
    total = 0.0
    for i, raw in enumerate(tokens):
        word = raw.lower()
        valence = lex.valence.get(word)
        if not valence:
            continue
        if word in lex.feature_words and _names_the_feature(tokens, i):
            continue
        if not raw[0].isalpha():
            # Emoji carry their own tone; "dont know why 😭" must not flip the crying face.
            total += valence
            continue
        # Look back over the same clause only: punctuation ends the scope of boosters/negation.
        window: list[str] = []
        j = i - 1
        while j >= 0 and len(window) < _NEGATION_WINDOW and tokens[j] not in _SENTENCE_BREAKS:
            window.append(tokens[j].lower())
            j -= 1
        if window and window[0] in lex.boosters:
            valence *= lex.boosters[window[0]]
            # A second booster ("really very") adds half its effect.
            if len(window) > 1 and window[1] in lex.boosters:
                valence *= 1 + (lex.boosters[window[1]] - 1) / 2
        if _NEVER_BEEN_SO.match(" ".join(reversed(window + _lookback(tokens, j, 2)))):
            # "never been so frustrated" is emphasis, not negation.
            valence *= lex.boosters["so"]
        elif any(w in lex.negators or w.endswith("n't") for w in window):
            valence *= _NEGATION_SCALAR
        if len(raw) > 1 and raw.isupper() and raw not in lex.acronyms:
            valence *= _CAPS_BOOST
        total += valence
    if total:
        # Exclamation marks (up to four) and repeated question marks amplify whatever was said.
        emphasis = _EXCLAMATION_STEP * min(text.count("!"), 4)
        if "??" in text:
            emphasis += _EXCLAMATION_STEP
        total += math.copysign(emphasis, total)
    compound = total / math.sqrt(total * total + _COMPOUND_ALPHA)
    return round(max(-1.0, min(1.0, compound)), 4)


def is_shouting(text: str) -> bool:
    """Mostly capitals, initialisms aside."""
    words = _SHOUT_WORD.findall(text)
    caps = [w for w in words if w.isupper() and w not in lexicon().acronyms]
    # Three shouted words minimum so "URGENT:" or "PLEASE help" alone is not a tantrum.
    return len(caps) >= 3 and len(caps) >= 0.6 * len(words)
