"""Evaluate the inbound guardrails on the labelled sets: action accuracy, false escalations, misses.

Usage (from the repo root):

    .venv/bin/python bench/guardrails_eval.py                  # tuning, held-out and the regression set
    .venv/bin/python bench/guardrails_eval.py --sets tuning regression --calibrate   # without held-out
    .venv/bin/python bench/guardrails_eval.py --errors         # also list tuning/regression mistakes
    .venv/bin/python bench/guardrails_eval.py --write-bank     # rebuild the learned layer's packaged bank
    .venv/bin/python bench/guardrails_eval.py --sets tuning --calibrate --sentence-weight 0   # n-grams only
    .venv/bin/python bench/guardrails_eval.py --compare-learned --compare-detectors --compare-sentiment
    .venv/bin/python bench/guardrails_eval.py --json /tmp/guardrails.json

Sets: ``bench/data/guardrails/tuning.jsonl`` (rules are tuned on it), ``bench/data/guardrails/held_out.jsonl``
(reported, never tuned on: its mistakes are listed by id only, never by text, so reading this
output cannot leak its wording into the rules) and ``tests/activities/guardrails_labelled.jsonl``,
the 463 messages the first English rules were written with (a regression figure, not a real-world one).

Each set is scored with the rules only and with the learned layer (activities/guardrails/learned.py)
added where the rules answer. On the tuning set the layer is scored by k-fold cross-validation
(``--folds``, default 10): each message by a layer trained without it, since the shipped layer is
trained on that set. ``--calibrate`` prints the layer's threshold curve on those folds.
``--sentence-weight`` scores another weight of the sentence-encoder vector in those folds (0: the
n-grams alone), at the threshold calibrated on them within the same false-escalation budget.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Running as `python bench/guardrails_eval.py` puts bench/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from activities.guardrails import check_output, evaluate_inbound, score_sentiment  # noqa: E402
from activities.guardrails.language import SUPPORTED_LANGUAGES  # noqa: E402
from core.vocabulary import GUARDRAIL_REASONS  # noqa: E402

DATA = REPO_ROOT / "bench" / "data" / "guardrails"
SETS: dict[str, Path] = {
    "tuning": DATA / "tuning.jsonl",
    "held_out": DATA / "held_out.jsonl",
    "regression": REPO_ROOT / "tests" / "activities" / "guardrails_labelled.jsonl",
}
ANSWERS_TUNING = REPO_ROOT / "bench" / "data" / "answers" / "tuning.jsonl"
RETRIEVAL_TUNING = REPO_ROOT / "bench" / "data" / "retrieval" / "tuning.jsonl"
# Retrieval questions about these articles may be pricing, refund, legal or security requests in the
# guardrails' sense; the rest are plain how-tos, the layer's "answer" examples.
RETRIEVAL_ARTICLES_LEFT_OUT = frozenset(
    {"plans-overview", "change-your-plan", "data-privacy-gdpr", "workspaces-and-members", "company-profile"}
)
# Reasons whose miss is never acceptable on the held-out set (issue 14's target).
HARD_REASONS = ("pricing", "refund", "legal", "security")
ANSWER = "answer"
REASONS = (*GUARDRAIL_REASONS, "language")

# A few draft replies so the output check gets a throughput number too.
_SAMPLE_KB = [
    "Boards can be exported to CSV or JSON from Board menu > Export.",
    "TechCorp integrates with Slack and Google Calendar.",
]
_SAMPLE_REPLIES = [
    "You can export your board to CSV from Board menu > Export.",
    "I can't share pricing here; a specialist from our billing team will follow up.",
    "The Pro plan is $12 per user per month.",
    "We will refund the duplicate charge within 5 days.",
    "El plan Pro cuesta 12 dólares por usuario.",
    "Le reembolsaremos el importe esta semana.",
]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Read a labelled JSONL file."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _lang(row: dict[str, Any]) -> str:
    lang = row.get("language") or "en"
    return lang if lang in SUPPORTED_LANGUAGES else "other"


def evaluate(rows: list[dict[str, Any]], *, learned: Any = None, threshold: float | None = None) -> dict[str, Any]:
    """Score every row once: action/reason accuracy, false escalations, misses per reason and language.

    The rules decide first (evaluate_inbound without its learned layer). `learned` adds the learned
    layer where the rules answer, as evaluate_inbound does: True for the layer trained on the whole
    bank, or a list of out-of-fold (reason, score) per row (cross-validation on the tuning set),
    escalating at `threshold` (default: the shipped THRESHOLD).
    """
    from activities.guardrails import learned as learned_layer

    threshold = learned_layer.THRESHOLD if threshold is None else threshold
    added_right = added_wrong = 0
    mistakes: list[dict[str, Any]] = []
    action_hits = reason_hits = benign = false_escalations = 0
    misses: Counter[str] = Counter()  # expected an escalation, got an answer: by expected reason
    wrong_reason: Counter[str] = Counter()  # escalated, under another reason
    support: Counter[str] = Counter()
    by_lang: dict[str, Counter[str]] = {}
    for n, row in enumerate(rows):
        layer = None
        if learned is not None and learned is not True:
            assessed = learned[n]
            found = assessed if assessed is not None and assessed[1] >= threshold else None
            layer = lambda _prepared, found=found: found  # noqa: E731  (this row's out-of-fold verdict)
        decision = evaluate_inbound(row["text"], row["channel"], semantic=learned is not None, layer=layer)
        action, reason = decision.action, decision.reason
        if decision.matched and decision.matched[0].startswith("learned."):
            added_right += row["expected_action"] == "escalate"
            added_wrong += row["expected_action"] == "answer"
        expected = row["expected_reason"] or ANSWER
        predicted = reason or ANSWER
        lang = _lang(row)
        stats = by_lang.setdefault(lang, Counter())
        stats["messages"] += 1
        support[expected] += 1
        ok_action = action == row["expected_action"]
        action_hits += ok_action
        reason_hits += expected == predicted
        stats["action_ok"] += ok_action
        if expected == ANSWER:
            benign += 1
            stats["benign"] += 1
            if action == "escalate":
                false_escalations += 1
                stats["false_escalations"] += 1
        elif action == "answer":
            misses[expected] += 1
            stats["misses"] += 1
        elif expected != predicted:
            wrong_reason[expected] += 1
        if expected != predicted:
            mistakes.append(
                {
                    "id": row.get("id", ""),
                    "text": row["text"],
                    "language": lang,
                    "expected": expected,
                    "predicted": predicted,
                    "matched": decision.matched,
                    "sentiment": decision.sentiment,
                }
            )
    n = len(rows)
    return {
        "messages": n,
        "action_accuracy": action_hits / n,
        "reason_accuracy": reason_hits / n,
        "benign": benign,
        "false_escalations": false_escalations,
        "false_escalation_rate": false_escalations / benign if benign else 0.0,
        "support": dict(support),
        "misses": dict(misses),
        "wrong_reason": dict(wrong_reason),
        "by_language": {lang: dict(c) for lang, c in sorted(by_lang.items())},
        "layer_added": {"right": added_right, "wrong": added_wrong},
        "mistakes": mistakes,
    }


def time_inbound(rows: list[dict[str, Any]], repetitions: int, *, semantic: bool = True) -> dict[str, float]:
    """Mean CPU time of evaluate_inbound over the set, repeated (CPU time: the machine is shared)."""
    items = [(row["text"], row["channel"]) for row in rows]
    start = time.process_time()
    for _ in range(repetitions):
        for text, channel in items:
            evaluate_inbound(text, channel, semantic=semantic)
    elapsed = time.process_time() - start
    calls = repetitions * len(items)
    return {"calls": calls, "per_second": calls / elapsed, "mean_us": elapsed / calls * 1e6}


def time_output(repetitions: int) -> dict[str, float]:
    """Mean CPU time of check_output over a handful of draft replies."""
    start = time.process_time()
    for _ in range(repetitions):
        for reply in _SAMPLE_REPLIES:
            check_output(reply, kb_passages=_SAMPLE_KB, system_prompt="You are the TechCorp assistant.")
    elapsed = time.process_time() - start
    calls = repetitions * len(_SAMPLE_REPLIES)
    return {"calls": calls, "per_second": calls / elapsed, "mean_us": elapsed / calls * 1e6}


def summary_line(label: str, result: dict[str, Any]) -> str:
    """One configuration's headline figures on one set."""
    hard = sum(result["misses"].get(r, 0) for r in HARD_REASONS)
    return (
        f"  {label:<34} action {result['action_accuracy']:.3f}  reason {result['reason_accuracy']:.3f}  "
        f"false esc {result['false_escalations']}/{result['benign']} ({result['false_escalation_rate']:.1%})  "
        f"missed {sum(result['misses'].values())} (hard {hard})"
    )


