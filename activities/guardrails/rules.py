"""The inbound gate: before the model sees a message, answer it or escalate it with a reason.

The rules are data (``data/rules_<lang>.toml`` for en, es, pt, fr and de, ``data/guards_en.toml``):
regular expressions over whole words and phrases, each with the guards that discard a hit ("I don't
want a refund", "our Refund Requests board"); every rule also discards a hit that is a name the
customer gave something (quoted, or after "called", "llamada", "appelée"...). Every language's rules
read every message (customers
mix languages and a one-liner's language is a guess); the non-English files are matched against the
text with its accents taken off, so "devolucion" and "devolución" are one spelling. A message
confidently in a language none of the files is written in is handed over with reason "language".
This module compiles them once and applies them. Pure functions over ``str`` (no
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
from activities.guardrails.language import detect_language
from activities.guardrails.learned import escalation_of_prepared as learned_escalation
from activities.guardrails.normalise import fold_accents, full_text, prepare, signature_line, without_quoted
from activities.guardrails.secrets import contains_key
from activities.guardrails.sentiment import is_shouting, score_sentiment
from core.settings import Settings
from core.vocabulary import GUARDRAIL_REASONS, EscalationReason, GuardrailReason

RuleLanguage = Literal["en", "es", "pt", "fr", "de"]
# One rules file per supported language; English first (its order is the audit order of `matched`).
RULES_FILES: dict[RuleLanguage, str] = {lang: f"rules_{lang}.toml" for lang in ("en", "es", "pt", "fr", "de")}
RULES_FILE = RULES_FILES["en"]
# Above this detector probability the other languages' rules are not run on a message (speed only:
# on the tuning set every message detected this surely was in the detected language).
SURE_OF_LANGUAGE = 0.95
# A message of at most this many words that only asks who answers ("are you a bot?") is not read by
# the learned layer at all.
WHO_ANSWERS_ONLY_WORDS = 12
GUARDS_FILE = "guards_en.toml"
INTL_GUARDS_FILE = "guards_intl.toml"

# The one knob: the setting that also keeps an unhappy customer's conversation from closing idle.
# A compound score strictly below it escalates; plain troubleshooting ("the sync is broken, can you
# help?") stays around -0.3 while angry or distressed messages land below -0.5.
NEGATIVE_SENTIMENT_THRESHOLD: float = Settings.model_fields["negative_sentiment_threshold"].default

GuardName = Literal[
    "negation",
    "board_object",
    "how_to",
    "on_board",
    "broken_page",
    "board_object_intl",
    "broken_page_intl",
    "negation_intl",
    "own_business",
    "self_confirmed",
]


class GuardrailDecision(BaseModel):
    """Outcome of the pre-LLM gate for one inbound message."""

    action: Literal["escalate", "answer"]
    # A GuardrailReason, or "language" for a message in a language the rules are not written in.
    reason: EscalationReason | None = None
    sentiment: float = Field(ge=-1.0, le=1.0)
    matched: list[str] = Field(default_factory=list)
    # ISO 639-1 code of the message, when the detector is sure enough (None: too short or unsure).
    language: str | None = None

    @model_validator(mode="after")
    def _reason_iff_escalate(self) -> GuardrailDecision:
        if (self.action == "escalate") != (self.reason is not None):
            raise ValueError("reason must be set exactly when action == 'escalate'")
        return self


# ---------------------------------------------------------------------------------- data schema
class RuleEntry(Entry):
    """One `[[rule]]` of a rules_<lang>.toml file."""

    id: str = Field(pattern=r"^[a-z_]+\.[a-z_]+$")
    reason: GuardrailReason
    language: RuleLanguage
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
    own_customers: PatternText
    own_customers_before: PatternText
    third_party_recipient: PatternText
    glue_words: list[str]
    tracking_verbs: list[str]
    page_nouns: list[str]
    broken_page: PatternText
    just_reporting: PatternText
    troubleshooting_margin: float = Field(ge=0.0, le=1.0)
    troubleshooting_question: PatternText
    practical_question: PatternText
    naming_words: PatternText
    identity_frame: PatternText
    identity_request: PatternText
    own_business_subject: PatternText
    own_business_work: PatternText
    own_business_addressed: PatternText
    own_business_demand: PatternText
    own_business_introduction: PatternText
    signature_speech: PatternText
    self_confirmed: PatternText


class _IntlGuardsFile(Entry):
    board_objects: list[str]
    card_nouns: list[str]
    payment_card: PatternText
    page_nouns: list[str]
    broken: PatternText
    naming_words: PatternText
    identity_frame: PatternText
    identity_request: PatternText
    own_business_subject: PatternText
    own_business_work: PatternText
    own_business_addressed: PatternText
    own_business_demand: PatternText
    own_business_introduction: PatternText
    negated_request: PatternText


# ---------------------------------------------------------------------------------- guards
_SENTENCE_END = re.compile(r"[.!?;\n]")
# A sentence that ends in a question mark (its words from the last full stop, "!", "?", line break or
# emoji: in chat an emoji ends a clause, "ugh, every card twice 🙃 any way to get rid of the copies?").
_QUESTION_SENTENCE = re.compile(r"[^.!?\n\u2600-\u27bf\U0001f300-\U0001faff]*\?")
_PROSE_SENTENCE_END = re.compile(r"[!?;\n]|\.(?=\s|$)")
_WORD_RE = re.compile(r"[a-z0-9%]+(?:'[a-z]+)?")
Guard = Callable[[str, "re.Match[str]"], bool]


def _sentence_of(text: str, hit: re.Match[str]) -> tuple[int, int, str | None]:
    """Where the hit's sentence starts and ends in `text`, and the mark that ends it (None at the end
    of the text). A full stop only ends a sentence before a space: "techcorp.io" is one word."""
    start = max((m.end() for m in _PROSE_SENTENCE_END.finditer(text, 0, hit.start())), default=0)
    end = _PROSE_SENTENCE_END.search(text, hit.end())
    return start, (end.start() if end else len(text)), (end.group(0) if end else None)


@dataclass(frozen=True)
class Guards:
    """The checks that discard a rule's hit, over the lower-cased text around it."""

    clause_break: re.Pattern[str]
    negated_request: re.Pattern[str]
    how_to_tail: re.Pattern[str]
    on_board_tail: re.Pattern[str]
    board_objects: frozenset[str]
    own_customers: re.Pattern[str]
    own_customers_before: re.Pattern[str]
    third_party_recipient: re.Pattern[str]
    glue_words: frozenset[str]
    tracking_verbs: frozenset[str]
    page_nouns: frozenset[str]
    broken: re.Pattern[str]
    just_reporting: re.Pattern[str]
    troubleshooting_margin: float
    troubleshooting: re.Pattern[str]
    practical_question: re.Pattern[str]
    naming_words: re.Pattern[str]
    identity_frame: re.Pattern[str]
    identity_request: re.Pattern[str]
    own_business: OwnBusiness
    signature_speech: re.Pattern[str]
    self_confirmed_text: re.Pattern[str]

    def asks_practical_question(self, spoken: str) -> bool:
        """One sentence of `spoken` (lower-cased, accent-folded, quotes taken out) is a plain product
        question that is not negative itself (guards_en.toml's practical_question)."""
        for sentence in _QUESTION_SENTENCE.findall(spoken):
            opened = sentence.strip().lstrip("¿¡-*( ")
            if self.practical_question.match(opened) and score_sentiment(opened) >= 0:
                return True
        return False

    def self_confirmed(self, text: str, hit: re.Match[str]) -> bool:
        """The message says the sign-in or session was the customer's own ("that was me, I'm in
        Lisbon for a wedding"): a login alert they are asking about, not a stranger in the account."""
        return bool(self.self_confirmed_text.search(text))

    def named(self, text: str, hit: re.Match[str]) -> bool:
        """Every rule's guard: the hit is a name the customer gave something."""
        if _quoted_name(text, hit):
            return True
        before = fold_accents(text[max(0, hit.start() - 40) : hit.start()])
        return bool(self.naming_words.search(before) or intl_guards().naming_words.search(before))

    def identity_question(self, text: str, hit: re.Match[str]) -> bool:
        """Every human_request rule's guard: the hit sits in a question about whether a person or a
        machine is answering ("am I chatting with a real person or an AI?"), in a message that asks
        for nothing."""
        start, end, mark = _sentence_of(text, hit)
        sentence = fold_accents(text[start:end])
        if mark is not None and mark != "?":
            return False
        if mark is None:
            # A chat message often drops the question mark ("r u a bot or a real person lol"): without
            # one, the sentence must open with the question itself.
            opened = self.who_answers_question(sentence)
            if opened is None or len(sentence[: opened.start()].split()) > 1:
                return False
        return self.asks_who_answers(sentence, fold_accents(text))

    def who_answers_question(self, folded: str) -> re.Match[str] | None:
        """The first question in `folded` (accent-folded, lower-cased) about whether a person or a
        machine answers ("are you a bot", "¿hablo con una persona?"), in any of the rules' languages."""
        found = [m for m in (self.identity_frame.search(folded), intl_guards().identity_frame.search(folded)) if m]
        return min(found, key=lambda m: m.start(), default=None)

    def asks_who_answers(self, sentence: str, message: str) -> bool:
        """`sentence` asks whether a person or a machine answers, and `message` requests nothing."""
        if self.who_answers_question(sentence) is None:
            return False
        intl = intl_guards()
        return not (self.identity_request.search(message) or intl.identity_request.search(message))

    def broken_page(self, text: str, hit: re.Match[str]) -> bool:
        """The hit names a page of ours (a page noun within the next three words, or a path of our site)
        and its sentence reports it broken, or the message says it only reports."""
        start, end, _ = _sentence_of(text, hit)
        in_path = text[hit.start() - 1 : hit.start()] == "/"
        if not in_path and not any(w in self.page_nouns for w in _WORD_RE.findall(text[hit.end() : end].lower())[:3]):
            return False
        return bool(self.broken.search(text[start:end])) or self.only_reports(text)

    def only_reports(self, text: str) -> bool:
        """The message says it asks for nothing and only reports (guards_en.toml's just_reporting)."""
        return bool(self.just_reporting.search(fold_accents(text.lower())))

    def signature_title(self, text: str, hit: re.Match[str]) -> bool:
        """The hit is on a line of the signature under a closing, a line that does not speak (a job
        title, a company: guards_en.toml's signature_speech)."""
        first = signature_line(text)
        if first is None or text.count("\n", 0, hit.start()) <= first:
            return False
        start = text.rfind("\n", 0, hit.start()) + 1
        end = text.find("\n", hit.end())
        return not self.signature_speech.search(fold_accents(text[start : end if end != -1 else len(text)]))

    def own_work(self, text: str, hit: re.Match[str]) -> bool:
        """The hit's sentence describes the customer's own work ("we're a payments start-up and we track
        every chargeback our customers file"), asks nothing of us, and the message asks a question
        (guards_en.toml's own_business)."""
        start, end, mark = _sentence_of(text, hit)
        sentence = fold_accents(text[start:end])
        folded = fold_accents(text)
        intl = intl_guards().own_business
        if not (self.own_business.describes(sentence) or intl.describes(sentence)):
            # ... or a plain statement, asking nothing of us, in a message that introduces the
            # customer's business ("We're a cyber insurance broker.", "gym owner here").
            if (mark is not None and "?" in mark) or "?" in sentence or asks_of_us(sentence):
                return False
            if not (self.own_business.introduction.search(folded) or intl.introduction.search(folded)):
                return False
        return "?" in text or bool(self.troubleshooting.search(folded))

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
        if _quoted_name(text, hit) or self.own_customers.match(text, hit.end()):
            return True
        # Stop at the end of the sentence: "Refund it. The board..." must not chain.
        after = _SENTENCE_END.split(text[hit.end() :], maxsplit=1)[0].lower()
        for count, word in enumerate(_WORD_RE.findall(after)):
            if word in self.board_objects:
                return True
            if count >= 2 or word in self.glue_words:
                break
        before = _SENTENCE_END.split(text[: hit.start()])[-1].lower()
        if self.own_customers_before.search(before):
            return True
        if self.third_party_recipient.search(before) and not asks_of_us(fold_accents(before)):
            return True
        return any(w in self.tracking_verbs for w in _WORD_RE.findall(before)[-2:])


