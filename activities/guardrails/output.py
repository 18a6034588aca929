"""The reply check: what the model's draft may not say before it reaches a customer.

Blocks replies that quote prices, promise refunds, promise features the knowledge base does not
back, leak the system prompt, or carry a credential, a card number, or an email address / phone
number that is not the customer's. The language-specific patterns are data
(``data/output_en.toml``); the formats of contact details are here, those of secrets in
``secrets.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from pydantic import BaseModel, Field

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
from activities.guardrails.normalise import fold_accents, normalise
from activities.guardrails.rules import guards
from activities.guardrails.secrets import contains_secret

OUTPUT_FILE = "output_en.toml"
# es/pt/fr/de and currency notation, matched against the reply with its accents taken off.
INTL_OUTPUT_FILE = "output_intl.toml"

_CLAIM_MAX_TERMS = 6
_CLAIM_MIN_COVERAGE = 0.6  # share of X's key terms one passage must contain to back the claim
_LEAK_NGRAM = 10  # words of verbatim system prompt that count as a leak
_QUOTED_SPAN = re.compile(r"\"[^\"]{1,400}\"")
_TERM = re.compile(r"[a-z0-9][a-z0-9+#.-]*[a-z0-9+#]|[a-z0-9]")


class OutputCheck(BaseModel):
    """Outcome of the post-LLM check on a draft reply."""

    allowed: bool
    violations: list[str] = Field(default_factory=list)


class _Check(Entry):
    description: str = Field(min_length=1)
    patterns: list[PatternText] = Field(min_length=1)


class _ClaimCheck(_Check):
    stopwords: list[str]


class _Hedge(Entry):
    description: str = Field(min_length=1)
    pattern: PatternText


class _OutputFile(Entry):
    fragments: dict[str, PatternText] = {}
    price_statement: _Check
    refund_promise: _Check
    feature_promise: _Check
    capability_claim: _ClaimCheck
    leak_disclosure: _Check
    hedge: _Hedge


class _IntlOutputFile(Entry):
    fragments: dict[str, PatternText] = {}
    price_statement: _Check
    refund_promise: _Check
    hedge: _Hedge
    feature_promise: _Check
    feature_hedge: _Hedge


@dataclass(frozen=True)
class ReplyPatterns:
    price_statement: re.Pattern[str]
    refund_promise: re.Pattern[str]
    feature_promise: re.Pattern[str]
    capability_claim: re.Pattern[str]
    leak_disclosure: re.Pattern[str]
    hedge: re.Pattern[str]
    claim_stopwords: frozenset[str]
    intl_price_statement: re.Pattern[str]
    intl_refund_promise: re.Pattern[str]
    intl_hedge: re.Pattern[str]
    intl_feature_promise: re.Pattern[str]
    intl_feature_hedge: re.Pattern[str]


@cache
def reply_patterns() -> ReplyPatterns:
    """The patterns of output_en.toml and output_intl.toml, read, checked and compiled once."""
    raw = read(OUTPUT_FILE)
    intl_raw = read(INTL_OUTPUT_FILE)
    intl = validate(_IntlOutputFile, intl_raw, where=INTL_OUTPUT_FILE)
    intl_fragments = fragments_of(intl_raw, where=INTL_OUTPUT_FILE)
    data = validate(_OutputFile, raw, where=OUTPUT_FILE)
    fragments = fragments_of(raw, where=OUTPUT_FILE)

    def alternatives(key: str, check: _Check) -> re.Pattern[str]:
        return compile_any(check.patterns, where=f"{OUTPUT_FILE}: [{key}]", fragments=fragments)

    claim = alternatives("capability_claim", data.capability_claim)
    if claim.groups < len(data.capability_claim.patterns):  # check_output reads the claimed capability from a group
        raise GuardrailDataError(f"{OUTPUT_FILE}: [capability_claim]: every pattern needs a (?P<x>...) group")
    return ReplyPatterns(
        price_statement=alternatives("price_statement", data.price_statement),
        refund_promise=alternatives("refund_promise", data.refund_promise),
        feature_promise=alternatives("feature_promise", data.feature_promise),
        capability_claim=claim,
        leak_disclosure=alternatives("leak_disclosure", data.leak_disclosure),
        hedge=compile_pattern(data.hedge.pattern, where=f"{OUTPUT_FILE}: [hedge]", fragments=fragments),
        claim_stopwords=frozenset(data.capability_claim.stopwords),
        intl_price_statement=compile_any(
            intl.price_statement.patterns, where=f"{INTL_OUTPUT_FILE}: [price_statement]", fragments=intl_fragments
        ),
        intl_refund_promise=compile_any(
            intl.refund_promise.patterns, where=f"{INTL_OUTPUT_FILE}: [refund_promise]", fragments=intl_fragments
        ),
        intl_hedge=compile_pattern(intl.hedge.pattern, where=f"{INTL_OUTPUT_FILE}: [hedge]", fragments=intl_fragments),
        intl_feature_promise=compile_any(
            intl.feature_promise.patterns, where=f"{INTL_OUTPUT_FILE}: [feature_promise]", fragments=intl_fragments
        ),
        intl_feature_hedge=compile_pattern(
            intl.feature_hedge.pattern, where=f"{INTL_OUTPUT_FILE}: [feature_hedge]", fragments=intl_fragments
        ),
    )


# ---------------------------------------------------------------------------------- feature claims
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


def _key_terms(text: str, stopwords: frozenset[str]) -> list[str]:
    terms: list[str] = []
    for word in _TERM.findall(text.lower()):
        if len(word) < 3 or word in stopwords:
            continue
        stem = _stem(word)
        if stem not in terms:
            terms.append(stem)
    return terms


def _claim_supported(claim: str, passages: Sequence[set[str]], stopwords: frozenset[str]) -> bool:
    """At least 60% of the claim's first key terms are in one passage (lexical: may block a paraphrase)."""
    terms = _key_terms(claim, stopwords)[:_CLAIM_MAX_TERMS]
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
    return not _prompt_grams(system_prompt).isdisjoint(_word_ngrams(reply, _LEAK_NGRAM))


