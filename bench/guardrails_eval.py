"""Evaluate the inbound guardrails on the labelled sets: action accuracy, false escalations, misses.

Usage (from the repo root):

    .venv/bin/python bench/guardrails_eval.py                  # tuning, held-out and the regression set
    .venv/bin/python bench/guardrails_eval.py --errors         # also list tuning/regression mistakes
    .venv/bin/python bench/guardrails_eval.py --compare-detectors --compare-sentiment
    .venv/bin/python bench/guardrails_eval.py --json /tmp/guardrails.json

Sets: ``bench/data/guardrails/tuning.jsonl`` (rules are tuned on it), ``bench/data/guardrails/held_out.jsonl``
(reported, never tuned on: its mistakes are listed by id only, never by text, so reading this
output cannot leak its wording into the rules) and ``tests/activities/guardrails_labelled.jsonl``,
the 463 messages the first English rules were written with (a regression figure, not a real-world one).

``--semantic`` adds the nearest-labelled-example layer (activities/guardrails/semantic.py), which
needs the offline embedding model; its example bank is the tuning set only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def evaluate(rows: list[dict[str, Any]], *, semantic: Any = None, embedder: Any = None) -> dict[str, Any]:
    """Score every row once: action/reason accuracy, false escalations, misses per reason and language."""
    vectors = asyncio.run(embedder.embed([r["text"] for r in rows])) if semantic is not None else None
    added_right = added_wrong = 0
    mistakes: list[dict[str, Any]] = []
    action_hits = reason_hits = benign = false_escalations = 0
    misses: Counter[str] = Counter()  # expected an escalation, got an answer: by expected reason
    wrong_reason: Counter[str] = Counter()  # escalated, under another reason
    support: Counter[str] = Counter()
    by_lang: dict[str, Counter[str]] = {}
    for n, row in enumerate(rows):
        decision = evaluate_inbound(row["text"], row["channel"])
        action, reason = decision.action, decision.reason
        if vectors is not None and action == "answer":
            added = semantic.classify_vector(vectors[n])
            if added is not None:
                action, reason = "escalate", added
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
        "semantic_added": {"right": added_right, "wrong": added_wrong},
        "mistakes": mistakes,
    }


def time_inbound(rows: list[dict[str, Any]], repetitions: int) -> dict[str, float]:
    """Mean CPU time of evaluate_inbound over the set, repeated (CPU time: the machine is shared)."""
    items = [(row["text"], row["channel"]) for row in rows]
    start = time.process_time()
    for _ in range(repetitions):
        for text, channel in items:
            evaluate_inbound(text, channel)
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


def print_set(name: str, result: dict[str, Any], *, show_text: bool, show_errors: bool) -> None:
    """One set's figures."""
    print(f"== {name}: {result['messages']} messages")
    if result["semantic_added"]["right"] or result["semantic_added"]["wrong"]:
        added = result["semantic_added"]
        print(f"semantic layer added {added['right']} right and {added['wrong']} wrong escalations")
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, help="evaluate this labelled JSONL file instead of the three sets")
    parser.add_argument("--repetitions", type=int, default=20, help="passes over the tuning set for timing")
    parser.add_argument("--errors", action="store_true", help="list mistakes (held-out: ids only)")
    parser.add_argument("--semantic", action="store_true", help="add the nearest-labelled-example layer")
    parser.add_argument("--compare-detectors", action="store_true", help="py3langid against lingua on tuning")
    parser.add_argument("--compare-sentiment", action="store_true", help="lexicon against vaderSentiment")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")

    sets = {args.data.name: args.data} if args.data else SETS
    semantic = embedder = None
    if args.semantic:
        from activities.guardrails import semantic as layer
        from core.settings import Settings
        from kb.embeddings import create_embedder

        embedder = create_embedder(Settings())
        semantic = asyncio.run(layer.build(embedder, layer.tuning_rows()))
        loo = layer.leave_one_out(semantic)
        print(
            f"semantic layer ({embedder.model_name}): threshold {semantic.threshold:.3f} calibrated on tuning; "
            f"leave-one-out on tuning catches {loo['caught']}/{loo['escalations']} escalations, "
            f"{loo['false']} false\n"
        )
    results: dict[str, Any] = {}
    for name, path in sets.items():
        result = evaluate(load_rows(path), semantic=semantic, embedder=embedder)
        results[name] = result
        print_set(name, result, show_text=name != "held_out", show_errors=args.errors)
    timing_rows = load_rows(SETS["tuning"]) if args.data is None else load_rows(args.data)
    inbound = time_inbound(timing_rows, args.repetitions)
    output = time_output(args.repetitions * 10)
    print(
        f"evaluate_inbound: {inbound['mean_us']:.0f} us CPU/message ({inbound['calls']:,} calls); "
        f"check_output: {output['mean_us']:.0f} us CPU/reply; "
        f"python {platform.python_version()} on {platform.machine()}"
    )
    if args.compare_detectors:
        print("\nlanguage detectors on tuning.jsonl:")
        compare_detectors(load_rows(SETS["tuning"]))
    if args.compare_sentiment:
        print("\nsentiment scorers, `score < threshold` == labelled angry (threshold chosen on tuning):")
        compare_sentiment(load_rows(SETS["tuning"]), load_rows(SETS["held_out"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"sets": results, "timing": {"evaluate_inbound": inbound, "check_output": output}}
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