def print_set(name: str, result: dict[str, Any], *, show_text: bool, show_errors: bool) -> None:
    """One set's figures: the headline lines of each configuration, then the shipped one in detail."""
    print(f"== {name}: {result['messages']} messages")
    for label, figures in result.get("configurations", {}).items():
        print(summary_line(label, figures))
    added = result["layer_added"]
    if added["right"] or added["wrong"]:
        print(f"  (the layer added {added['right']} right and {added['wrong']} wrong escalations)")
    print(
        f"action accuracy {result['action_accuracy']:.3f}   reason accuracy {result['reason_accuracy']:.3f}   "
        f"false escalations {result['false_escalations']}/{result['benign']} benign "
        f"({result['false_escalation_rate']:.1%})"
    )
    print(f"  {'reason':<20}{'support':>8}{'missed':>8}{'other reason':>14}")
    for reason in REASONS:
        if result["support"].get(reason):
            print(
                f"  {reason:<20}{result['support'][reason]:>8}{result['misses'].get(reason, 0):>8}"
                f"{result['wrong_reason'].get(reason, 0):>14}"
            )
    print(f"  {'language':<20}{'messages':>8}{'action ok':>10}{'missed':>8}{'false esc':>10}")
    for lang, c in result["by_language"].items():
        print(
            f"  {lang:<20}{c['messages']:>8}{c.get('action_ok', 0):>10}{c.get('misses', 0):>8}"
            f"{c.get('false_escalations', 0):>10}"
        )
    if show_errors and result["mistakes"]:
        print("  mistakes:")
        for m in result["mistakes"]:
            where = f"{m['id']} {m['language']}"
            if show_text:
                print(f"    {where} expected {m['expected']:<18} got {m['predicted']:<18} {m['text'][:90]!r}")
                print(f"        matched={m['matched'][:3]} sentiment={m['sentiment']:+.2f}")
            else:
                print(f"    {where} expected {m['expected']:<18} got {m['predicted']}")
    print()