@lru_cache(maxsize=16)
def _prompt_grams(system_prompt: str) -> frozenset[tuple[str, ...]]:
    """The prompt's word n-grams, computed once per prompt text (the prompt is the same every reply)."""
    # Quoted lines in the system prompt are scripted wording the agent is *meant* to say
    # ("say: \"I can't share pricing here...\""), so reusing them is not a leak.
    unscripted = _QUOTED_SPAN.sub(" | ", normalise(system_prompt))
    grams: set[tuple[str, ...]] = set()
    for chunk in unscripted.split("|"):
        grams |= _word_ngrams(chunk, _LEAK_NGRAM)
    return frozenset(grams)


# ---------------------------------------------------------------------------------- secrets and PII
# A reply must never carry a credential (ours, from a poisoned passage, or one a customer pasted),
# a full card number, or another person's email address or phone number (secrets.py holds the
# credential formats). These run on the reply in its original case: key formats are case-sensitive.
# 13-19 digits, optionally grouped by spaces or dashes, starting like a card (2-6): Luhn decides.
_CARD_CANDIDATE = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
_EMAIL_ADDRESS = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# International (+country code) or North-American grouped numbers; bare digit runs (invoice, order
# and ticket numbers, dates) are not phone numbers here.
_PHONE_NUMBER = re.compile(
    r"(?<![\w+])\+\d(?:[\s().-]{0,2}\d){6,14}\b"
    r"|(?<![\w-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\w-])"
)


# National formats without a country code, in the languages we answer in: French "06 12 34 56 78",
# Brazilian "(11) 98765-4321"; and any number of 8+ digits right after a phone word ("Tel. 0171
# 2345678", "llámenos al 612 345 678", "pelo celular 11 98765 4321"), read on the accent-folded text.
_NATIONAL_PHONE = re.compile(r"(?<![\w+])0[1-9](?:[ .]\d{2}){4}(?![\w-])|(?<![\w-])\(\d{2}\)\s?\d{4,5}-\d{4}(?![\w-])")
_PHONE_AFTER_WORD = re.compile(
    r"(?i:\b(?:tel|telefono|telefone|telefon|phone|movil|celular|handy|mobil|mobile|portable|whatsapp|fax|"
    r"llam\w*|ligu\w*|ruf\w*|appel\w*|joindre|call|text)\b\.?:?)\s*"
    r"(?:(?:al|au|unter|pelo|pela|no|at|on|el|o|le|la|an)\s+){0,2}(\+?\d[\d\s./()-]{6,18}\d)"
)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _contains_card_number(reply: str) -> bool:
    for found in _CARD_CANDIDATE.finditer(reply):
        digits = re.sub(r"\D", "", found.group(0))
        if 13 <= len(digits) <= 19 and _luhn_valid(digits):
            return True
    return False