_WORD_INTL = re.compile(r"[^\W\d_]+", re.UNICODE)
# An opening quote and up to 40 characters after it, an apostrophe between letters among them ("the
# reply ending 'if you'd rather speak with someone'": a contraction does not close the quote).
_QUOTED_NAME = re.compile(r"""['"](?:[^'"\n]|(?<=[^\W\d_])'(?=[^\W\d_])){0,40}$""")
# ... and its closing quote, on the same line within 40 characters after the hit; the same apostrophe
# between letters does not close it.
_CLOSING_QUOTE = {
    quote: re.compile(
        rf"""(?:[^{quote}\n]|(?<=[^\W\d_]){quote}(?=[^\W\d_])){{0,40}}(?:(?<![^\W\d_]){quote}|{quote}(?![^\W\d_]))"""
    )
    for quote in "'\""
}


_FIELD_REFERENCE = re.compile(r"\{[^{}\n]{0,40}$")


def _quoted_name(text: str, hit: re.Match[str]) -> bool:
    """The hit opens, or sits inside, a short quoted name that closes after it ("from 'Refund requested' to"),
    or a field reference in braces ("{Cost} * (1 - {Discount %}/100)", how formulas and templates name a field)."""
    brace = _FIELD_REFERENCE.search(text, max(0, hit.start() - 41), hit.start())
    if brace is not None and "}" in text[hit.end() : hit.end() + 40].split("\n", 1)[0]:
        return True
    opened = _QUOTED_NAME.search(text, max(0, hit.start() - 41), hit.start())
    if opened is None or (opened.group(0)[0] == "'" and text[opened.start() - 1 : opened.start()].isalpha()):
        return False  # no quote before it, or an apostrophe ("customer's refund")
    return _CLOSING_QUOTE[opened.group(0)[0]].match(text, hit.end()) is not None


