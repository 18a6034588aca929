"""Deterministic guardrails around the LLM: an inbound gate before the model runs, a reply check after it.

``evaluate_inbound`` decides whether the agent may answer a customer message or must hand the
conversation to a human, with a reason code; ``check_output`` blocks draft replies that quote
prices, promise refunds or unlisted features, leak the prompt, or carry secrets or someone else's
contact details. The rules and word lists are data files a support lead can review
(``activities/guardrails/data/*.toml``); the modules here are the engine:

- ``normalise``  text preparation (ASCII punctuation, an email's new words only)
- ``sentiment``  the lexicon scorer (``data/lexicon_en.toml``)
- ``language``   which language a message is in (py3langid's shipped model)
- ``rules``      the inbound rules engine (``data/rules_<lang>.toml`` for en/es/pt/fr/de, ``data/guards_en.toml``)
- ``learned``    the learned layer beside the rules (n-grams and a multilingual sentence encoder, trained
                 from ``data/learned_bank.jsonl``)
- ``classifier`` the model's structured-output reading of messages the rules let through
- ``output``     the reply check (``data/output_en.toml``)
- ``datafiles``  reading and validating the data files
- ``activities`` the Temporal activities that read the CRM (through repositories) and call the checks

Adding a rule: a ``[[rule]]`` in ``data/rules_en.toml`` with an example from the labelled set,
then ``python bench/guardrails_eval.py --errors``.
"""

from activities.guardrails.datafiles import GuardrailDataError
from activities.guardrails.language import SUPPORTED_LANGUAGES, detect_language, load_detector
from activities.guardrails.learned import learned_layer
from activities.guardrails.output import OutputCheck, check_output, reply_patterns
from activities.guardrails.rules import (
    NEGATIVE_SENTIMENT_THRESHOLD,
    GuardrailDecision,
    Rule,
    RuleBook,
    evaluate_inbound,
    rule_book,
)
from activities.guardrails.sentiment import lexicon, score_sentiment


def load_data() -> None:
    """Read and check every data file now (raises GuardrailDataError naming the file and entry)."""
    rule_book()
    lexicon()
    reply_patterns()
    load_detector()
    learned_layer()


__all__ = [
    "NEGATIVE_SENTIMENT_THRESHOLD",
    "SUPPORTED_LANGUAGES",
    "GuardrailDataError",
    "GuardrailDecision",
    "OutputCheck",
    "Rule",
    "RuleBook",
    "check_output",
    "detect_language",
    "evaluate_inbound",
    "load_data",
    "rule_book",
    "score_sentiment",
]
