"""Deterministic guardrails around the LLM: an inbound gate and an outbound reply check.

``evaluate_inbound`` runs before the model sees a customer message and decides whether the
agent may answer or must hand the conversation to a human, with a reason code. ``check_output``
runs on the model's draft reply and blocks replies that quote prices, promise refunds, promise
features the knowledge base does not back, leak the system prompt, or carry a credential, a card
number, or an email address / phone number that is not the customer's.

Design notes (why it looks like this):

* Pure functions over ``str``: standard library + pydantic only, no I/O, no clock, no randomness,
  so the same input always gives the same decision. That makes them safe to call from Temporal
  activities (replays) and from the CLI, and makes every decision reproducible in an audit.
* Rules are compiled regexes over whole words and phrases, never substring tests: "hello" must not
  hit "hell", "issue" must not hit "sue", "re-run" must not hit "refund".
* A keyword that names a *board object* ("add a Price field", "sort by the Budget/Price column",
  "our Refund Requests board") is a how-to about the product, not a sales or billing request, so
  such hits are discarded (see ``_names_board_object``). TechCorp is a project-management suite and
  customers model their own business (prices, refunds, quotes) on boards all the time.
* A hit that sits under a negated request in the same clause ("I don't want a refund, I just need
  the export to work") is discarded for the request-style reasons (refund, pricing, legal threats,
  human request). Security hits are never discarded by negation: a false escalation is cheap, a
  missed account takeover is not.
* When several reasons fire, ``REASON_PRIORITY`` picks one; all hits stay in ``matched`` for audit.

Deliberate calls on ambiguous phrasing (kept in the labelled set as near-misses):

* "legal hold" alone is an export how-to (answer); only lawyers, litigation, subpoenas, GDPR or
  compliance attestations make a message ``legal``. "legal name on the invoice" is billing admin.
* "delete my account data under GDPR" / "delete all my personal data" is ``legal`` (a data-subject
  request with statutory deadlines); "how do I delete a board" is a how-to.
* "How do I request a refund?" is ``refund``: the agent must not improvise refund policy.
* Plain "how do I cancel my subscription" is a how-to; only a *threat* to leave ("we're switching
  to Asana unless...", "seriously considering cancelling") counts as negative sentiment.
* A polite ALL-CAPS message ("HI SUPPORT TEAM, HOW DO I ADD A MEMBER? THANKS") is not shouting:
  caps only count when the message is also negative or carries exclamation marks.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, model_validator

__all__ = [
    "NEGATIVE_SENTIMENT_THRESHOLD",
    "REASON_PRIORITY",
    "GuardrailDecision",
    "OutputCheck",
    "ReasonCode",
    "check_output",
    "evaluate_inbound",
    "score_sentiment",
]

ReasonCode = Literal["pricing", "refund", "legal", "human_request", "negative_sentiment", "security"]

# Highest first. Security beats everything because an attacker may be talking to the bot right now;
# legal carries liability and deadlines; refund moves money; pricing is a sales conversation; an
# explicit human request is honoured before the fuzzier sentiment signal, which is the weakest.
REASON_PRIORITY: tuple[ReasonCode, ...] = (
    "security",
    "legal",
    "refund",
    "pricing",
    "human_request",
    "negative_sentiment",
)

# Compound score strictly below this escalates. Tuned so that plain troubleshooting ("the sync is
# broken, can you help?") stays around -0.3 while angry or distressed messages land below -0.5.
NEGATIVE_SENTIMENT_THRESHOLD = -0.5


class GuardrailDecision(BaseModel):
    """Outcome of the pre-LLM gate for one inbound message."""

    action: Literal["escalate", "answer"]
    reason: ReasonCode | None = None
    sentiment: float = Field(ge=-1.0, le=1.0)
    matched: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reason_iff_escalate(self) -> GuardrailDecision:
        if (self.action == "escalate") != (self.reason is not None):
            raise ValueError("reason must be set exactly when action == 'escalate'")
        return self


class OutputCheck(BaseModel):
    """Outcome of the post-LLM check on a draft reply."""

    allowed: bool
    violations: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Text preparation
# --------------------------------------------------------------------------------------------

# Phones and mail clients send typographic quotes and dashes; the rules are written with ASCII.
_PUNCT_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
    }
)

_FLAGS = re.IGNORECASE | re.MULTILINE
# Rule patterns run on text lower-cased once per message: case-insensitive matching over large
# alternations is several times slower in ``re``, and every pattern is written in lower case.
_RULE_FLAGS = re.MULTILINE

# Where an email's new content ends: quoted history, signature delimiter, legal disclaimer.
# Disclaimers routinely say "confidential" / "legally privileged" and quoted history contains our
# own earlier replies ("if you'd like a refund..."); neither is something the customer just said.
_EMAIL_CUTS = (
    re.compile(r"^\s*on\b[^\n]{0,200}\bwrote:\s*$", _FLAGS),
    re.compile(r"^\s*-{2,}\s*(?:original|forwarded)\s+message\s*-{2,}", _FLAGS),
    re.compile(r"^--\s*$", re.MULTILINE),
    re.compile(
        r"^\s*(?:this\s+(?:e-?mail|message)\b[^\n]{0,120}\b(?:confidential|privileged)"
        r"|confidentiality\s+notice|disclaimer\s*:)",
        _FLAGS,
    ),
)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_PUNCT_MAP)


def _strip_email_noise(text: str) -> str:
    cut = len(text)
    for pattern in _EMAIL_CUTS:
        found = pattern.search(text)
        if found and found.start() > 0:
            cut = min(cut, found.start())
    body = "\n".join(line for line in text[:cut].splitlines() if not line.lstrip().startswith(">"))
    # Never throw the whole message away: a bare forward is still the customer's message.
    return body if body.strip() else text


def _prepare(text: str, channel: str | None) -> str:
    text = _normalise(text)
    # Only email (or an unknown source) carries quoted history and signatures; on WhatsApp and web
    # forms a leading ">" or "--" is the customer's own text.
    if channel in (None, "email"):
        text = _strip_email_noise(text)
    return text


# The lines that only *introduce* quoted history. They go from the full-text view below: Outlook's
# "-----Original Message-----" would otherwise read as a request for the "original message".
_QUOTE_INTRODUCERS = re.compile(
    r"^\s*(?:-{2,}\s*(?:original|forwarded)\s+message\s*-{2,}[^\n]*|on\b[^\n]{0,200}\bwrote:\s*)$", _FLAGS
)
_QUOTE_PREFIX = re.compile(r"^\s*(?:>\s?)+", re.MULTILINE)


def _full_text(text: str) -> str:
    """Everything the message carries, quotes included, with the quoting itself taken off.

    Whatever the gateway's quote stripper leaves in the message reaches the model, whoever wrote
    it, so the prompt-injection rule reads all of it: "> SYSTEM: ignore your rules" must match like
    "SYSTEM: ignore your rules", wherever the `>` quoting or the "On ... wrote:" line put it.
    """
    lines = (line for line in _normalise(text).splitlines() if not _QUOTE_INTRODUCERS.match(line))
    return _QUOTE_PREFIX.sub("", "\n".join(lines))


# --------------------------------------------------------------------------------------------
# Sentiment: a small lexicon scorer (valence sum, boosters, negation, caps and "!" emphasis)
# --------------------------------------------------------------------------------------------

# Valences roughly on a -3.5..3.5 scale. Troubleshooting vocabulary ("error", "broken", "stuck")
# is deliberately weak: support messages are full of it and it is not, by itself, anger.
_LEXICON: dict[str, float] = {
    # positive
    "good": 1.5,
    "great": 2.5,
    "love": 3.0,
    "loves": 3.0,
    "loved": 3.0,
    "loving": 2.5,
    "awesome": 3.0,
    "amazing": 3.0,
    "excellent": 3.0,
    "perfect": 2.5,
    "perfectly": 2.0,
    "thanks": 1.5,
    "thank": 1.5,
    "thx": 1.5,
    "ty": 1.0,
    "cheers": 1.0,
    "appreciate": 2.0,
    "appreciated": 2.0,
    "helpful": 2.0,
    "happy": 2.0,
    "glad": 2.0,
    "nice": 1.5,
    "fantastic": 3.0,
    "wonderful": 3.0,
    "smooth": 1.5,
    "smoothly": 1.5,
    "easy": 1.5,
    "brilliant": 3.0,
    "pleased": 2.0,
    "delighted": 3.0,
    "cool": 1.2,
    "best": 2.5,
    "works": 0.8,
    "worked": 0.8,
    "working": 0.3,
    "fixed": 1.0,
    "solved": 1.2,
    "resolved": 1.2,
    "enjoy": 2.0,
    "enjoying": 2.0,
    "lovely": 2.5,
    "kudos": 2.0,
    "superb": 3.0,
    "flawless": 3.0,
    "grateful": 2.0,
    "thankful": 2.0,
    "lifesaver": 2.5,
    "impressive": 2.5,
    "useful": 1.8,
    "intuitive": 1.8,
    "reliable": 1.5,
    "fast": 1.0,
    "quick": 0.8,
    "yay": 2.0,
    "fine": 0.5,
    "\U0001f44d": 1.5,
    "\U0001f642": 1.0,
    "\U0001f60a": 1.5,
    "\u2764": 2.0,
    "\U0001f64f": 1.0,
    # negative
    "bad": -2.0,
    "terrible": -3.0,
    "terribly": -2.5,
    "awful": -3.0,
    "horrible": -3.0,
    "worst": -3.2,
    "hate": -3.0,
    "hates": -3.0,
    "hated": -3.0,
    "angry": -3.0,
    "furious": -3.5,
    "livid": -3.5,
    "mad": -2.0,
    "upset": -2.2,
    "frustrated": -2.2,
    "frustrating": -2.2,
    "annoyed": -2.0,
    "annoying": -2.0,
    "disappointed": -2.2,
    "disappointing": -2.2,
    "useless": -3.0,
    "pathetic": -3.2,
    "ridiculous": -2.8,
    "unacceptable": -3.2,
    "garbage": -3.2,
    "trash": -3.0,
    "rubbish": -2.8,
    "crap": -3.0,
    "crappy": -3.0,
    "sucks": -3.0,
    "suck": -2.5,
    "incompetent": -3.2,
    "disgusted": -3.0,
    "disgusting": -3.0,
    "nightmare": -3.0,
    "joke": -1.0,
    "waste": -2.2,
    "wasted": -2.2,
    "broken": -0.8,
    "crash": -0.8,
    "crashes": -0.8,
    "crashing": -1.0,
    "crashed": -0.8,
    "fail": -0.6,
    "fails": -0.6,
    "failing": -0.8,
    "failed": -0.6,
    "error": -0.3,
    "errors": -0.3,
    "bug": -0.3,
    "buggy": -1.8,
    "slow": -0.8,
    "sluggish": -1.2,
    "confusing": -1.2,
    "confused": -0.8,
    "problem": -0.4,
    "worse": -2.2,
    "poor": -2.0,
    "unusable": -2.8,
    "lost": -0.6,
    "stuck": -0.5,
    "desperate": -2.5,
    "panic": -2.5,
    "panicking": -2.5,
    "scared": -2.0,
    "worried": -1.5,
    "sad": -2.0,
    "unhappy": -2.5,
    "miserable": -3.0,
    "shit": -3.0,
    "fuck": -3.5,
    "fucking": -3.5,
    "wtf": -3.0,
    "damn": -2.0,
    "hell": -1.5,
    "bullshit": -3.5,
    "stupid": -2.8,
    "dumb": -2.5,
    "hopeless": -3.0,
    "sick": -1.5,
    "tired": -1.0,
    "mess": -2.0,
    "disaster": -3.0,
    "ugh": -2.0,
    "argh": -2.0,
    "scam": -3.0,
    "ripoff": -3.0,
    "outrageous": -3.2,
    "shocking": -2.5,
    "appalling": -3.2,
    "ignored": -1.8,
    "ignoring": -1.8,
    "incompetence": -3.2,
    "shameful": -3.0,
    "fed": -0.5,
    "regret": -2.2,
    "regrets": -2.2,
    "regretting": -2.2,
    "ruined": -2.5,
    "ruin": -2.2,
    "ruins": -2.2,
    "horrendous": -3.2,
    "dreadful": -3.0,
    "atrocious": -3.2,
    "lousy": -2.5,
    "killing": -1.5,
    "unreliable": -1.8,
    "infuriating": -3.2,
    "infuriated": -3.2,
    "fuming": -3.2,
    "unprofessional": -2.5,
    "shoddy": -2.5,
    "laughable": -2.5,
    "breaks": -0.6,
    "\U0001f621": -3.0,
    "\U0001f620": -3.0,
    "\U0001f62d": -2.5,
    "\U0001f92c": -3.5,
    "\U0001f624": -2.5,
    "\U0001f61e": -2.0,
    "\U0001f62c": -1.0,
    "\U0001f622": -2.0,
}

# Multipliers applied to the next sentiment word.
_BOOSTERS: dict[str, float] = {
    "very": 1.4,
    "really": 1.3,
    "so": 1.3,
    "extremely": 1.6,
    "super": 1.4,
    "absolutely": 1.5,
    "totally": 1.4,
    "completely": 1.4,
    "incredibly": 1.5,
    "utterly": 1.6,
    "truly": 1.3,
    "seriously": 1.3,
    "insanely": 1.5,
    "beyond": 1.4,
    "such": 1.2,
    "pretty": 1.1,
    "most": 1.2,
    "too": 1.2,
    "slightly": 0.5,
    "somewhat": 0.6,
    "bit": 0.6,
    "kinda": 0.6,
    "little": 0.6,
    "fairly": 0.7,
}

_NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "without",
        "hardly",
        "nor",
        "neither",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "wasnt",
        "arent",
        "werent",
        "wont",
        "wouldnt",
        "couldnt",
        "shouldnt",
        "havent",
        "hasnt",
        "aint",
        "nothing",
        "nobody",
        "none",
    }
)
_NEGATION_WINDOW = 3  # words: "not very happy" still flips, "not sure but the new view is great" doesn't
_NEGATION_SCALAR = -0.6  # "not great" is mildly negative, not the mirror image of "great"
_CAPS_BOOST = 1.3
_EXCLAMATION_STEP = 0.3
_COMPOUND_ALPHA = 10.0  # larger = slower saturation towards +-1

# Common initialisms that are written in caps for reasons other than shouting.
_ACRONYMS = frozenset(
    {
        "API",
        "APIS",
        "SSO",
        "CSV",
        "PDF",
        "URL",
        "GDPR",
        "SAML",
        "SLA",
        "CEO",
        "CTO",
        "CFO",
        "IT",
        "HR",
        "ASAP",
        "FAQ",
        "UI",
        "UX",
        "PM",
        "EU",
        "US",
        "UK",
        "USD",
        "EUR",
        "GBP",
        "REST",
        "JSON",
        "XML",
        "HTTP",
        "HTTPS",
        "SMS",
        "OTP",
        "ID",
        "OK",
        "DPA",
        "SOC",
        "HIPAA",
        "CRM",
        "SDK",
        "IP",
        "DNS",
        "AI",
        "UTC",
        "CET",
        "PST",
        "EST",
        "BST",
        "IOS",
        "MFA",
        "SCIM",
        "LDAP",
        "VPN",
        "CC",
        "BCC",
        "FYI",
        "TBD",
        "ETA",
        "EOD",
        "AM",
        "QA",
        "MVP",
        "KPI",
        "OKR",
        "CSM",
        "VAT",
        "LLC",
        "INC",
        "LTD",
        "GMBH",
        "NDA",
        "DM",
        "PS",
        "RE",
        "FW",
        "FWD",
        "ICO",
        "CCPA",
    }
)

_TOKEN_RE = re.compile(
    r"[A-Za-z]+(?:'[A-Za-z]+)?|[!?.,;:]|[\U0001F300-\U0001FAFF\u2600-\u27BF]",
)
_SENTENCE_BREAKS = frozenset(".,;:!?")


_NEVER_BEEN_SO = re.compile(r".*\bnever\s+(?:been|felt|seen)\s+(?:so|this|more|such)$")


def _lookback(tokens: list[str], j: int, n: int) -> list[str]:
    """Up to n lower-cased tokens ending at index j, nearest first, stopping at punctuation."""
    out: list[str] = []
    while j >= 0 and len(out) < n and tokens[j] not in _SENTENCE_BREAKS:
        out.append(tokens[j].lower())
        j -= 1
    return out


def _is_negator(word: str) -> bool:
    return word in _NEGATORS or word.endswith("n't")


def score_sentiment(text: str) -> float:
    """Score text from -1.0 (very negative) to 1.0 (very positive) with a small lexicon."""
    text = _normalise(text)
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(text)]
    total = 0.0
    for i, raw in enumerate(tokens):
        word = raw.lower()
        valence = _LEXICON.get(word)
        if not valence:
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
        if window and window[0] in _BOOSTERS:
            valence *= _BOOSTERS[window[0]]
            # A second booster ("really very") adds half its effect.
            if len(window) > 1 and window[1] in _BOOSTERS:
                valence *= 1 + (_BOOSTERS[window[1]] - 1) / 2
        if _NEVER_BEEN_SO.match(" ".join(reversed(window + _lookback(tokens, j, 2)))):
            # "never been so frustrated" is emphasis, not negation.
            valence *= _BOOSTERS["so"]
        elif any(_is_negator(w) for w in window):
            valence *= _NEGATION_SCALAR
        if len(raw) > 1 and raw.isupper() and raw not in _ACRONYMS:
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


def _is_shouting(text: str) -> bool:
    words = re.findall(r"[A-Za-z]{2,}", text)
    caps = [w for w in words if w.isupper() and w not in _ACRONYMS]
    # Three shouted words minimum so "URGENT:" or "PLEASE help" alone is not a tantrum.
    return len(caps) >= 3 and len(caps) >= 0.6 * len(words)


# --------------------------------------------------------------------------------------------
# Inbound rules
# --------------------------------------------------------------------------------------------


def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in parts), _RULE_FLAGS)


# Nouns that turn a business word into the name of something on a board.
_BOARD_OBJECTS = frozenset(
    {
        "field",
        "fields",
        "column",
        "columns",
        "property",
        "properties",
        "formula",
        "formulas",
        "label",
        "labels",
        "tag",
        "tags",
        "board",
        "boards",
        "list",
        "lists",
        "template",
        "templates",
        "pipeline",
        "pipelines",
        "stage",
        "stages",
        "view",
        "views",
        "cell",
        "cells",
        "filter",
        "filters",
        "dashboard",
        "dashboards",
        "widget",
        "widgets",
        "checklist",
        "checklists",
        "status",
        "workflow",
        "workflows",
        "automation",
        "automations",
        "type",
    }
)
# Words between the keyword and the board noun must be part of a name ("Refund Requests board",
# "'Discount %' custom field"), never glue like "refund to my card" or "price for the plan".
_GLUE_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "to",
        "for",
        "of",
        "on",
        "in",
        "from",
        "my",
        "our",
        "your",
        "this",
        "that",
        "me",
        "us",
        "and",
        "or",
        "is",
        "are",
        "was",
        "be",
        "it",
        "i",
        "we",
        "you",
        "with",
        "by",
        "at",
    }
)
# Verbs saying the customer records the thing on their boards ("we track vendor discounts").
_TRACKING_VERBS = frozenset(
    {
        "track",
        "tracks",
        "tracking",
        "log",
        "logs",
        "logging",
        "record",
        "records",
        "recording",
        "manage",
        "manages",
        "managing",
        "calculate",
        "calculates",
        "calculating",
        "sum",
        "sums",
    }
)
_WORD_RE = re.compile(r"[a-z0-9%]+(?:'[a-z]+)?")


# "show prices in cards", "a discount on each card": the keyword is content placed on the board.
# Only used for pricing words ("refund on my card" is about a payment card).
_ON_BOARD_TAIL = re.compile(
    r"\s+(?:in|on|into|onto|inside)\s+(?:a\s+|the\s+|my\s+|our\s+|each\s+|every\s+)?"
    r"(?:cards?|boards?|lists?|columns?|fields?)\b",
)


def _names_board_object(text: str, start: int, end: int) -> bool:
    after = text[end:]
    # Stop at the end of the sentence: "Refund it. The board..." must not chain.
    after = re.split(r"[.!?;\n]", after, maxsplit=1)[0].lower()
    for count, word in enumerate(_WORD_RE.findall(after)):
        if word in _BOARD_OBJECTS:
            return True
        if count >= 2 or word in _GLUE_WORDS:
            break
    before = re.split(r"[.!?;\n]", text[:start])[-1].lower()
    return any(w in _TRACKING_VERBS for w in _WORD_RE.findall(before)[-2:])


# The tail of a clause that negates a request for whatever follows: "I don't want a ", "we are not
# asking for any ", "I'm not going to ". Anchored at the end so it must govern the hit itself.
_NEGATED_REQUEST_TAIL = re.compile(
    r"\b(?:don'?t|do\s+not|doesn'?t|does\s+not|didn'?t|did\s+not|not|never|no\s+longer|won'?t|"
    r"will\s+not|am\s+not|'m\s+not)\s+(?:\w+\s+)?"
    r"(?:want(?:ing)?|need(?:ing)?|ask(?:ing)?|looking|interested|request(?:ing)?|after|"
    r"expect(?:ing)?|seek(?:ing)?|going\s+to|gonna|planning\s+to|trying\s+to|threatening\s+to|"
    r"care\s+about|about)"
    r"(?:\s+[\w']+){0,4}\s*$",
)
# A clause ends at sentence punctuation, a comma, a spaced dash or a contrastive word, so that in
# "I don't want store credit, I want an actual refund" the negation does not reach "refund".
_CLAUSE_BREAK = re.compile(r"[.!?;:,\n]|\s-+\s|\b(?:but|just|only|instead|rather)\b")

# "Where do I enter a promo code" is a checkout how-to, not a discount negotiation.
_HOW_TO_TAIL = re.compile(
    r"\b(?:where|how)\s+(?:do|can|should|would|to)\s+(?:i|we|you)?\s*(?:\w+\s+)?"
    r"(?:enter|apply|add|use|redeem|put|type|paste|insert)(?:\s+[\w']+){0,3}\s*$",
)


def _clause_before(text: str, start: int) -> str:
    head = text[:start]
    pieces = _CLAUSE_BREAK.split(head)
    return pieces[-1] if pieces else head


def _negated(text: str, start: int) -> bool:
    return bool(_NEGATED_REQUEST_TAIL.search(_clause_before(text, start)))


def _how_to(text: str, start: int) -> bool:
    return bool(_HOW_TO_TAIL.search(_clause_before(text, start)))


@dataclass(frozen=True)
class _Rule:
    name: str
    reason: ReasonCode
    pattern: re.Pattern[str]
    board_object_guard: bool = False
    negation_guard: bool = False
    how_to_guard: bool = False
    on_board_guard: bool = False
    # Also read quoted history, signatures and disclaimers (see _full_text), not only the new words.
    reads_quoted_text: bool = False

    def first_hit(self, text: str) -> str | None:
        for found in self.pattern.finditer(text):
            if self.board_object_guard and _names_board_object(text, found.start(), found.end()):
                continue
            if self.negation_guard and _negated(text, found.start()):
                continue
            if self.how_to_guard and _how_to(text, found.start()):
                continue
            if self.on_board_guard and _ON_BOARD_TAIL.match(text, found.end()):
                continue
            return " ".join(found.group(0).split())
        return None


_CREDENTIAL = r"(?:api\s+)?(?:tokens?|keys?|secrets?|passwords?|credentials?|passwd)"
_OTHER_PARTY = (
    r"(?:another|other|a\s+different|some(?:one|body)\s+else'?s|"
    r"(?:my\s+|our\s+)?(?:ex-?colleague|ex-?co-?worker|former\s+(?:colleague|co-?worker|employee))'?s?)"
    r"\s+(?:customers?|compan(?:y|ies)|users?|clients?|tenants?|accounts?|workspaces?|"
    r"organi[sz]ations?|orgs?|people|members?|teams?)(?:'s|')?"
)
_PERSON = (
    r"(?:human(?:\s+being)?s?|person|people|agent|manager|supervisor|representative|rep|someone|"
    r"somebody|staff|member\s+of\s+(?:staff|(?:your|the)\s+team)|operator|employee|engineer|"
    r"specialist)"
)
_COMPETITORS = (
    r"(?:asana|trello|monday(?:\.com)?|jira|clickup|notion|basecamp|wrike|smartsheet|airtable|"
    r"linear|todoist|a\s+competitor|(?:an)?other\s+(?:tool|provider|vendor|product|app|platform|"
    r"solution|service))"
)

_RULES: tuple[_Rule, ...] = (
    # ---- security -------------------------------------------------------------------------
    _Rule(
        "security.account_takeover",
        "security",
        _rx(
            r"\bhack(?:ed|er|ers)\b",
            r"\bhack(?:ed)?\s+into\b",
            r"\b(?:account|acct|acount|workspace|login|admin)\b[^.!?]{0,40}?"
            r"\b(?:compromised|hijacked|breached|stolen)\b",
            r"\b(?:took|taken|take|taking)\s+over\s+(?:my|our|the)\s+(?:\w+\s+)?(?:account|acct|workspace)",
            r"\baccount\s+takeover\b",
            r"\b(?:account|acct|acount|workspace|profile|login)\s+(?:was|has\s+been|got|is|had\s+been)\s+"
            r"(?:\w+\s+)?(?:taken\s+over|hijacked|compromised|stolen|hacked)\b",
        ),
    ),
    _Rule(
        "security.unauthorized_access",
        "security",
        _rx(
            r"\bsome(?:one|body)\s+(?:else\s+)?(?:has\s+|is\s+|was\s+)?(?:trying\s+to\s+|tried\s+to\s+)?"
            r"(?:log(?:ged|ging)?|sign(?:ed|ing)?|get|got|getting|break|broke|breaking)\s+in(?:to)?\s+"
            r"(?:to\s+)?(?:my|our)\s+\w+",
            r"\b(?:unauthori[sz]ed|suspicious|unknown|unrecogni[sz]ed)\s+"
            r"(?:log-?ins?|sign-?ins?|access|sessions?|activity|api\s+calls)\b",
            r"\b(?:api\s+calls|log-?ins?|sessions?)\b[^.!?]{0,40}\b(?:ip|device|location)s?\s+"
            r"(?:we|i)\s+(?:don'?t|do\s+not|didn'?t)\s+recogni[sz]e",
            r"\b(?:password|e-?mail(?:\s+address)?|phone\s+number|2fa|two-factor|recovery\s+email)\s+"
            r"(?:was|has\s+been|got|were|had\s+been)\s+(?:changed|reset|updated|removed|disabled)\b"
            r"[^.!?]{0,60}?\b(?:i\s+(?:didn'?t|did\s+not|never)|not\s+(?:by\s+)?me|without\s+my)",
            r"\b(?:codes?|otps?|verification|password\s+resets?|log-?ins?)\b[^.!?]{0,60}?"
            r"\b(?:i|we)\s+(?:never|didn'?t|did\s+not)\s+(?:request|ask|trigger|initiat)",
            r"\b(?:recovery\s+e-?mail|e-?mail\s+address|phone\s+number|2fa\s+device)\s+(?:is|was)\s+"
            r"(?:not\s+mine|changed\s+to\s+(?:one|something)\s+i\s+don'?t)",
        ),
    ),
    _Rule(
        "security.leaked_credentials",
        "security",
        _rx(
            rf"\b{_CREDENTIAL}\b[^.!?]{{0,50}}?\b(?:leak(?:ed)?|exposed|public(?:ly)?|compromised|"
            r"committed|posted|published|pastebin|stolen|breach(?:ed)?)\b",
            rf"\b(?:leaked|exposed|committed|pushed|posted|published|pasted|copied)\s+(?:\w+\s+){{0,3}}"
            rf"{_CREDENTIAL}\b[^.!?]{{0,40}}\b(?:public|github|gitlab|online|internet|twitter|pastebin)",
        ),
    ),
    _Rule(
        "security.vulnerability",
        "security",
        _rx(
            r"\b(?:vulnerabilit(?:y|ies)|vuln|exploit(?:able|ed|s)?|xss|cross-site\s+scripting|csrf|"
            r"sql\s+injection|sqli|idor|rce|remote\s+code\s+execution|cve-\d{4}-\d+|bug\s+bounty|"
            r"responsible\s+disclosure|security\s+(?:researcher|flaw|hole|bug|issue|vulnerability|"
            r"loophole|weakness|incident))\b",
            r"\bmalware\b",
        ),
    ),
    _Rule(
        "security.phishing",
        "security",
        _rx(
            r"\bphish(?:ing|ed)?\b",
            # "got an email about a refund, is it legit?" is a phishing check, not a refund request.
            r"\b(?:e-?mail|message|text|sms|link)\b[\s\S]{0,100}?\bis\s+(?:this|it|that)\s+(?:legit|"
            r"legitimate|genuine|real|a\s+scam|safe)\b",
            r"\bsuspicious\s+(?:e-?mail|message|link|text|sms)\b",
        ),
    ),
    _Rule(
        "security.other_customers_data",
        "security",
        _rx(
            rf"\b(?:give|send|show|tell|share|forward|email|list)\s+(?:me|us)\b[^.!?]{{0,60}}?{_OTHER_PARTY}",
            r"\b(?:export|download|copy|see|view|access|read|open|get)\s+(?:the\s+|all\s+(?:the\s+)?)?"
            rf"(?:\w+\s+){{0,2}}(?:of|from|belonging\s+to|in|for)\s+{_OTHER_PARTY}",
            r"\b(?:give|send|show|share|export|forward|email|list|tell)\s+(?:me|us)\s+[^.!?]{0,80}?"
            r"\b(?:in|of|from|on|for)\s+(?:the|their|his|her)\s+(?:[\w&-]+\s+){1,3}"
            r"(?:workspace|account|organi[sz]ation|org|company|tenant)\b",
            r"\b(?:read|see|view|access|open)\s+(?:the\s+)?private\s+(?:boards?|cards?|data|workspaces?)\s+"
            r"(?:of|in|from)\s+(?:the\s+)?(?!my\b|our\b)\w+",
            r"\bsome(?:one|body)\s+else'?s\s+(?:data|boards?|cards?|workspace|account|files|"
            r"info(?:rmation)?|projects?)\b",
            r"\b(?:boards?|cards?|data)\s+(?:from|of|belonging\s+to)\s+(?:a|another)\s+"
            r"(?:company|customer|workspace|organi[sz]ation)\s+(?:i|we)\s+(?:don'?t|do\s+not)\s+belong",
            r"\b(?:look\s+up|find|give\s+me|send\s+me|tell\s+me|share|get\s+me)\s+(?:the\s+)?"
            r"(?:phone\s+numbers?|e-?mails?|e-?mail\s+address(?:es)?|home\s+address|"
            r"contact\s+(?:details|info))"
            r"\s+(?:of|for)\s+(?:the\s+)?(?:person|owner|user|admin|member|people|someone|whoever)\b",
            r"\b(?:previous|last|other|another|earlier)\s+(?:customers?|users?|persons?|people|callers?|"
            r"visitors?)(?:'s|')?\s+(?:you\s+(?:talked|spoke|chatted|helped|were\s+talking)|"
            r"conversations?|chats?|messages|tickets?)",
        ),
    ),
    _Rule(
        "security.prompt_injection",
        "security",
        _rx(
            r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+)?(?:of\s+)?"
            r"(?:the\s+|your\s+|my\s+|these\s+|those\s+)?(?:previous|prior|above|earlier|preceding|"
            r"original|initial|system|safety|existing)?\s*(?:instructions?|prompts?|rules|guidelines|"
            r"directives|guardrails|policies|programming|restrictions)\b",
            r"\bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been|'ve\s+been)\s+told|"
            r"(?:your|previous|prior)\b)",
            r"\bignore\s+(?:everything\s+|all\s+|the\s+(?:text\s+)?)?above\b\s*(?:and|,)\s*"
            r"(?:tell|give|show|print|list|reveal|output|write|say|answer|act|respond|send)",
            r"\b(?:reveal|show|print|output|repeat|display|dump|leak|tell\s+me|give\s+me|share|paste|"
            r"write\s+out)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?(?:your|ur)\s+(?:\w+\s+)?(?:prompt|"
            r"instructions|rules|guidelines|configuration|config|programming)\b",
            r"\bwhat(?:'s|s|\s+is|\s+are|\s+were)\s+(?:your|ur)\s+(?:\w+\s+)?(?:prompt|instructions)\b",
            r"\b(?:system|hidden|initial|original|secret|internal|developer)\s+prompts?\b",
            # Not "original/initial/internal message": customers follow up on their original message,
            # and quoted history (read by this rule) carries Outlook's "-----Original Message-----".
            r"\b(?:system|hidden|secret|developer)\s+messages?\b",
            r"\bnew\s+(?:role|persona|rules)\s*:",
            r"\b(?:ai|assistant|bot|model|chatbot)\s+(?:without|with\s+no)\s+(?:any\s+)?"
            r"(?:restrictions|rules|"
            r"limits|filters|guidelines)\b",
            r"\brepeat\s+(?:the\s+|all\s+)?(?:text|words|everything|messages?)\s+(?:above|before)\b",
            r"\byou\s+are\s+(?:now\s+)?dan\b",
            r"\b(?:dan|jailbreak|god)\s+mode\b",
            r"\bdo\s+anything\s+now\b",
            r"\bjailbr(?:eak|oken)(?:ed|ing)?\b",
            r"\b(?:enter|activate|switch\s+(?:in)?to|go\s+into)\s+(?:developer|god|admin|debug)\s+mode\b",
            r"\b(?:from\s+now\s+on|starting\s+now)\s*,?\s+(?:you|u)\s+(?:are|will|must|answer|act|respond|"
            r"reply)\b",
            r"\bpretend\s+(?:that\s+)?(?:you\s+are|you'?re|to\s+be)\b",
            r"\b(?:you|u)\s+(?:will\s+|must\s+|should\s+|now\s+)?act\s+as\b",
            r"\byou\s+are\s+now\s+(?:a|an|the|my|in|unrestricted|free)\b",
            r"^\s*(?:system|assistant|developer)\s*:\s*(?:new|you|ignore|override|disregard|from\s+now|"
            r"the\s+assistant|act)",
            r"\bnew\s+instructions\s*:",
        ),
        # An instruction planted in quoted history or a forward reaches the model all the same.
        reads_quoted_text=True,
    ),
    # ---- legal ----------------------------------------------------------------------------
    _Rule(
        "legal.counsel",
        "legal",
        _rx(
            r"\b(?:my|our|your)\s+(?:lawyers?|attorneys?|solicitors?|legal\s+counsel|counsel)\b",
            r"\b(?:talk|talking|speak|speaking|contact|contacting|call|calling|consult|consulting)\s+"
            r"(?:to\s+|with\s+)?(?:a|my|our)\s+(?:lawyer|attorney|solicitor)\b",
            r"\blawyer(?:s|ed)?\s+up\b",
            r"\b(?:as|their)\s+counsel\b",
            r"\besq\.?(?=\s|$)",
            r"\b(?:attorneys?|lawyers?|solicitors?)\s+(?:will|is|are|has|have|says?|said|advised)\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "legal.litigation",
        "legal",
        _rx(
            r"\b(?:law\s*suits?|litigation|litigate|legal\s+(?:action|proceedings|remedies|steps|claims?)|"
            r"court\s+(?:case|order)|"
            r"small\s+claims|cease\s+and\s+desist|subpoenas?|class\s+action|breach\s+of\s+contract|"
            r"formal\s+notice|legal\s+notice)\b",
            r"\b(?:take|taking|drag|dragging|see)\s+(?:you|u|techcorp|them|this|it|your\s+company)\s+"
            r"(?:guys\s+)?to\s+court\b",
            r"\b(?:sued|suing)\b",
            r"\bsue\s+(?:you|u|techcorp|your|them|the\s+company|for)\b",
            r"\b(?:will|'ll|gonna|going\s+to|want\s+to|plan\s+to|planning\s+to|intend\s+to|threaten\s+to|"
            r"right\s+to|could|might|would|shall)\s+sue\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "legal.privacy_request",
        "legal",
        _rx(
            r"\b(?:gdpr|ccpa|cpra|lgpd|pipeda)\b",
            r"\bright\s+to\s+(?:be\s+forgotten|erasure|deletion)\b",
            r"\bdata\s+subject\b",
            r"\bdsars?\b",
            r"\berasure\s+request",
            r"\bdata\s+protection\s+(?:authority|officer|regulator|commissioner)",
            r"\b(?:our|the|your)\s+dpo\b",
            r"\b(?:delete|erase|remove|wipe|purge|destroy)\s+(?:all\s+)?(?:of\s+)?(?:my|our)\s+"
            r"(?:personal\s+)?(?:data|information|info|details|records)\b",
            r"\b(?:my|our)\s+(?:personal\s+)?(?:data|information|info)\s+(?:be\s+)?"
            r"(?:deleted|erased|removed|wiped|purged)\b",
            r"\b(?:delete|erase|remove|wipe)\s+(?:everything|all\s+(?:data|information))\s+"
            r"(?:you\s+(?:have|hold|store)\s+)?(?:about|on)\s+(?:me|us)\b",
            r"\bdata\s+(?:you\s+)?(?:hold|have|store|keep)\s+(?:about|on)\s+(?:me|us)\b",
            r"\bcopy\s+of\s+(?:all\s+)?(?:the\s+|my\s+)?(?:personal\s+)?data\b",
            r"\bno\s+longer\s+consent\b",
            r"\bopt\s+out\s+of\s+the\s+sale\b",
        ),
    ),
    _Rule(
        "legal.compliance",
        "legal",
        _rx(
            r"\bsoc\s*-?\s*(?:1|2|3|ii)\b",
            r"\bhipaa\b",
            r"\bbaas?\b",
            r"\bbusiness\s+associate\s+agreements?\b",
            r"\biso\s*/?\s*(?:iec\s+)?27001\b",
            r"\bfedramp\b",
            r"\bpci(?:[\s-]*dss)?\b",
            r"\bdpas?\b",
            r"\bdata\s+processing\s+(?:agreement|addendum|addendums|terms)\b",
            r"\bsub-?processors?\b",
            r"\bsccs?\b",
            r"\bstandard\s+contractual\s+clauses\b",
            r"\bdata\s+residency\b",
            r"\bcompliance\s+(?:reports?|certificates?|certifications?|attestations?|questionnaires?|"
            r"documents?|documentation|officer|team|review|requirements?)\b",
            r"\bvendor\s+(?:risk|security)\s+(?:assessment|questionnaire|review)\b",
            r"\bterms\s+of\s+(?:service|use)\b[^.!?]{0,60}"
            r"\b(?:review|redline|negotiat|dispute|breach|violat)",
            r"\bliability\s+clause\b",
            r"\bredline\b",
            r"\bindemnif",
            r"\blegal\s+(?:team|department|dept|counsel)\s+(?:needs?|wants?|requires?|requests?|asks?|"
            r"is\s+asking|has\s+asked|would\s+like|must|insists?|to\s+review)\b",
        ),
    ),
    # ---- refund ---------------------------------------------------------------------------
    _Rule(
        "refund.refund",
        "refund",
        _rx(r"\b(?:non-?)?refund(?:s|ed|ing|able)?\b"),
        board_object_guard=True,
        negation_guard=True,
    ),
    _Rule(
        "refund.double_charge",
        "refund",
        _rx(
            r"\b(?:double|duplicate|duplicated|twice)\s+(?:\w+\s+)?(?:charged|billed|charges?|payments?|"
            r"billing|transactions?|debits?)\b",
            r"\btwo\s+(?:identical\s+|separate\s+)?(?:charges|payments|transactions|debits)\b",
            r"\b(?:charg(?:e|ed|ing)|bill(?:ed|ing)?|debit(?:ed)?|took\s+(?:my\s+)?money|taken|paid)\s+"
            r"(?:\w+\s+){0,4}?"
            r"(?:twice|two\s+times|2\s*x|2\s+times|double)\b",
            r"\b(?:payment|charge|upgrade|invoice|renewal|subscription|transaction)\s+(?:\w+\s+)?"
            r"(?:went\s+through|was\s+(?:processed|taken|charged)|hit)\s+(?:\w+\s+)?twice\b",
            r"\bovercharg(?:e|ed|ing)\b",
            r"\bdouble[-\s]?charg",
        ),
    ),
    _Rule(
        "refund.charged_after_cancel",
        "refund",
        _rx(
            r"\b(?:charged|billed|debited|invoiced|renewed)\b[^.!?]{0,40}\bafter\s+(?:i|we)\s+(?:had\s+)?"
            r"cancel+(?:ed|led)?\b",
            r"\bcancel+(?:ed|led)\b[^.!?]{0,60}\b(?:still|again)\s+(?:been\s+|got\s+|getting\s+)?"
            r"(?:charged|billed|debited|invoiced)",
            r"\b(?:charged|billed|debited|invoiced|renewed)\s+(?:\w+\s+){0,3}?(?:even\s+though|although|"
            r"after|despite|though)\s+(?:i|we)\s+(?:had\s+)?(?:already\s+)?(?:cancel+(?:ed|led)?|deleted|"
            r"closed|downgraded|removed)\b",
        ),
    ),
    _Rule(
        "refund.money_back",
        "refund",
        _rx(
            r"\bmoney\s+back\b",
            r"\b(?:money|payment|amount|funds)\s+(?:returned|refunded|paid\s+back)\b",
            r"\b(?:paid|pay\s+(?:me|us))\s+back\b",
            r"\breimburs(?:e|ed|ement|ing)\b",
            r"\b(?:send|give|pay|return|transfer)\s+(?:\w+\s+){0,2}(?:money|payment|amount|funds)\s+back\b",
            r"\breturn\s+(?:the|my|our)\s+(?:extra|duplicate|excess)\s+payment\b",
            r"\bchargebacks?\b",
            r"\bdisput(?:e|ed|ing)\s+(?:the|this|a|that|my)\s+(?:charge|payment|transaction)\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "refund.credit",
        "refund",
        _rx(
            r"\bcredit(?:ed)?\s+(?:\w+\s+){0,2}back\b",
            r"\bstore\s+credit\b",
            r"\b(?:account|service|sla|prorated|pro-rated|partial)\s+credits?\b",
            r"\bcredit\s+(?:on|to)\s+(?:my|our|the)\s+account\b",
            r"\bcredit\s+(?:me|us|my\s+account|our\s+account|the\s+account|the\s+difference|the\s+amount)\b",
            r"\bissue\s+(?:me\s+|us\s+)?(?:a\s+)?credit\b",
            r"\b(?:a|some)\s+credit\s+for\s+(?:the\s+)?(?:downtime|outage|incident)",
        ),
        negation_guard=True,
    ),
    _Rule(
        "refund.reverse_charge",
        "refund",
        _rx(
            r"\brevers(?:e|ed|al|ing)\s+(?:of\s+)?(?:the|this|that|one|a|my|it)?\s*(?:of\s+the\s+)?"
            r"(?:charges?|payments?|transactions?)\b",
            r"\b(?:charge|payment|transaction)s?\b[^.!?]{0,80}\b(?:reversed|reverse\s+it)\b",
            r"\b(?:don'?t|do\s+not|didn'?t)\s+recogni[sz]e\b[^.!?]{0,30}\bcharge",
            r"\bcharge\b[^.!?]{0,40}\b(?:i|we)\s+(?:don'?t|do\s+not|didn'?t)\s+recogni[sz]e",
            # "I was billed even though ... . I'd like that reversed." spans two sentences.
            r"\b(?:charged|billed|charge|payment|debited)\b[\s\S]{0,200}?\b(?:want|like|need)\s+"
            r"(?:that|it|this|them)\s+(?:reversed|undone|refunded)\b",
            r"\bunrecogni[sz]ed\s+charge",
            r"\bunauthori[sz]ed\s+(?:charge|payment|transaction)",
        ),
    ),
    # ---- pricing --------------------------------------------------------------------------
    _Rule(
        "pricing.price_word",
        "pricing",
        _rx(r"\bpric(?:e|es|ing|ed)\b", r"\bdiscount(?:s|ed)?\b", r"\bcoupons?\b", r"\bpromo\b", r"\bvouchers?\b"),
        board_object_guard=True,
        negation_guard=True,
        how_to_guard=True,
        on_board_guard=True,
    ),
    _Rule(
        "pricing.how_much",
        "pricing",
        _rx(
            r"\bh(?:o)?w\s+much\s+(?:(?:is|are|does|do|would|will|for|4|r|u|ya|you|it|we|i|to)\s+){0,3}"
            r"(?:the\s+|a\s+|an\s+|your\s+)?(?:free|starter|pro|enterprise|premium|business|plans?|"
            r"upgrade|upgrading|seats?|licen[cs]es?|subscriptions?|add-?ons?|charg\w*|pay|cost\w*|"
            r"price\w*|per\s+(?:user|seat|month))\b",
            r"\bh(?:o)?w\s+much\b[^.!?]{0,60}\b(?:cost|costs|charge|charging|pay|paying|bill|billed)\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "pricing.cost",
        "pricing",
        _rx(
            r"\bcost(?:s|ing)?\s+(?:of|to|for|per)\b",
            r"\b(?:does|would|will|do)\s+(?:\w+\s+){0,4}cost\b",
            r"\bwhat(?:'s|s|\s+is|\s+are)\s+the\s+costs?\b",
            r"\bcost\s+(?:us|me)\b",
            r"\b(?:going\s+to\s+|gonna\s+|will\s+|would\s+)?(?:run|set)\s+(?:us|me)\s+(?:back\s+)?"
            r"(?:for|about|around|\?|$)",
            # "your rates" / "your Enterprise rates" is sales talk; "the rate limit", "the success
            # rate", "your refresh rate" are product questions.
            r"\b(?:your|what\s+are\s+the)\s+(?:free|starter|pro|enterprise|annual|monthly|seat|license|"
            r"licence|plan)?\s*rates\b",
            r"\brates?\s+for\s+(?:the\s+)?(?:free|starter|pro|enterprise|plans?|seats?|licen[cs]es?)\b",
            r"\b(?:setup|set-up|onboarding|monthly|annual|license|licence|subscription)\s+fees?\b",
        ),
        board_object_guard=True,
        negation_guard=True,
    ),
    _Rule(
        "pricing.quote",
        "pricing",
        _rx(
            r"\b(?:a|an|the|your|our|custom|formal|price|pricing|written|official)\s+quot(?:e|es|ation)\b"
            r"(?!\s+(?:block|marks?|sign|text|feature|card|button|sent))",
            r"\bquot(?:e|ation)\s+for\s+(?:\d+|our|my|the|a|an)\b",
        ),
        board_object_guard=True,
        negation_guard=True,
    ),
    _Rule(
        "pricing.negotiation",
        "pricing",
        _rx(
            r"\bnegotiat(?:e|ing)\s+(?:\w+\s+){0,3}(?:price|pricing|contract|deal|renewal|rate|terms|"
            r"discount|plan|licen[cs]e)s?\b",
            r"\bnegotiable\b",
            r"\b(?:better|best|special|good)\s+(?:deal|price|rate|offer)\b",
            r"\b(?:any|a|some|special)\s+deals?\s+(?:on|for)\b",
            r"\bmatch\s+(?:that|their|the|this|a|our|competitor'?s?)\s+(?:\w+\s+)?(?:price|offer|deal|quote|"
            r"pricing)\b",
            r"\bprice\s+match",
            r"\b(?:lower|waive|reduce)\s+(?:the\s+)?(?:price|fee|cost|rate)\b",
            r"\b(?:black\s+friday|cyber\s+monday|holiday|seasonal)\s+(?:deals?|sales?|offers?|discounts?)\b",
            r"\b\d+\s?%\s+off\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "pricing.cheaper",
        "pricing",
        _rx(
            r"\b(?:cheaper|cheapest|expensive|pricey|affordable|overpriced)\b(?=[^.!?]*\b(?:plans?|pay|"
            r"paying|yearly|annual(?:ly)?|monthly|seats?|licen[cs]es?|subscription|starter|pro|enterprise|"
            r"tier|for\s+us|billing)\b)",
            r"\b(?:plans?|pay|paying|yearly|annual|monthly|seats?|subscription|starter|pro|enterprise|"
            r"tier)\b[^.!?]*\b(?:cheaper|cheapest|expensive|pricey|affordable|overpriced)\b",
        ),
        negation_guard=True,
    ),
    # ---- human request --------------------------------------------------------------------
    _Rule(
        "human_request.talk_to_person",
        "human_request",
        _rx(
            r"\b(?:talk|speak|chat|communicate)\s+(?:directly\s+)?(?:to|with)\s+"
            rf"(?:a|an|some|your|the|one\s+of\s+your)?\s*(?:[\w-]+\s+){{0,3}}?{_PERSON}\b",
        ),
        board_object_guard=True,
        negation_guard=True,
    ),
    _Rule(
        "human_request.want_person",
        "human_request",
        _rx(
            r"\b(?:want|need|like|prefer|get|give|have|request|requesting|find)\s+(?:me\s+|us\s+)?"
            r"(?:a|an|some|one)\s+(?:real\s+|actual\s+|live\s+)?(?:human|person|people|rep|"
            r"representative|supervisor)\b",
            r"\b(?:real|actual|live|human)\s+(?:person|people|human|humans|agent|agents|being|rep|"
            r"representative|support|operator)\b",
        ),
        board_object_guard=True,
        negation_guard=True,
    ),
    _Rule(
        "human_request.escalate",
        "human_request",
        _rx(
            r"\b(?:escalate|transfer|connect|put|forward|pass|hand)\s+(?:me|this|it|my\s+(?:\w+\s+)?"
            r"(?:ticket|case|issue|request|question))\s+(?:over\s+)?(?:through\s+)?(?:to|with|w/)\s+"
            rf"(?:a|an|some|your|the)?\s*(?:[\w-]+\s+){{0,2}}?{_PERSON}\b",
            r"\bplease\s+escalate\b",
            r"\b(?:get|find|send)\s+(?:me|us)\s+(?:someone|somebody|a\s+person|a\s+human)\b",
            r"\bput\s+(?:me|us)\s+in\s+touch\s+with\b",
            r"\bescalate\s+(?:this|my\s+(?:ticket|case|issue))\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "human_request.call_back",
        "human_request",
        _rx(
            r"\b(?:call|phone|ring)\s+me\b",
            r"\b(?:give|gimme)\s+(?:me|us)\s+a\s+(?:ring|call|buzz|phone\s+call)\b",
            r"\b(?:schedule|book|set\s+up|get\s+on|have|arrange|jump\s+on|hop\s+on|get)\s+(?:a|an)\s+"
            r"(?:quick\s+)?(?:phone\s+|video\s+|zoom\s+)?call\s+with\b",
            r"\b(?:reach\s+out\s+to|contact)\s+me\s+(?:by|via|over)\s+(?:the\s+)?(?:phone|telephone)\b",
            r"\b(?:talk|speak)\s+to\s+(?:someone|somebody|a\s+person)\s+on\s+the\s+phone\b",
        ),
        negation_guard=True,
    ),
    _Rule(
        "human_request.not_a_bot",
        "human_request",
        _rx(
            r"\b(?:rather\s+than|instead\s+of|not)\s+(?:a|an|the|this|some)\s+(?:bot|chatbot|robot|ai|"
            r"machine)\b",
            r"\b(?:don'?t|do\s+not)\s+want\s+(?:to\s+(?:talk|speak|chat)\s+(?:to|with)\s+)?"
            r"(?:a|an|the|this|some)?\s*(?:bot|chatbot|robot|ai|machine)\b",
            # "is anyone there?" is a ping the bot can answer; asking for a human/person is not.
            r"\b(?:is|are)\s+there\s+(?:an?\s+)?(?:actual\s+|real\s+|live\s+)?"
            r"(?:human|person|someone|somebody)\s*(?:there\b|(?:i|we)\s+can\s+"
            r"(?:talk|speak|chat)|available\b|in\s+support\b)",
            r"\A\W*(?:(?:an?\s+)?(?:human|agent|operator|representative|real\s+person|person|live\s+agent|"
            r"supervisor|manager)(?:\s+(?:pls|please|plz|now|asap))?|(?:talk|speak)\s+to\s+(?:an?\s+)?"
            r"(?:human|agent|operator|person))\W*\Z",
        ),
    ),
    # ---- negative sentiment (phrase rules; the score and shouting are checked separately) ----
    _Rule(
        "negative_sentiment.churn_threat",
        "negative_sentiment",
        _rx(
            r"\b(?:switch(?:ing)?|mov(?:e|ing)|migrat(?:e|ing)|go(?:ing)?\s+back|went\s+back|chang(?:e|ing))"
            rf"\s+(?:[\w-]+\s+){{0,3}}?to\s+{_COMPETITORS}\b",
            r"\b(?:take|taking|bring|move|moving)\s+(?:our|my)\s+business\s+elsewhere\b",
            r"\b(?:done|finished|through)\s+with\s+(?:techcorp|you|your\s+(?:app|product|company|service)|"
            r"this\s+(?:app|product|company|service|tool))\b",
            r"\b(?:we|i)(?:'ll|\s+will|'re\s+going\s+to|\s+are\s+going\s+to|'m\s+going\s+to|"
            r"\s+am\s+going\s+to|"
            r"'re\s+gonna|'m\s+gonna|\s+are\s+gonna)\s+(?:\w+\s+)?(?:cancel|leave|switch|churn|drop|quit)\b",
            r"\b(?:considering|thinking\s+(?:of|about)|ready\s+to|about\s+to|planning\s+to|plan\s+to)\s+"
            r"(?:cancel+(?:ing|ling)?|leav(?:e|ing)|switch(?:ing)?|churn(?:ing)?|drop(?:ping)?|"
            r"quit(?:ting)?)\b",
            r"\b(?:unless|if)\b[^.!?]{0,80}\b(?:we|i)(?:'re|'ll|\s+are|\s+will)?\s+(?:cancel+(?:ing|ling)?|"
            r"leav(?:e|ing)|switch(?:ing)?)\b",
        ),
    ),
)

_NEGATIVE_PHRASES = _rx(
    r"\b(?:unacceptable|ridiculous|useless|pathetic|incompetent|incompetence|garbage|trash|rubbish|"
    r"worst|nightmare|furious|livid|disgusted|disgusting|terrible|awful|horrible|appalling|"
    r"outrageous|shameful|sucks?|unusable)\b",
    r"\bfed\s+up\b",
    r"\bsick\s+(?:and|&)\s+tired\b",
    r"\bsick\s+of\b",
    r"\b(?:had|have)\s+enough\b",
    r"\bwaste\s+of\s+(?:my\s+|our\s+)?(?:time|money)\b",
    r"\b(?:this|it|that)\s+is\s+(?:a\s+|such\s+a\s+)?(?:joke|disgrace|scam|farce)\b",
)
# Distress rather than anger: a person who needs a human now even if the wording is not hostile.
_DISTRESS = _rx(
    r"\b(?:desperate|desperately|panicking|begging)\b",
    r"\b(?:going\s+to|gonna|will)\s+(?:kill\s+me|fire\s+me|lose\s+my\s+job)\b",
    r"\bat\s+my\s+wits'?\s+end\b",
    r"\blosing\s+my\s+mind\b",
    r"\bin\s+tears\b",
)
_PROFANITY = _rx(
    r"\bf+u+c+k\w*",
    r"\bfk+in\w*",
    r"\bsh[i1]t\w*",
    r"\bbullsh[i1]t\b",
    r"\b(?:wtf|wth|stfu)\b",
    r"\bcrap(?:py)?\b",
    r"\bpiss(?:ed)?\b",
    r"\bdamn(?:ed|it)?\b",
    r"\bgoddamn\w*",
    r"\bbloody\b",
    r"\basshole",
    r"\bwhat\s+the\s+(?:hell|heck|f)\b",
    r"\bthe\s+hell\b",
)


def _negative_sentiment_hits(text: str, lowered: str, sentiment: float) -> list[str]:
    hits: list[str] = []
    if sentiment < NEGATIVE_SENTIMENT_THRESHOLD:
        hits.append(f"negative_sentiment.score:{sentiment:.2f}")
    # The phrase lists are gated on the overall tone so "not the worst, honestly great" or
    # "damn that was fast, thanks!" do not escalate.
    if sentiment < 0:
        found = _NEGATIVE_PHRASES.search(lowered)
        if found:
            hits.append(f"negative_sentiment.phrase:{found.group(0)}")
    if sentiment < 0.25:
        for label, pattern in (("profanity", _PROFANITY), ("distress", _DISTRESS)):
            found = pattern.search(lowered)
            if found:
                hits.append(f"negative_sentiment.{label}:{found.group(0)}")
    if _is_shouting(text) and (sentiment < 0 or "!" in text or "??" in text):
        hits.append("negative_sentiment.shouting")
    return hits


def evaluate_inbound(text: str, channel: str | None = None) -> GuardrailDecision:
    """Decide whether the agent may answer an inbound message or must escalate it, and why."""
    prepared = _prepare(text, channel)
    sentiment = score_sentiment(prepared)
    lowered = prepared.lower()
    # Only email loses text to _prepare; elsewhere the full view is the prepared text itself.
    full_lowered = _full_text(text).lower() if channel in (None, "email") else lowered
    hits: dict[ReasonCode, list[str]] = {}
    for rule in _RULES:
        phrase = rule.first_hit(lowered)
        if phrase is None and rule.reads_quoted_text and full_lowered != lowered:
            phrase = rule.first_hit(full_lowered)
        if phrase is not None:
            hits.setdefault(rule.reason, []).append(f"{rule.name}:{phrase}")
    sentiment_hits = _negative_sentiment_hits(prepared, lowered, sentiment)
    if sentiment_hits:
        hits.setdefault("negative_sentiment", []).extend(sentiment_hits)
    matched = [entry for reason in REASON_PRIORITY for entry in hits.get(reason, [])]
    for reason in REASON_PRIORITY:
        if reason in hits:
            return GuardrailDecision(action="escalate", reason=reason, sentiment=sentiment, matched=matched)
    return GuardrailDecision(action="answer", reason=None, sentiment=sentiment, matched=matched)


# --------------------------------------------------------------------------------------------
# Output check
# --------------------------------------------------------------------------------------------

_NUMBER_WORDS = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand)"
)
_PRICE_STATEMENT = _rx(
    r"[$€£¥₹]\s?\d",
    r"\b\d[\d,.]*\s?(?:usd|eur|gbp|dollars?|euros?|pounds?|bucks|cents?)\b",
    r"\b(?:usd|eur|gbp)\s?\d",
    rf"\b{_NUMBER_WORDS}(?:[\s-]+{_NUMBER_WORDS})*\s+(?:dollars|euros|pounds|bucks)\b",
    r"\b\d+(?:\.\d+)?\s?%\s?(?:off|discount|cheaper|reduction|savings?)\b",
    r"\b(?:discount|reduction|savings?)\s+of\s+(?:up\s+to\s+)?\d+(?:\.\d+)?\s?%",
    # "pricing starts at 9" is a price; "the digest starts at 9" is a time.
    r"\b(?:costs?|priced\s+at|(?:pricing|prices|plans?)\s+starts?\s+at)\s+"
    r"(?:just\s+|only\s+|about\s+|around\s+)?\d",
)

# Hedges that turn a refund sentence into an honest non-promise ("I can't promise a refund").
_HEDGE = re.compile(
    r"\b(?:not|cannot|can'?t|unable|never|no|won'?t|whether|if|might|may|unless|don'?t)\b",
)
_REFUND_PROMISE = _rx(
    # Promising on behalf of a colleague ("our billing team will refund it") is still a promise.
    r"\b(?:we|i|techcorp|billing|(?:our|the)\s+(?:\w+\s+)?team)"
    r"(?:'ll|'ve|'d|\s+will|\s+would|\s+have|\s+can|\s+shall|\s+am\s+going\s+to|"
    r"'m\s+going\s+to|\s+are\s+going\s+to|'re\s+going\s+to)?\s+"
    r"(?:(?:gone|go|went)\s+ahead\s+and\s+|happily\s+|gladly\s+|definitely\s+|certainly\s+|now\s+|"
    r"immediately\s+|also\s+|just\s+|already\s+|fully\s+|be\s+able\s+to\s+|be\s+happy\s+to\s+)*"
    r"(?:refund(?:ed)?|reimburs(?:e|ed)|credit(?:ed)?\s+(?:\w+\s+){0,3}back|"
    r"process(?:ed)?\s+(?:a|the|your)\s+(?:full\s+|partial\s+)?refund|"
    r"issu(?:e|ed)\s+(?:you\s+)?(?:a|the|your)\s+(?:full\s+|partial\s+)?(?:refund|credit)|"
    r"revers(?:e|ed)\s+the\s+charge)\b",
    r"\byou(?:'ll|\s+will)?\s+(?:get|receive|be\s+(?:given|issued|sent))\s+(?:your\s+|a\s+|the\s+)?"
    r"(?:full\s+|partial\s+)?(?:refund|money\s+back|reimbursement)\b",
    r"\brefund\s+(?:has\s+been|was|is\s+being|will\s+be|is)\s+(?:now\s+)?(?:issued|processed|approved|"
    r"initiated|sent|on\s+its\s+way)\b",
    r"\bmoney\s+(?:will\s+be|is\s+being)\s+(?:returned|refunded|sent\s+back)\b",
)
_FEATURE_PROMISE = _rx(
    r"\bcoming\s+soon\b",
    r"\b(?:we|i|the\s+team|our\s+(?:team|engineers|developers|product\s+team)|techcorp)"
    r"(?:'ll|'re|\s+will|\s+are|\s+is|\s+plan\s+to|\s+are\s+planning\s+to|'re\s+planning\s+to|"
    r"\s+intend\s+to|\s+are\s+going\s+to|'re\s+going\s+to)\s+(?:\w+\s+){0,2}?"
    r"(?:add(?:ing)?|build(?:ing)?|ship(?:ping)?|releas(?:e|ing)|launch(?:ing)?|introduc(?:e|ing)|"
    r"implement(?:ing)?|roll(?:ing)?\s+out|work(?:ing)?\s+on)\b"
    # Logging a request or fixing a bug is not a feature promise.
    r"(?!\s+(?:(?:this|that|it|your)\s+(?:\w+\s+)?to\s+(?:our|the)\b|(?:a|the)\s+fix|fixing|"
    r"(?:this|the|that)\s+(?:bug|issue|incident|outage|problem)))",
    r"\b(?:next|upcoming|future|coming)\s+(?:release|version|update|sprint|quarter|month)s?\s+"
    r"(?:will|should|is\s+going\s+to)\s+(?:\w+\s+)?(?:include|add|bring|support|have|ship)\b",
    r"\bin\s+(?:an?|the)\s+(?:upcoming|future|next)\s+(?:release|version|update)\b",
    r"\bon\s+(?:our|the)\s+(?:product\s+|public\s+)?roadmap\b",
    r"\b(?:planned|scheduled|slated)\s+for\s+(?:q[1-4]|next|later|early|late|mid|20\d\d|this\s+"
    r"(?:year|quarter|month))\b",
    r"\bwill\s+(?:soon\s+)?be\s+(?:available|released|added|supported|launched|shipping)\s+"
    r"(?:soon|shortly|next|in\s+(?:the\s+)?(?:next|coming|upcoming|q[1-4]|20\d\d))",
)
# "Yes, TechCorp supports X" style claims. Heuristic: take X (the rest of the clause), keep its
# content words (stopwords dropped, crude stems, first six), and call the claim backed when a single
# KB passage contains at least 60% of them. Forward-looking sentences ("coming soon", "on our
# roadmap") are held to the same test but only against passages that are themselves
# forward-looking, so an announced roadmap item may be repeated and nothing else may be promised.
# It is lexical: a paraphrase the KB does support can still be blocked (the safe direction).
_CAPABILITY_CLAIM = _rx(
    # Singular subjects need the third-person verb so "TechCorp support assistant" is not a claim.
    r"\b(?:techcorp|it|the\s+(?:app|product|platform|mobile\s+app|api)|our\s+(?:app|product|platform|"
    r"api|mobile\s+app))\s+(?:fully\s+|already\s+|now\s+|natively\s+|also\s+)?"
    r"(?:supports|does\s+support|offers|provides|includes|has\s+(?:built-?in\s+|native\s+)?support\s+for|"
    r"comes\s+with|integrates\s+(?:natively\s+)?with|works\s+with|is\s+compatible\s+with|"
    r"lets\s+you|allows\s+you\s+to|can)\s+(?P<x1>[^.!?;\n]+)",
    r"\b(?:we|the\s+mobile\s+apps|our\s+(?:mobile\s+)?apps)\s+(?:fully\s+|already\s+|now\s+|natively\s+|"
    r"also\s+|do\s+)?(?:support|offer|provide|include|integrate\s+with|work\s+with|"
    r"have\s+(?:built-?in\s+|native\s+)?support\s+for)\s+(?P<x2>[^.!?;\n]+)",
    r"\byes\s*[,!-]?\s+(?:you\s+can|there\s+is|there'?s|it\s+does|we\s+do)\s+(?P<x3>[^.!?;\n]+)",
)
_CLAIM_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "with",
        "you",
        "your",
        "our",
        "that",
        "this",
        "these",
        "those",
        "feature",
        "features",
        "option",
        "options",
        "ability",
        "support",
        "supports",
        "supported",
        "techcorp",
        "yes",
        "use",
        "using",
        "can",
        "also",
        "well",
        "way",
        "ways",
        "both",
        "all",
        "any",
        "each",
        "into",
        "from",
        "like",
        "such",
        "able",
        "out",
        "box",
        "natively",
        "native",
        "fully",
        "full",
        "via",
        "its",
        "their",
        "them",
        "they",
        "but",
        "not",
        "yet",
        "too",
        "very",
        "just",
        "one",
        "app",
        "apps",
        "does",
        "did",
        "has",
        "have",
        "there",
        "here",
        "inside",
        "within",
        "directly",
        "easily",
        "simply",
        "automatically",
        "help",
        "need",
        "want",
        "get",
        "make",
        "set",
        "let",
        "more",
        "most",
        "other",
        "some",
        "team",
        "teams",
        "account",
        "plan",
        "plans",
        "today",
        "right",
        "now",
        "so",
        "are",
        "is",
        "be",
        "will",
        "we",
        "it",
        "of",
        "to",
        "in",
        "on",
        "a",
        "an",
        "or",
        "by",
        "at",
        "as",
        "if",
        "do",
        "when",
        "where",
        "what",
        "which",
        "who",
        "how",
        "then",
        "than",
        "every",
        "per",
    }
)
_CLAIM_MAX_TERMS = 6
_CLAIM_MIN_COVERAGE = 0.6  # share of X's key terms one passage must contain to back the claim

_LEAK_NGRAM = 10  # words of verbatim system prompt that count as a leak
_LEAK_DISCLOSURE = _rx(
    r"\b(?:my|the)\s+(?:system\s+prompt|instructions|initial\s+prompt)\s+(?:say|says|are|is|tell\s+me|"
    r"state|reads?)\b",
    r"\bhere\s+(?:is|are)\s+my\s+(?:system\s+prompt|prompt|instructions)\b",
    r"\b(?:i\s+am|i'm)\s+(?:instructed|programmed|configured)\s+to\b",
)
_QUOTED_SPAN = re.compile(r"\"[^\"]{1,400}\"")


def _stem(word: str) -> str:
    """Crude stem so "moves"/"moved"/"moving" and "integrations"/"integration" compare equal."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    # Long words: a 7-letter prefix is enough to tell "integration" from "integrity".
    return word[:7]