@dataclass(frozen=True)
class OwnBusiness:
    """One language file's words for a sentence about the customer's own work (guard "own_business")."""

    subject: re.Pattern[str]
    work: re.Pattern[str]
    addressed: re.Pattern[str]
    demand: re.Pattern[str]
    introduction: re.Pattern[str]

    @classmethod
    def compile(cls, data: _GuardsFile | _IntlGuardsFile, where: str) -> OwnBusiness:
        return cls(
            subject=compile_pattern(data.own_business_subject, where=f"{where}: own_business_subject"),
            work=compile_pattern(data.own_business_work, where=f"{where}: own_business_work"),
            addressed=compile_pattern(data.own_business_addressed, where=f"{where}: own_business_addressed"),
            demand=compile_pattern(data.own_business_demand, where=f"{where}: own_business_demand"),
            introduction=compile_pattern(data.own_business_introduction, where=f"{where}: own_business_introduction"),
        )

    def describes(self, sentence: str) -> bool:
        """This file's words find the customer as subject or owner and a verb of their work in `sentence`,
        and neither file's words find anything addressed to us or a demand (a French sentence with an
        English "please" still asks something)."""
        if not (self.subject.search(sentence) and self.work.search(sentence)):
            return False
        return not asks_of_us(sentence)


def asks_of_us(sentence: str) -> bool:
    """Whether either file's words find something addressed to us or a demand in `sentence` (a French
    sentence with an English "please" still asks something)."""
    english, intl = guards().own_business, intl_guards().own_business
    return any(words.addressed.search(sentence) or words.demand.search(sentence) for words in (english, intl))