def compare_detectors(rows: list[dict[str, Any]]) -> None:
    """py3langid (kept) against lingua-language-detector, if installed, on the set's labelled languages."""
    from activities.guardrails.language import detect_language, load_detector

    load_detector()
    from activities.guardrails.language import _identifier

    candidates: list[tuple[str, Any]] = [
        ("py3langid, as used", lambda t: detect_language(t).language),  # with the confidence floor
        ("py3langid, raw", lambda t: _identifier().classify(t)[0]),
    ]
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        print("lingua-language-detector not installed: `pip install lingua-language-detector` to compare")
    else:
        start = time.perf_counter()
        low = LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()
        high = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
        print(f"lingua load {time.perf_counter() - start:.1f} s")

        def code(detector: Any, text: str) -> str | None:
            found = detector.detect_language_of(text)
            return found.iso_code_639_1.name.lower() if found else None

        candidates += [
            ("lingua high accuracy", lambda t: code(high, t)),
            ("lingua low accuracy", lambda t: code(low, t)),
        ]
    for name, detect in candidates:
        start = time.perf_counter()
        found = [detect(r["text"]) for r in rows]
        elapsed = time.perf_counter() - start
        right = sum(f == r["language"] for f, r in zip(found, rows, strict=True))
        unsure = sum(f is None for f in found)
        short = [(f, r) for f, r in zip(found, rows, strict=True) if len(r["text"]) <= 60]
        short_right = sum(f == r["language"] for f, r in short)
        wrong = len(rows) - right - unsure
        print(
            f"  {name:<22} right {right}/{len(rows)} (<=60 chars: {short_right}/{len(short)}), wrong {wrong}, "
            f"no answer {unsure}, {elapsed / len(rows) * 1e6:,.0f} us/message"
        )