def _phone_digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _same_phone(a: str, b: str) -> bool:
    """Equal numbers, allowing one side without its country code (+1 415... vs (415) ..., +49 171... vs 0171 ...)."""
    if len(a) < 7 or len(b) < 7:
        return False
    # A national trunk prefix ("0171", "06 12") is dropped when the country code is dialled.
    a, b = a.lstrip("0"), b.lstrip("0")
    return a == b or (min(len(a), len(b)) >= 9 and (a.endswith(b) or b.endswith(a)))


def _foreign_contacts(reply: str, allowed: Sequence[str]) -> bool:
    """An email address or phone number in the reply that is not in `allowed`."""
    emails = {a.strip().lower() for a in allowed if "@" in a}
    phones = [_phone_digits(a) for a in allowed if "@" not in a and _phone_digits(a)]
    if any(m.group(0).lower() not in emails for m in _EMAIL_ADDRESS.finditer(reply)):
        return True
    numbers = [m.group(0) for m in _PHONE_NUMBER.finditer(reply)]
    numbers += [m.group(0) for m in _NATIONAL_PHONE.finditer(reply)]
    numbers += [m.group(1) for m in _PHONE_AFTER_WORD.finditer(fold_accents(reply))]
    for number in numbers:
        digits = _phone_digits(number)
        if len(digits) >= 8 and not any(_same_phone(digits, phone) for phone in phones):
            return True
    return False


# ---------------------------------------------------------------------------------- the check
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
    p = reply_patterns()
    clause_before = guards().clause_before

    def hedged(sentence: str, start: int) -> bool:
        # "I can't promise a refund" is an honest non-promise.
        return bool(p.hedge.search(clause_before(sentence, start)))

    original = normalise(reply)
    text = original.lower()
    folded = fold_accents(text)
    violations: list[str] = []

    if p.price_statement.search(text) or p.intl_price_statement.search(folded):
        violations.append("states_price")

    for sentence in _sentences(text):
        found = p.refund_promise.search(sentence)
        if found and not hedged(sentence, found.start()):
            violations.append("promises_refund")
            break
    else:
        for sentence in _sentences(folded):
            found = p.intl_refund_promise.search(sentence)
            if found and not p.intl_hedge.search(clause_before(sentence, found.start())):
                violations.append("promises_refund")
                break

    passages = [{_stem(w) for w in _TERM.findall(passage.lower())} for passage in kb_passages]
    roadmap_passages = [
        terms
        for terms, raw in zip(passages, kb_passages, strict=True)
        if p.feature_promise.search(normalise(raw).lower())
        or p.intl_feature_promise.search(fold_accents(normalise(raw).lower()))
    ]
    for sentence in _sentences(text):
        promise = p.feature_promise.search(sentence)
        if promise and not hedged(sentence, promise.start()):
            # A forward-looking statement is only fine when the KB itself announces it.
            if not _claim_supported(sentence, roadmap_passages, p.claim_stopwords):
                violations.append("promises_unlisted_feature")
                break
        claim = p.capability_claim.search(sentence)
        if claim and not hedged(sentence, claim.start()):
            subject = next(g for g in claim.groups() if g)
            if not _claim_supported(subject, passages, p.claim_stopwords):
                violations.append("promises_unlisted_feature")
                break
    if "promises_unlisted_feature" not in violations:
        for sentence in _sentences(folded):
            promise = p.intl_feature_promise.search(sentence)
            if (
                promise
                and not p.intl_feature_hedge.search(clause_before(sentence, promise.start()))
                and not _claim_supported(sentence, roadmap_passages, p.claim_stopwords)
            ):
                violations.append("promises_unlisted_feature")
                break

    # Talking *about* one's instructions is flagged even when the prompt text is not supplied.
    if p.leak_disclosure.search(text) or (system_prompt and _leaks_prompt(text, system_prompt)):
        violations.append("leaks_system_prompt")

    if contains_secret(original):
        violations.append("contains_secret")
    if _contains_card_number(original):
        violations.append("contains_card_number")
    documented = [m.group(0) for kb in kb_passages for m in _EMAIL_ADDRESS.finditer(normalise(kb))]
    documented += [m.group(0) for kb in kb_passages for m in _PHONE_NUMBER.finditer(normalise(kb))]
    if _foreign_contacts(original, [*customer_contacts, *documented]):
        violations.append("discloses_contact")

    return OutputCheck(allowed=not violations, violations=violations)