@dataclass(frozen=True)
class IntlGuards:
    """The guards of guards_intl.toml, over the accent-folded, lower-cased text."""

    board_objects: frozenset[str]
    card_nouns: frozenset[str]
    payment_card: re.Pattern[str]
    page_nouns: frozenset[str]
    broken: re.Pattern[str]
    naming_words: re.Pattern[str]
    identity_frame: re.Pattern[str]
    identity_request: re.Pattern[str]
    own_business: OwnBusiness
    negated_request: re.Pattern[str]

    def negated(self, text: str, hit: re.Match[str]) -> bool:
        """The request is negated right before it in its sentence ("kein Rückruf nötig", "pas besoin
        de m'appeler"); a question keeps it ("können Sie mich nicht zurückrufen?")."""
        start, _, mark = _sentence_of(text, hit)
        return mark is not None and "?" not in mark and bool(self.negated_request.search(text[start : hit.start()]))

    def board_object(self, text: str, hit: re.Match[str]) -> bool:
        if _quoted_name(text, hit):
            return True
        start, end, _ = _sentence_of(text, hit)
        before = _WORD_INTL.findall(text[start : hit.start()])[-3:]
        after = _WORD_INTL.findall(text[hit.end() : end])[:3]
        objects = self.board_objects
        if self.payment_card.search(text, start, end):
            objects = objects - self.card_nouns  # the card is a means of payment here
        return any(w in objects for w in (*before, *after))

    def broken_page(self, text: str, hit: re.Match[str]) -> bool:
        start, end, _ = _sentence_of(text, hit)
        sentence = text[start:end]
        words = set(_WORD_INTL.findall(sentence))
        if not words & self.page_nouns:
            return False
        return bool(self.broken.search(sentence)) or guards().only_reports(text)