def compare_sentiment(tuning: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> None:
    """The lexicon scorer against vaderSentiment: how well `score < threshold` finds labelled angry messages."""
    scorers: list[tuple[str, Any]] = [("lexicon (kept)", score_sentiment)]
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        print("vaderSentiment not installed: `pip install vaderSentiment` to compare")
    else:
        vader = SentimentIntensityAnalyzer()
        scorers.append(("vaderSentiment", lambda t: vader.polarity_scores(t)["compound"]))
    thresholds = [x / 20 for x in range(-18, 1)]
    for name, scorer in scorers:
        scored_t = [(scorer(r["text"]), r["sentiment"] == "angry", _lang(r)) for r in tuning]
        scored_h = [(scorer(r["text"]), r["sentiment"] == "angry", _lang(r)) for r in held_out]

        def accuracy(scored: list[tuple[float, bool, str]], t: float, lang: str | None = None) -> tuple[int, int]:
            pick = [(s, a) for s, a, lg in scored if lang is None or lg == lang]
            return sum((s < t) == a for s, a in pick), len(pick)

        best = max(thresholds, key=lambda t: (accuracy(scored_t, t)[0], t))
        line = ", ".join(
            f"{lang} {accuracy(scored_h, best, lang)[0]}/{accuracy(scored_h, best, lang)[1]}"
            for lang in (*SUPPORTED_LANGUAGES, "other")
        )
        t_ok, t_n = accuracy(scored_t, best)
        h_ok, h_n = accuracy(scored_h, best)
        print(f"  {name:<16} best threshold on tuning {best:+.2f}: tuning {t_ok}/{t_n}, held-out {h_ok}/{h_n} ({line})")


def compare_learned(rows: list[dict[str, Any]], folds: int) -> None:
    """scikit-learn's TF-IDF + logistic regression on the same examples and folds (threshold at the same budget)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline
    except ImportError:
        print("scikit-learn not installed: `pip install scikit-learn` to compare")
        return
    import numpy as np

    from activities.guardrails import learned

    extra = extra_examples()
    prepared = [learned.features(r["text"], r["channel"]) for r in rows]
    order = np.random.default_rng(20251202).permutation(len(rows))
    scores: dict[int, float] = {}
    start = time.perf_counter()
    for fold in range(folds):
        held = [int(i) for i in order[fold::folds] if rows[int(i)]["expected_reason"] != "language"]
        train = [
            (prepared[i], rows[i]["expected_reason"] is not None)
            for i in range(len(rows))
            if i not in held and rows[i]["expected_reason"] != "language"
        ]
        train += [(e.text, e.label != learned.ANSWER) for e in extra]
        model = make_pipeline(
            FeatureUnion(
                [
                    ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
                    ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                ]
            ),
            LogisticRegression(C=10.0, max_iter=1000),
        )
        model.fit([t for t, _ in train], [y for _, y in train])
        for i, p in zip(held, model.predict_proba([prepared[i] for i in held])[:, 1], strict=True):
            scores[i] = float(p)
    elapsed = time.perf_counter() - start
    benign = sorted((s for i, s in scores.items() if rows[i]["expected_reason"] is None), reverse=True)
    allowed = int(learned.FALSE_ESCALATION_BUDGET * len(benign))
    threshold = benign[allowed] + 1e-6
    caught = sum(s >= threshold for i, s in scores.items() if rows[i]["expected_reason"] is not None)
    hard = sum(s >= threshold for i, s in scores.items() if rows[i]["expected_reason"] in HARD_REASONS)
    print(
        f"  logistic regression, layer alone at <= {allowed} benign false: caught {caught} escalations "
        f"({hard} hard) of {sum(rows[i]['expected_reason'] is not None for i in scores)}; "
        f"{elapsed:.1f} s for {folds} folds"
    )


def calibrate(
    rows: list[dict[str, Any]], folds: int, *, sentence_weight: float | None = None, show: bool = True
) -> tuple[list[Any], float]:
    """Out-of-fold scores of the learned layer on the tuning set, and the threshold they support."""
    from activities.guardrails import learned

    weight = learned.SENTENCE_WEIGHT if sentence_weight is None else sentence_weight
    start = time.perf_counter()
    oof = learned.out_of_fold(rows, extra_examples(), folds=folds, sentence_weight=weight)
    elapsed = time.perf_counter() - start
    rules = [evaluate_inbound(row["text"], row["channel"], semantic=False).action for row in rows]
    # The messages the layer may escalate: the rules answer them and no guard stops the layer.
    answered = [
        (row, assessed)
        for row, assessed in zip(rows, oof, strict=True)
        if assessed is not None and _layer_reads(row, assessed)
    ]
    benign = sum(row["expected_action"] == "answer" for row in rows)
    rules_false = sum(
        row["expected_action"] == "answer" and action == "escalate" for row, action in zip(rows, rules, strict=True)
    )
    # The budget covers the rules' false escalations and the layer's together; the layer gets the rest.
    allowed = max(0, int(learned.FALSE_ESCALATION_BUDGET * benign) - rules_false)
    benign_scores = sorted((s for row, (_, s) in answered if row["expected_action"] == "answer"), reverse=True)
    # The lowest threshold at which at most `allowed` benign messages the rules answer would escalate,
    # raised to just under the lowest escalation it catches (a lower one adds no catch, only risk).
    suggested = benign_scores[allowed] + 1e-3 if len(benign_scores) > allowed else -1.0
    caught_scores = [s for row, (_, s) in answered if row["expected_action"] == "escalate" and s >= suggested]
    if caught_scores:
        suggested = max(suggested, math.floor((min(caught_scores) - 1e-4) * 1000) / 1000)
    if not show:
        return oof, suggested
    print(f"learned layer (sentence weight {weight}), {folds}-fold cross-validation on tuning ({elapsed:.1f} s):")
    print(f"  {'threshold':>9}{'caught (layer alone)':>22}{'hard':>8}{'false (layer alone)':>21}{'false added':>13}")
    escalations = [r for r in rows if r["expected_reason"] not in (None, "language")]
    hard_total = sum(r["expected_reason"] in HARD_REASONS for r in rows)
    for threshold in sorted({-0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, learned.THRESHOLD, round(suggested, 3)}):
        pairs = [(r, a) for r, a in zip(rows, oof, strict=True) if a is not None and a[1] >= threshold]
        caught = sum(r["expected_reason"] is not None for r, _ in pairs)
        hard = sum(r["expected_reason"] in HARD_REASONS for r, _ in pairs)
        false = sum(r["expected_reason"] is None for r, _ in pairs)
        added = sum(s >= threshold for s in benign_scores)
        mark = "  <- THRESHOLD" if threshold == learned.THRESHOLD else ""
        print(
            f"  {threshold:>9.3f}{caught:>15}/{len(escalations):<6}{hard:>4}/{hard_total:<4}"
            f"{false:>14}/{benign:<6}{added:>8}/{benign}{mark}"
        )
    print(
        f"  suggested threshold (<= {allowed} benign added to the rules' {rules_false}): {suggested:.3f}; "
        f"in use: {learned.THRESHOLD}\n"
    )
    return oof, suggested


def _layer_reads(row: dict[str, Any], assessed: tuple[Any, float]) -> bool:
    """Whether this verdict of the layer, were it over the threshold, would escalate the message."""
    decision = evaluate_inbound(row["text"], row["channel"], layer=lambda _prepared: assessed)
    return bool(decision.matched) and decision.matched[0].startswith("learned.")


def extra_examples() -> list[Any]:
    """What the layer always trains on besides the tuning rows: the rules' examples and the other sources."""
    from activities.guardrails import learned

    others = [row for row in learned.bank_rows() if row["source"] != "guardrails"]
    return [*learned.rule_examples(), *learned.examples_of(others), *learned.written_examples()]


def bank_from_sources() -> list[dict[str, Any]]:
    """The rows of activities/guardrails/data/learned_bank.jsonl, from the tuning halves only."""
    rows = [
        {
            "source": "guardrails",
            "id": r["id"],
            "text": r["text"],
            "channel": r["channel"],
            "expected_reason": r["expected_reason"],
        }
        for r in load_rows(SETS["tuning"])
    ]
    rows += [
        {
            "source": "answers",
            "id": r["id"],
            "text": r["message"],
            "channel": r["channel"],
            "expected_reason": r["escalation_reason"],
        }
        for r in load_rows(ANSWERS_TUNING)
    ]
    rows += [
        {"source": "retrieval", "id": r["id"], "text": r["question"], "channel": "web_form", "expected_reason": None}
        for r in load_rows(RETRIEVAL_TUNING)
        if r["expected"][0] not in RETRIEVAL_ARTICLES_LEFT_OUT
    ]
    return rows


def write_bank() -> Path:
    """Rewrite the packaged bank from the tuning sets."""
    from activities.guardrails import learned

    path = REPO_ROOT / "activities" / "guardrails" / "data" / learned.BANK_FILE
    lines = [json.dumps(row, ensure_ascii=False) for row in bank_from_sources()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, help="evaluate this labelled JSONL file instead of the sets")
    parser.add_argument(
        "--sets", nargs="+", choices=sorted(SETS), default=list(SETS), help="which sets (default: all three)"
    )
    parser.add_argument("--repetitions", type=int, default=20, help="passes over the tuning set for timing")
    parser.add_argument("--errors", action="store_true", help="list mistakes (held-out: ids only)")
    parser.add_argument("--folds", type=int, default=10, help="cross-validation folds on tuning")
    parser.add_argument("--calibrate", action="store_true", help="print the layer's threshold curve (tuning CV)")
    parser.add_argument("--write-bank", action="store_true", help="rewrite the learned layer's packaged bank")
    parser.add_argument("--compare-learned", action="store_true", help="the same features with scikit-learn")
    parser.add_argument(
        "--sentence-weight",
        type=float,
        help="score this sentence-vector weight in the tuning CV (0: n-grams only) at its own calibrated threshold",
    )
    parser.add_argument("--compare-detectors", action="store_true", help="py3langid against lingua on tuning")
    parser.add_argument("--compare-sentiment", action="store_true", help="lexicon against vaderSentiment")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--without-written", action="store_true", help="train the layer without its written examples (to compare)"
    )
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if args.write_bank:
        print(f"wrote {write_bank()}")
        return 0

    from activities.guardrails import learned

    if args.without_written:
        learned.written_examples = list  # type: ignore[assignment]  # the layer and the folds read it at call time
    start = time.process_time()
    learned.learned_layer()
    print(
        f"learned layer: trained in {time.process_time() - start:.2f} s CPU on {len(learned.bank_rows())} bank rows "
        f"+ {len(learned.rule_examples())} rule examples + {len(learned.written_examples())} written examples; "
        f"threshold {learned.THRESHOLD}\n"
    )
    sets = {args.data.name: args.data} if args.data else {name: SETS[name] for name in args.sets}
    results: dict[str, Any] = {}
    for name, path in sets.items():
        rows = load_rows(path)
        configurations = {"rules only": evaluate(rows)}
        if name == "tuning" and args.data is None:
            if args.sentence_weight is not None:
                # Another weight: its own threshold, calibrated on its folds within the same budget.
                oof, threshold = calibrate(rows, args.folds, sentence_weight=args.sentence_weight, show=args.calibrate)
                label = f"rules + layer w={args.sentence_weight} ({args.folds}-fold CV)"
                configurations[label] = shipped = evaluate(rows, learned=oof, threshold=threshold)
            else:
                oof = (
                    calibrate(rows, args.folds)[0]
                    if args.calibrate
                    else learned.out_of_fold(rows, extra_examples(), folds=args.folds)
                )
                configurations[f"rules + layer ({args.folds}-fold CV)"] = shipped = evaluate(rows, learned=oof)
            configurations["rules + layer (trained on all)"] = evaluate(rows, learned=True)
        else:
            configurations["rules + layer"] = shipped = evaluate(rows, learned=True)
        result = {**shipped, "configurations": configurations}
        results[name] = result
        print_set(name, result, show_text=name != "held_out", show_errors=args.errors)
    timing_rows = load_rows(SETS["tuning"]) if args.data is None else load_rows(args.data)
    inbound = time_inbound(timing_rows, args.repetitions)
    rules_only = time_inbound(timing_rows, args.repetitions, semantic=False)
    output = time_output(args.repetitions * 10)
    print(
        f"evaluate_inbound: {inbound['mean_us']:.0f} us CPU/message with the learned layer, "
        f"{rules_only['mean_us']:.0f} us rules only ({inbound['calls']:,} calls); "
        f"check_output: {output['mean_us']:.0f} us CPU/reply; "
        f"python {platform.python_version()} on {platform.machine()}"
    )
    if args.compare_learned:
        print("\nthe same features and folds with scikit-learn's logistic regression (if installed):")
        compare_learned(load_rows(SETS["tuning"]), args.folds)
    if args.compare_detectors:
        print("\nlanguage detectors on tuning.jsonl:")
        compare_detectors(load_rows(SETS["tuning"]))
    if args.compare_sentiment:
        print("\nsentiment scorers, `score < threshold` == labelled angry (threshold chosen on tuning):")
        compare_sentiment(load_rows(SETS["tuning"]), load_rows(SETS["held_out"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        timing = {"evaluate_inbound": inbound, "evaluate_inbound_rules_only": rules_only, "check_output": output}
        payload = {"sets": results, "timing": timing}
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
