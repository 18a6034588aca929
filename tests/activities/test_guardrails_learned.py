"""The learned layer beside the inbound rules (activities/guardrails/learned.py).

What it promises whatever its figures: it only adds escalations, names a guardrail reason, is
trained on tuning halves only (its packaged bank is exactly what bench/guardrails_eval.py builds
from them, and shares no text with the held-out half), is deterministic, and can be switched off.
Its figures are gated as counts from 10-fold cross-validation on the tuning set (the same numbers
`python bench/guardrails_eval.py --sets tuning --calibrate` prints).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from activities.guardrails import evaluate_inbound, learned
from core.settings import Settings
from core.vocabulary import GUARDRAIL_REASONS

REPO = Path(__file__).resolve().parents[2]
HARD_REASONS = ("pricing", "refund", "legal", "security")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guardrails_eval", REPO / "bench" / "guardrails_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("guardrails_eval", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tuning(bench: ModuleType) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = bench.load_rows(bench.SETS["tuning"])
    return rows


def test_the_packaged_bank_is_built_from_the_tuning_halves(bench: ModuleType) -> None:
    # Out of date: run `python bench/guardrails_eval.py --write-bank`.
    assert learned.bank_rows() == bench.bank_from_sources()


def test_the_bank_shares_no_text_with_the_held_out_set() -> None:
    held_out = REPO / "bench" / "data" / "guardrails" / "held_out.jsonl"
    with held_out.open(encoding="utf-8") as fh:
        held_texts = {json.loads(line)["text"].strip() for line in fh if line.strip()}
    bank_texts = {str(row["text"]).strip() for row in learned.bank_rows()}
    rule_texts = {example.strip() for example in _rule_example_texts()}
    assert not bank_texts & held_texts
    assert not rule_texts & held_texts


def _rule_example_texts() -> list[str]:
    from activities.guardrails.rules import rule_book

    return [text for rule in rule_book().rules for text in rule.examples]


def test_the_layer_only_adds_escalations(tuning: list[dict[str, object]]) -> None:
    added = 0
    for row in tuning:
        rules = evaluate_inbound(str(row["text"]), str(row["channel"]), semantic=False)
        both = evaluate_inbound(str(row["text"]), str(row["channel"]), semantic=True)
        if rules.action == "escalate":
            assert (both.action, both.reason, both.matched) == (rules.action, rules.reason, rules.matched)
        elif both.action == "escalate":
            added += 1
            assert both.reason in GUARDRAIL_REASONS
            assert len(both.matched) == 1 and both.matched[0].startswith(f"learned.{both.reason}:")
    assert added >= 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # A paraphrase no rule lists (checked below). Written for this test before scoring: of five
        # such probes the rules missed, the layer as shipped catches this one; a French, a German
        # and a Spanish refund request and an account-takeover sign score below its threshold.
        ("what would 25 seats on the business tier set our company back each year", "pricing"),
    ],
)
def test_the_layer_reads_wording_no_rule_lists(text: str, reason: str) -> None:
    assert evaluate_inbound(text, "web_form", semantic=False).action == "answer"
    decision = evaluate_inbound(text, "web_form")
    assert (decision.action, decision.reason) == ("escalate", reason), decision.matched


@pytest.mark.parametrize(
    "text",
    [
        "how do i add a checklist to a card?",
        "¿Cómo exporto un tablero a CSV?",
        "Wie lade ich unsere Rechnungen herunter?",
        "thanks, that fixed it!",
    ],
)
def test_plain_how_tos_stay_with_the_agent(text: str) -> None:
    decision = evaluate_inbound(text, "whatsapp")
    assert decision.action == "answer", decision.matched


def test_training_is_deterministic() -> None:
    examples = [*learned.examples_of(learned.bank_rows()), *learned.rule_examples()]
    text = learned.features("could you send the funds back for the seats we never used", "web_form")
    first = learned.LearnedLayer(examples).scores(text)
    second = learned.LearnedLayer(examples).scores(text)
    assert first.tolist() == second.tolist()


def test_the_setting_switches_the_layer_off() -> None:
    assert Settings().guardrails_semantic_enabled is True
    assert Settings(guardrails_semantic_enabled=False).guardrails_semantic_enabled is False
    text = "what would 25 seats on the business tier set our company back each year"
    assert evaluate_inbound(text, "web_form", semantic=False).action == "answer"
    assert evaluate_inbound(text, "web_form", semantic=True).action == "escalate"


def test_cross_validated_counts_on_the_tuning_set(bench: ModuleType, tuning: list[dict[str, object]]) -> None:
    """The regression gate for generalisation: 10-fold CV, counts (not times)."""
    oof = learned.out_of_fold(tuning, bench.extra_examples())
    alone_caught = sum(
        1 for row, o in zip(tuning, oof, strict=True) if o and row["expected_reason"] and o[1] >= learned.THRESHOLD
    )
    alone_false = sum(
        1 for row, o in zip(tuning, oof, strict=True) if o and not row["expected_reason"] and o[1] >= learned.THRESHOLD
    )
    assert alone_caught >= 140, alone_caught  # of 244 escalations, the layer alone (147 when written)
    assert alone_false <= 3, alone_false  # of 223 benign (2 when written)
    result = bench.evaluate(tuning, learned=oof)  # rules, plus the layer where they answer
    assert sum(result["misses"].get(r, 0) for r in HARD_REASONS) <= 2, result["misses"]  # 1 when written
    assert result["false_escalations"] <= 7, result["false_escalations"]  # 6 when written