@cache
def intl_guards() -> IntlGuards:
    """The guards of guards_intl.toml, read and checked once."""
    data = validate(_IntlGuardsFile, read(INTL_GUARDS_FILE), where=INTL_GUARDS_FILE)
    return IntlGuards(
        board_objects=frozenset(data.board_objects),
        card_nouns=frozenset(data.card_nouns),
        payment_card=compile_pattern(data.payment_card, where=f"{INTL_GUARDS_FILE}: payment_card"),
        page_nouns=frozenset(data.page_nouns),
        broken=compile_pattern(data.broken, where=f"{INTL_GUARDS_FILE}: broken"),
        naming_words=compile_pattern(data.naming_words, where=f"{INTL_GUARDS_FILE}: naming_words"),
        identity_frame=compile_pattern(data.identity_frame, where=f"{INTL_GUARDS_FILE}: identity_frame"),
        identity_request=compile_pattern(data.identity_request, where=f"{INTL_GUARDS_FILE}: identity_request"),
        own_business=OwnBusiness.compile(data, INTL_GUARDS_FILE),
        negated_request=compile_pattern(data.negated_request, where=f"{INTL_GUARDS_FILE}: negated_request"),
    )


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
        own_customers=compile_pattern(data.own_customers, where=f"{GUARDS_FILE}: own_customers"),
        own_customers_before=compile_pattern(data.own_customers_before, where=f"{GUARDS_FILE}: own_customers_before"),
        third_party_recipient=compile_pattern(
            data.third_party_recipient, where=f"{GUARDS_FILE}: third_party_recipient"
        ),
        glue_words=frozenset(data.glue_words),
        tracking_verbs=frozenset(data.tracking_verbs),
        page_nouns=frozenset(data.page_nouns),
        broken=compile_pattern(data.broken_page, where=f"{GUARDS_FILE}: broken_page"),
        just_reporting=compile_pattern(data.just_reporting, where=f"{GUARDS_FILE}: just_reporting"),
        troubleshooting_margin=data.troubleshooting_margin,
        troubleshooting=compile_pattern(
            data.troubleshooting_question, where=f"{GUARDS_FILE}: troubleshooting_question"
        ),
        practical_question=compile_pattern(data.practical_question, where=f"{GUARDS_FILE}: practical_question"),
        naming_words=compile_pattern(data.naming_words, where=f"{GUARDS_FILE}: naming_words"),
        identity_frame=compile_pattern(data.identity_frame, where=f"{GUARDS_FILE}: identity_frame"),
        identity_request=compile_pattern(data.identity_request, where=f"{GUARDS_FILE}: identity_request"),
        own_business=OwnBusiness.compile(data, GUARDS_FILE),
        signature_speech=compile_pattern(data.signature_speech, where=f"{GUARDS_FILE}: signature_speech"),
        self_confirmed_text=compile_pattern(data.self_confirmed, where=f"{GUARDS_FILE}: self_confirmed"),
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
    language: RuleLanguage = "en"

    def read(self, text: str) -> tuple[str | None, bool]:
        """The words of the first match no guard discards (whitespace collapsed), and whether a guard
        discarded an earlier match."""
        discarded = False
        for found in self.pattern.finditer(text):
            if not any(guard(text, found) for guard in self.guards):
                return " ".join(found.group(0).split()), discarded
            discarded = True
        return None, discarded

    def first_hit(self, text: str) -> str | None:
        """The words of the first match no guard discards, whitespace collapsed."""
        return self.read(text)[0]