def _key_terms(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9][a-z0-9+#.-]*[a-z0-9+#]|[a-z0-9]", text.lower())
    terms: list[str] = []
    for word in words:
        if len(word) < 3 or word in _CLAIM_STOPWORDS:
            continue
        stem = _stem(word)
        if stem not in terms:
            terms.append(stem)
    return terms


def _claim_supported(claim: str, passages: Sequence[set[str]]) -> bool:
    terms = _key_terms(claim)[:_CLAIM_MAX_TERMS]
    if not terms:
        return True
    needed = math.ceil(_CLAIM_MIN_COVERAGE * len(terms))
    return any(sum(term in passage for term in terms) >= needed for passage in passages)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def _word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _leaks_prompt(reply: str, system_prompt: str) -> bool:
    # Quoted lines in the system prompt are scripted wording the agent is *meant* to say
    # ("say: \"I can't share pricing here...\""), so reusing them is not a leak.
    unscripted = _QUOTED_SPAN.sub(" | ", _normalise(system_prompt))
    prompt_grams: set[tuple[str, ...]] = set()
    for chunk in unscripted.split("|"):
        prompt_grams |= _word_ngrams(chunk, _LEAK_NGRAM)
    return bool(prompt_grams & _word_ngrams(reply, _LEAK_NGRAM))


def _hedged(sentence: str, start: int) -> bool:
    return bool(_HEDGE.search(_clause_before(sentence, start)))


# ---- secrets and personal data in a reply ------------------------------------------------------
# A reply must never carry a credential (ours, from a poisoned passage, or one a customer pasted),
# a full card number, or another person's email address or phone number. These run on the reply
# in its original case: key formats are case-sensitive.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\bsk-(?:proj-|live-|test-|ant-|svcacct-)?[A-Za-z0-9_-]{16,}",  # OpenAI / Anthropic-style keys
        r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",  # AWS access key ids
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}",  # Slack tokens
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
        r"(?i:\bbearer)\s+[A-Za-z0-9._~+/-]{20,}=*",
        r"(?i:[?&](?:access_?token|api_?key|token|secret|sig|signature|password)=)[^&\s]{12,}",
        r"(?i:\b[a-z]+://[^\s:/@]+:)[^\s@/]+@",  # credentials inside a URL
    )
)
# "password: hunter2!", "api_key = 9f8e...": a credential word, then a value that looks like one
# (a digit or a symbol in it), so "Password: must be 12 characters" is not a leak.
_CREDENTIAL_ASSIGNMENT = re.compile(
    r"(?i:\b(?:password|passwd|pwd|passcode|pass\s*phrase|secret(?:\s+key)?|client\s*secret|api[\s_-]?key|"
    r"access[\s_-]?key|(?:access|auth|bearer|refresh|api)[\s_-]?token|private[\s_-]?key)\b)"
    r"\s*(?:[:=]|\bis\b)\s*[\"'`]?(?=[^\s\"'`]*[0-9!@#$%^&*_+=~|<>?])(?=[^\s\"'`]*[A-Za-z])[^\s\"'`]{6,}"
)
# Long random-looking strings: 32+ hex digits, or 40+ base64 characters mixing cases and digits.
_HEX_SECRET = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
_BASE64_SECRET = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_-])")
_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)
# 13-19 digits, optionally grouped by spaces or dashes, starting like a card (2-6): Luhn decides.
_CARD_CANDIDATE = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
_EMAIL_ADDRESS = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# International (+country code) or North-American grouped numbers; bare digit runs (invoice, order
# and ticket numbers, dates) are not phone numbers here.
_PHONE_NUMBER = re.compile(
    r"(?<![\w+])\+\d(?:[\s().-]{0,2}\d){6,14}\b"
    r"|(?<![\w-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\w-])"
)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _looks_random(token: str) -> bool:
    """A base64-ish token with upper case, lower case and digits all present (not a word or a path)."""
    return any(c.isupper() for c in token) and any(c.islower() for c in token) and sum(c.isdigit() for c in token) >= 2


