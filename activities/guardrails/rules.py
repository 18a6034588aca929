"""The inbound gate: before the model sees a message, answer it or escalate it with a reason.

The rules are data (``data/rules_en.toml``, ``data/guards_en.toml``): regular expressions over whole
words and phrases, each with the guards that discard a hit ("I don't want a refund", "our Refund
Requests board"). This module compiles them once and applies them. Pure functions over ``str`` (no
I/O after the first load, no clock, no randomness): the same input always gives the same decision,
which keeps them safe in Temporal activities and reproducible in an audit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from activities.guardrails.datafiles import (
    Entry,
    GuardrailDataError,
    PatternText,
    compile_any,
    compile_pattern,
    fragments_of,
    read,
    validate,
)
from activities.guardrails.normalise import full_text, prepare
from activities.guardrails.sentiment import is_shouting, score_sentiment
from core.settings import Settings
from core.vocabulary import GUARDRAIL_REASONS, GuardrailReason

RULES_FILE = "rules_en.toml"
GUARDS_FILE = "guards_en.toml"

# The one knob: the setting that also keeps an unhappy customer's conversation from closing idle.
# A compound score strictly below it escalates; plain troubleshooting ("the sync is broken, can you
# help?") stays around -0.3 while angry or distressed messages land below -0.5.
NEGATIVE_SENTIMENT_THRESHOLD: float = Settings.model_fields["negative_sentiment_threshold"].default

GuardName = Literal["negation", "board_object", "how_to", "on_board"]


class GuardrailDecision(BaseModel):
    """Outcome of the pre-LLM gate for one inbound message."""

    action: Literal["escalate", "answer"]
    reason: GuardrailReason | None = None
    sentiment: float = Field(ge=-1.0, le=1.0)
    matched: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reason_iff_escalate(self) -> GuardrailDecision:
        if (self.action == "escalate") != (self.reason is not None):
            raise ValueError("reason must be set exactly when action == 'escalate'")
        return self


# ---------------------------------------------------------------------------------- data schema
class RuleEntry(Entry):
    """One `[[rule]]` of rules_en.toml."""

    id: str = Field(pattern=r"^[a-z_]+\.[a-z_]+$")
    reason: GuardrailReason
    language: Literal["en"]
    description: str = Field(min_length=1)
    guards: list[GuardName] = []
    reads_quoted_text: bool = False
    patterns: list[PatternText] = Field(min_length=1)
    examples: list[str] = []

    @model_validator(mode="after")
    def _id_names_reason(self) -> RuleEntry:
        if self.id.split(".")[0] != self.reason:
            raise ValueError(f"id must start with its reason ({self.reason}.)")
        return self


class ToneRuleEntry(Entry):
    """One `[[tone_rule]]`: negative-sentiment words that count while the score is below `active_below`."""

    id: str = Field(pattern=r"^negative_sentiment\.[a-z_]+$")
    description: str = Field(min_length=1)
    active_below: float = Field(ge=-1.0, le=1.0)
    patterns: list[PatternText] = Field(min_length=1)


class _GuardsFile(Entry):
    clause_break: PatternText
    negated_request: PatternText
    how_to: PatternText
    on_board: PatternText
    board_objects: list[str]
    glue_words: list[str]
    tracking_verbs: list[str]


# ---------------------------------------------------------------------------------- guards
_SENTENCE_END = re.compile(r"[.!?;\n]")
_WORD_RE = re.compile(r"[a-z0-9%]+(?:'[a-z]+)?")
Guard = Callable[[str, "re.Match[str]"], bool]


@dataclass(frozen=True)
class Guards:
    """The checks that discard a rule's hit, over the lower-cased text around it."""

    clause_break: re.Pattern[str]
    negated_request: re.Pattern[str]
    how_to_tail: re.Pattern[str]
    on_board_tail: re.Pattern[str]
    board_objects: frozenset[str]
    glue_words: frozenset[str]
    tracking_verbs: frozenset[str]

    def clause_before(self, text: str, start: int) -> str:
        """The text from the last clause boundary up to `start`."""
        pieces = self.clause_break.split(text[:start])
        return pieces[-1] if pieces else text[:start]

    def negated(self, text: str, hit: re.Match[str]) -> bool:
        return bool(self.negated_request.search(self.clause_before(text, hit.start())))

    def how_to(self, text: str, hit: re.Match[str]) -> bool:
        return bool(self.how_to_tail.search(self.clause_before(text, hit.start())))

    def on_board(self, text: str, hit: re.Match[str]) -> bool:
        return bool(self.on_board_tail.match(text, hit.end()))

    def board_object(self, text: str, hit: re.Match[str]) -> bool:
        # Stop at the end of the sentence: "Refund it. The board..." must not chain.
        after = _SENTENCE_END.split(text[hit.end() :], maxsplit=1)[0].lower()
        for count, word in enumerate(_WORD_RE.findall(after)):
            if word in self.board_objects:
                return True
            if count >= 2 or word in self.glue_words:
                break
        before = _SENTENCE_END.split(text[: hit.start()])[-1].lower()
        return any(w in self.tracking_verbs for w in _WORD_RE.findall(before)[-2:])


@cache
def guards() -> Guards:
    """The guards of guards_en.toml, read and checked once."""
    data = validate(_GuardsFile, read(GUARDS_FILE), where=GUARDS_FILE)
    return Guards(
        clause_break=compile_pattern(data.clause_break, where=f"{GUARDS_FILE}: clause_break"),
        negated_request=compile_pattern(data.negated_request, where=f"{GUARDS_FILE}: negated_request"),
        how_to_tail=compile_pattern(data.how_to, where=f"{GUARDS_FILE}: how_to"),
        on_board_tail=compile_pattern(data.on_board, where=f"{GUARDS_FILE}: on_board"),
        board_objects=frozenset(data.board_objects),
        glue_words=frozenset(data.glue_words),
        tracking_verbs=frozenset(data.tracking_verbs),
    )