@dataclass(frozen=True)
class ToneRule:
    id: str
    pattern: re.Pattern[str]
    active_below: float
    language: RuleLanguage = "en"


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[Rule, ...]
    tone_rules: tuple[ToneRule, ...]


def _entries(raw: object, key: str, file: str) -> list[tuple[str, object]]:
    if not isinstance(raw, list):
        raise GuardrailDataError(f"{file}: [[{key}]] must be a list of tables")
    return [(f"{file}: {key} {item.get('id', f'#{n + 1}')!r}", item) for n, item in enumerate(raw)]


@cache
def rule_book() -> RuleBook:
    """The rules of every rules_<lang>.toml, read, checked and compiled once."""
    g = guards()
    by_name: dict[GuardName, Guard] = {
        "negation": g.negated,
        "board_object": g.board_object,
        "how_to": g.how_to,
        "on_board": g.on_board,
        "broken_page": g.broken_page,
        "board_object_intl": intl_guards().board_object,
        "broken_page_intl": intl_guards().broken_page,
        "negation_intl": intl_guards().negated,
        "own_business": g.own_work,
        "self_confirmed": g.self_confirmed,
    }
    rules: list[Rule] = []
    tone_rules: list[ToneRule] = []
    for language, file in RULES_FILES.items():
        raw = read(file)
        unknown = set(raw) - {"fragments", "rule", "tone_rule"}
        if unknown:
            raise GuardrailDataError(f"{file}: unknown top-level keys {sorted(unknown)}")
        fragments = fragments_of(raw, where=file)
        for where, item in _entries(raw.get("rule", []), "rule", file):
            entry = validate(RuleEntry, item, where=where)
            if entry.language != language:
                raise GuardrailDataError(f"{where}: language {entry.language!r} in the {language!r} file")
            rules.append(
                Rule(
                    id=entry.id,
                    reason=entry.reason,
                    pattern=compile_any(entry.patterns, where=where, fragments=fragments),
                    # Every rule discards a name the customer gave something, but the one that
                    # reads quoted text on purpose (an injection is as live inside quotes).
                    guards=(
                        *(() if entry.reads_quoted_text else (g.named,)),
                        # A question about who answers is not a request for a person.
                        *((g.identity_question,) if entry.reason == "human_request" else ()),
                        # A job title in a signature is no request (never for security: fail closed).
                        *(() if entry.reads_quoted_text or entry.reason == "security" else (g.signature_title,)),
                        *(by_name[n] for n in entry.guards),
                    ),
                    reads_quoted_text=entry.reads_quoted_text,
                    examples=tuple(entry.examples),
                    language=language,
                )
            )
        for where, item in _entries(raw.get("tone_rule", []), "tone_rule", file):
            tone = validate(ToneRuleEntry, item, where=where)
            pattern = compile_any(tone.patterns, where=where, fragments=fragments)
            tone_rules.append(ToneRule(id=tone.id, pattern=pattern, active_below=tone.active_below, language=language))
    ids = [r.id if r.language == "en" else f"{r.language}:{r.id}" for r in rules]
    ids += [t.id if t.language == "en" else f"{t.language}:{t.id}" for t in tone_rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GuardrailDataError(f"rules files: duplicate rule ids {duplicates}")
    return RuleBook(rules=tuple(rules), tone_rules=tuple(tone_rules))


# ---------------------------------------------------------------------------------- the decision
def _negative_sentiment_hits(
    text: str, lowered: str, folded: str, sentiment: float, threshold: float, sure: str | None
) -> list[str]:
    hits: list[str] = []
    if sentiment < threshold:
        hits.append(f"negative_sentiment.score:{sentiment:.2f}")
    # Tone words are gated on the overall tone so "not the worst, honestly great" or "damn that was
    # fast, thanks!" do not escalate.
    for tone in rule_book().tone_rules:
        if sure is not None and tone.language not in ("en", sure):
            continue
        if sentiment < tone.active_below:
            found = tone.pattern.search(lowered if tone.language == "en" else folded)
            if found:
                hits.append(f"{tone.id}:{found.group(0)}")
    # A polite ALL-CAPS message ("HI SUPPORT TEAM, HOW DO I ADD A MEMBER? THANKS") is not shouting:
    # caps only count when the message is also negative, carries exclamation marks, or asks nothing
    # and says neither please nor thanks ("THIRD TIME THIS MONTH OUR AUTOMATIONS HAVE JUST STOPPED").
    statement = "?" not in text and sentiment <= 0 and not _POLITE & set(_WORD_INTL.findall(folded))
    if is_shouting(text) and (sentiment < 0 or "!" in text or "??" in text or statement):
        hits.append("negative_sentiment.shouting")
    g = guards()
    if (
        hits
        and all(hit.startswith(_FRUSTRATION_ONLY) for hit in hits)
        and sentiment >= threshold - g.troubleshooting_margin
        and (g.troubleshooting.search(folded) or g.asks_practical_question(folded))
    ):
        return []  # frustrated but asking the way forward: the agent can help
    return hits


# Please and thanks in the five languages: an ALL-CAPS message that says one is not shouting.
_POLITE = frozenset("please pls plz thanks thank thx favor bitte danke merci plait gracias obrigado obrigada".split())


# The negative signals frustration alone gives (guards_en.toml, troubleshooting_question): the lexicon's
# score and the generic angry words; any other tone rule is anger, contempt or distress.
_FRUSTRATION_ONLY = ("negative_sentiment.score:", "negative_sentiment.phrase:")


def reports_a_broken_page(lowered: str, folded: str) -> bool:
    """A sentence names a page, link or button of ours and says it is broken, in any of the five
    languages: a bug report ("the pricing page won't load"), not a question about what is on it."""
    g, intl = guards(), intl_guards()
    for sentence in _PROSE_SENTENCE_END.split(lowered):
        if set(_WORD_RE.findall(sentence)) & g.page_nouns and g.broken.search(sentence):
            return True
    for sentence in _PROSE_SENTENCE_END.split(folded):
        # German writes the page as the head of a compound: "Preisseite", "Startseite".
        words = _WORD_INTL.findall(sentence)
        named = set(words) & intl.page_nouns or any(w.endswith("seite") for w in words)
        if named and intl.broken.search(sentence):
            return True
    return False


Layer = Callable[[str], tuple[GuardrailReason, float] | None]


def evaluate_inbound(
    text: str,
    channel: str | None = None,
    *,
    negative_threshold: float = NEGATIVE_SENTIMENT_THRESHOLD,
    semantic: bool = True,
    layer: Layer | None = None,
) -> GuardrailDecision:
    """Decide whether the agent may answer an inbound message or must escalate it, and why.

    When several reasons fire, the first of `GUARDRAIL_REASONS` names the escalation; every hit
    stays in `matched`, highest reason first, for the audit. A message confidently written in a
    language outside SUPPORTED_LANGUAGES escalates with reason "language" whatever it says: the
    rules cannot read it, so nothing may vouch that the model can answer it. With `semantic`, a
    message no rule escalates is read by the learned layer (learned.py), which may escalate it
    ("learned.<reason>:<score>" in `matched`); it never overrules a rule, nor a guard: where a rule
    read words of a reason and a guard discarded every hit ("I don't want a refund", "a list called
    Refunds"), the layer may not escalate for that reason, and a message reporting one of our pages
    broken it does not escalate at all. `layer` replaces the learned layer (the benchmark passes
    cross-validated scores): the prepared text in, (reason, score) or None out.
    """
    prepared = prepare(text, channel)
    # The customer's tone is read on what they say, not on what they quote ("cards full of 'furious'").
    spoken = without_quoted(prepared)
    sentiment = score_sentiment(spoken)
    guess = detect_language(prepared)
    if guess.unsupported:
        return GuardrailDecision(
            action="escalate",
            reason="language",
            sentiment=sentiment,
            matched=[f"language.unsupported:{guess.language}:{guess.confidence:.2f}"],
            language=guess.language,
        )
    lowered = prepared.lower()
    folded = fold_accents(lowered)
    # English rules always run (customers write "refund" or "GDPR" in any language); another
    # language's rules are skipped only when the detector is sure the message is in a different one.
    sure = guess.language if guess.confidence >= SURE_OF_LANGUAGE else None
    # Only email loses text to prepare(); elsewhere the full view is the prepared text itself.
    full_lowered = full_text(text).lower() if channel in (None, "email") else lowered
    hits: dict[GuardrailReason, list[str]] = {}
    guarded: set[GuardrailReason] = set()  # reasons whose every hit a guard discarded
    for rule in rule_book().rules:
        if sure is not None and rule.language not in ("en", sure):
            continue
        phrase, discarded = rule.read(lowered if rule.language == "en" else folded)
        if phrase is None and rule.reads_quoted_text and full_lowered != lowered:
            phrase = rule.first_hit(full_lowered)
        if phrase is not None:
            hits.setdefault(rule.reason, []).append(f"{rule.id}:{phrase}")
        elif discarded:
            guarded.add(rule.reason)
    # A live credential pasted into a support channel is exposed, however the message is worded: a
    # person tells the customer to revoke it (read in the original case: key formats are).
    if contains_key(text):
        hits.setdefault("security", []).append("security.pasted_credential")
    spoken_lowered = spoken.lower()
    sentiment_hits = _negative_sentiment_hits(
        prepared, spoken_lowered, fold_accents(spoken_lowered), sentiment, negative_threshold, sure
    )
    if sentiment_hits:
        hits.setdefault("negative_sentiment", []).extend(sentiment_hits)
    if not hits and semantic:
        who_answers = guards().asks_who_answers(folded, folded)
        if who_answers:
            # "Are you a bot?": a question about who answers, which the reply answers (a person is
            # one message away); the layer may not read it as a request for one.
            guarded.add("human_request")
        if who_answers and len(folded.split()) <= WHO_ANSWERS_ONLY_WORDS:
            # ... and when that question is all the message says ("bist du eine KI?"), the layer has
            # nothing else to read: it scored such one-liners as legal or security.
            guarded.update(GUARDRAIL_REASONS)
        found = (layer or learned_escalation)(prepared)
        if found is not None and found[0] not in guarded and not reports_a_broken_page(lowered, folded):
            hits[found[0]] = [f"learned.{found[0]}:{found[1]:.2f}"]
    matched = [entry for reason in GUARDRAIL_REASONS for entry in hits.get(reason, [])]
    reason = next((r for r in GUARDRAIL_REASONS if r in hits), None)
    return GuardrailDecision(
        action="answer" if reason is None else "escalate",
        reason=reason,
        sentiment=sentiment,
        matched=matched,
        language=guess.language,
    )