def _contains_secret(reply: str) -> bool:
    if any(p.search(reply) for p in _SECRET_PATTERNS) or _CREDENTIAL_ASSIGNMENT.search(reply):
        return True
    without_urls = _URL.sub(" ", reply)  # long path segments are not secrets; query tokens were checked above
    if _HEX_SECRET.search(without_urls):
        return True
    return any(_looks_random(m.group(0)) for m in _BASE64_SECRET.finditer(without_urls))


def _contains_card_number(reply: str) -> bool:
    for found in _CARD_CANDIDATE.finditer(reply):
        digits = re.sub(r"\D", "", found.group(0))
        if 13 <= len(digits) <= 19 and _luhn_valid(digits):
            return True
    return False


def _phone_digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _same_phone(a: str, b: str) -> bool:
    """Equal numbers, allowing one side without its country code (+1 415... vs (415) ...)."""
    if len(a) < 7 or len(b) < 7:
        return False
    return a == b or (min(len(a), len(b)) >= 10 and (a.endswith(b) or b.endswith(a)))


def _foreign_contacts(reply: str, allowed: Sequence[str]) -> bool:
    """An email address or phone number in the reply that is not in `allowed`."""
    emails = {a.strip().lower() for a in allowed if "@" in a}
    phones = [_phone_digits(a) for a in allowed if "@" not in a and _phone_digits(a)]
    if any(m.group(0).lower() not in emails for m in _EMAIL_ADDRESS.finditer(reply)):
        return True
    for found in _PHONE_NUMBER.finditer(reply):
        digits = _phone_digits(found.group(0))
        if not any(_same_phone(digits, phone) for phone in phones):
            return True
    return False