# ---------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A compiled `[[rule]]`: its patterns as one alternation, and the guards that discard a hit."""

    id: str
    reason: GuardrailReason
    pattern: re.Pattern[str]
    guards: tuple[Guard, ...]
    reads_quoted_text: bool
    examples: tuple[str, ...]

    def first_hit(self, text: str) -> str | None:
        """The words of the first match no guard discards, whitespace collapsed."""
        for found in self.pattern.finditer(text):
            if not any(guard(text, found) for guard in self.guards):
                return " ".join(found.group(0).split())
        return None


@dataclass(frozen=True)
class ToneRule:
    id: str
    pattern: re.Pattern[str]
    active_below: float


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[Rule, ...]
    tone_rules: tuple[ToneRule, ...]


def _entries(raw: object, key: str) -> list[tuple[str, object]]:
    if not isinstance(raw, list):
        raise GuardrailDataError(f"{RULES_FILE}: [[{key}]] must be a list of tables")
    return [(f"{RULES_FILE}: {key} {item.get('id', f'#{n + 1}')!r}", item) for n, item in enumerate(raw)]


@cache
def rule_book() -> RuleBook:
    """The rules of rules_en.toml, read, checked and compiled once."""
    raw = read(RULES_FILE)
    unknown = set(raw) - {"fragments", "rule", "tone_rule"}
    if unknown:
        raise GuardrailDataError(f"{RULES_FILE}: unknown top-level keys {sorted(unknown)}")
    fragments = fragments_of(raw, where=RULES_FILE)
    g = guards()
    by_name: dict[GuardName, Guard] = {
        "negation": g.negated,
        "board_object": g.board_object,
        "how_to": g.how_to,
        "on_board": g.on_board,
    }
    rules: list[Rule] = []
    for where, item in _entries(raw.get("rule", []), "rule"):
        entry = validate(RuleEntry, item, where=where)
        rules.append(
            Rule(
                id=entry.id,
                reason=entry.reason,
                pattern=compile_any(entry.patterns, where=where, fragments=fragments),
                guards=tuple(by_name[name] for name in entry.guards),
                reads_quoted_text=entry.reads_quoted_text,
                examples=tuple(entry.examples),
            )
        )
    tone_rules: list[ToneRule] = []
    for where, item in _entries(raw.get("tone_rule", []), "tone_rule"):
        tone = validate(ToneRuleEntry, item, where=where)
        pattern = compile_any(tone.patterns, where=where, fragments=fragments)
        tone_rules.append(ToneRule(id=tone.id, pattern=pattern, active_below=tone.active_below))
    ids = [r.id for r in rules] + [t.id for t in tone_rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GuardrailDataError(f"{RULES_FILE}: duplicate rule ids {duplicates}")
    return RuleBook(rules=tuple(rules), tone_rules=tuple(tone_rules))


# ---------------------------------------------------------------------------------- the decision
def _negative_sentiment_hits(text: str, lowered: str, sentiment: float, threshold: float) -> list[str]:
    hits: list[str] = []
    if sentiment < threshold:
        hits.append(f"negative_sentiment.score:{sentiment:.2f}")
    # Tone words are gated on the overall tone so "not the worst, honestly great" or "damn that was
    # fast, thanks!" do not escalate.
    for tone in rule_book().tone_rules:
        if sentiment < tone.active_below:
            found = tone.pattern.search(lowered)
            if found:
                hits.append(f"{tone.id}:{found.group(0)}")
    # A polite ALL-CAPS message ("HI SUPPORT TEAM, HOW DO I ADD A MEMBER? THANKS") is not shouting:
    # caps only count when the message is also negative or carries exclamation marks.
    if is_shouting(text) and (sentiment < 0 or "!" in text or "??" in text):
        hits.append("negative_sentiment.shouting")
    return hits


def evaluate_inbound(
    text: str, channel: str | None = None, *, negative_threshold: float = NEGATIVE_SENTIMENT_THRESHOLD
) -> GuardrailDecision:
    """Decide whether the agent may answer an inbound message or must escalate it, and why.

    When several reasons fire, the first of `GUARDRAIL_REASONS` names the escalation; every hit
    stays in `matched`, highest reason first, for the audit.
    """
    prepared = prepare(text, channel)
    sentiment = score_sentiment(prepared)
    lowered = prepared.lower()
    # Only email loses text to prepare(); elsewhere the full view is the prepared text itself.
    full_lowered = full_text(text).lower() if channel in (None, "email") else lowered
    hits: dict[GuardrailReason, list[str]] = {}
    for rule in rule_book().rules:
        phrase = rule.first_hit(lowered)
        if phrase is None and rule.reads_quoted_text and full_lowered != lowered:
            phrase = rule.first_hit(full_lowered)
        if phrase is not None:
            hits.setdefault(rule.reason, []).append(f"{rule.id}:{phrase}")
    sentiment_hits = _negative_sentiment_hits(prepared, lowered, sentiment, negative_threshold)
    if sentiment_hits:
        hits.setdefault("negative_sentiment", []).extend(sentiment_hits)
    matched = [entry for reason in GUARDRAIL_REASONS for entry in hits.get(reason, [])]
    reason = next((r for r in GUARDRAIL_REASONS if r in hits), None)
    return GuardrailDecision(
        action="answer" if reason is None else "escalate", reason=reason, sentiment=sentiment, matched=matched
    )