def check_output(
    reply: str,
    *,
    kb_passages: list[str],
    system_prompt: str | None = None,
    customer_contacts: Sequence[str] = (),
) -> OutputCheck:
    """Check a draft reply for prices, refund promises, unbacked feature claims, prompt leaks and secrets/PII.

    `customer_contacts` are the email addresses and phone numbers the reply may mention: the
    customer's own (and our own support address). Addresses that appear in the knowledge-base
    passages are public documentation and allowed too. Credentials and full card numbers are never
    allowed, whoever they belong to.
    """
    original = _normalise(reply)
    text = original.lower()
    violations: list[str] = []

    if _PRICE_STATEMENT.search(text):
        violations.append("states_price")

    for sentence in _sentences(text):
        found = _REFUND_PROMISE.search(sentence)
        if found and not _hedged(sentence, found.start()):
            violations.append("promises_refund")
            break

    passages = [
        {_stem(w) for w in re.findall(r"[a-z0-9][a-z0-9+#.-]*[a-z0-9+#]|[a-z0-9]", p.lower())} for p in kb_passages
    ]
    roadmap_passages = [
        p for p, raw in zip(passages, kb_passages, strict=True) if _FEATURE_PROMISE.search(_normalise(raw).lower())
    ]
    for sentence in _sentences(text):
        promise = _FEATURE_PROMISE.search(sentence)
        if promise and not _hedged(sentence, promise.start()):
            # A forward-looking statement is only fine when the KB itself announces it.
            if not _claim_supported(sentence, roadmap_passages):
                violations.append("promises_unlisted_feature")
                break
        claim = _CAPABILITY_CLAIM.search(sentence)
        if claim and not _hedged(sentence, claim.start()):
            subject = next(g for g in claim.groups() if g)
            if not _claim_supported(subject, passages):
                violations.append("promises_unlisted_feature")
                break

    # Talking *about* one's instructions is flagged even when the prompt text is not supplied.
    if _LEAK_DISCLOSURE.search(text) or (system_prompt and _leaks_prompt(text, system_prompt)):
        violations.append("leaks_system_prompt")

    if _contains_secret(original):
        violations.append("contains_secret")
    if _contains_card_number(original):
        violations.append("contains_card_number")
    documented = [m.group(0) for p in kb_passages for m in _EMAIL_ADDRESS.finditer(_normalise(p))]
    documented += [m.group(0) for p in kb_passages for m in _PHONE_NUMBER.finditer(_normalise(p))]
    if _foreign_contacts(original, [*customer_contacts, *documented]):
        violations.append("discloses_contact")

    return OutputCheck(allowed=not violations, violations=violations)
