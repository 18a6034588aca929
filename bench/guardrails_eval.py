"""Evaluate the inbound guardrails on the labelled set: per-reason P/R/F1, action accuracy, speed.

Usage (from the repo root):

    .venv/bin/python bench/guardrails_eval.py
    .venv/bin/python bench/guardrails_eval.py --repetitions 500 --errors --json /tmp/guardrails.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Running as `python bench/guardrails_eval.py` puts bench/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from activities.guardrails import check_output, evaluate_inbound  # noqa: E402
from core.vocabulary import GUARDRAIL_REASONS  # noqa: E402

DEFAULT_DATA = REPO_ROOT / "tests" / "activities" / "guardrails_labelled.jsonl"
ANSWER = "answer"

# A few draft replies so the output check gets a throughput number too.
_SAMPLE_KB = [
    "Boards can be exported to CSV or JSON from Board menu > Export.",
    "TechCorp integrates with Slack and Google Calendar.",
    "Automations run on triggers such as card moved, due date reached or custom field changed.",
]
_SAMPLE_REPLIES = [
    "You can export your board to CSV from Board menu > Export.",
    "I can't share pricing here; a specialist from our billing team will follow up.",
    "The Pro plan is $12 per user per month.",
    "We will refund the duplicate charge within 5 days.",
    "Yes, TechCorp supports Gantt charts on every board.",
    "Good news: that feature is coming soon!",
]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Read the labelled JSONL file."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score every row once and compute per-label metrics and action accuracy."""
    pairs: list[tuple[str, str]] = []
    errors: list[dict[str, Any]] = []
    action_hits = 0
    for row in rows:
        decision = evaluate_inbound(row["text"], row["channel"])
        expected = row["expected_reason"] or ANSWER
        predicted = decision.reason or ANSWER
        pairs.append((expected, predicted))
        action_hits += decision.action == row["expected_action"]
        if expected != predicted:
            errors.append(
                {
                    "text": row["text"],
                    "channel": row["channel"],
                    "expected": expected,
                    "predicted": predicted,
                    "matched": decision.matched,
                    "sentiment": decision.sentiment,
                }
            )
    labels: dict[str, dict[str, float]] = {}
    for label in (*GUARDRAIL_REASONS, ANSWER):
        tp = sum(1 for e, p in pairs if e == label and p == label)
        fp = sum(1 for e, p in pairs if e != label and p == label)
        fn = sum(1 for e, p in pairs if e == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        labels[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return {
        "messages": len(rows),
        "action_accuracy": action_hits / len(rows),
        "reason_accuracy": sum(e == p for e, p in pairs) / len(rows),
        "labels": labels,
        "errors": errors,
    }


def time_inbound(rows: list[dict[str, Any]], repetitions: int) -> dict[str, float]:
    """Throughput of evaluate_inbound over the whole set, repeated."""
    items = [(row["text"], row["channel"]) for row in rows]
    start = time.perf_counter()
    for _ in range(repetitions):
        for text, channel in items:
            evaluate_inbound(text, channel)
    elapsed = time.perf_counter() - start
    calls = repetitions * len(items)
    return {"calls": calls, "seconds": elapsed, "per_second": calls / elapsed, "mean_us": elapsed / calls * 1e6}


def time_output(repetitions: int) -> dict[str, float]:
    """Throughput of check_output over a handful of representative draft replies."""
    start = time.perf_counter()
    for _ in range(repetitions):
        for reply in _SAMPLE_REPLIES:
            check_output(reply, kb_passages=_SAMPLE_KB, system_prompt="You are the TechCorp assistant.")
    elapsed = time.perf_counter() - start
    calls = repetitions * len(_SAMPLE_REPLIES)
    return {"calls": calls, "seconds": elapsed, "per_second": calls / elapsed, "mean_us": elapsed / calls * 1e6}


def print_report(result: dict[str, Any], show_errors: bool) -> None:
    """Print the metrics and timing tables."""
    print(f"labelled set: {result['data']}  ({result['messages']} messages)")
    print()
    print(f"{'label':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    print("-" * 59)
    for label, m in result["labels"].items():
        if label == ANSWER:
            print("-" * 59)
        print(f"{label:<20}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9}")
    print("-" * 59)
    print(f"{'action accuracy':<20}{result['action_accuracy']:>10.3f}")
    print(f"{'reason accuracy':<20}{result['reason_accuracy']:>10.3f}")
    print()
    inbound, output = result["timing"]["evaluate_inbound"], result["timing"]["check_output"]
    print(
        f"evaluate_inbound: {inbound['per_second']:,.0f} msg/s  ({inbound['mean_us']:.1f} us/msg, "
        f"{inbound['calls']:,} calls, {result['repetitions']} reps)"
    )
    print(f"check_output:     {output['per_second']:,.0f} replies/s  ({output['mean_us']:.1f} us/reply)")
    print(f"python {platform.python_version()} on {platform.machine()}")
    if show_errors and result["errors"]:
        print()
        print("misclassified:")
        for err in result["errors"]:
            print(f"  expected {err['expected']:<18} got {err['predicted']:<18} {err['text'][:80]!r}")
            print(f"      matched={err['matched']} sentiment={err['sentiment']:+.2f}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSONL file")
    parser.add_argument("--repetitions", type=int, default=300, help="passes over the set for timing")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--errors", action="store_true", help="list misclassified messages")
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")

    rows = load_rows(args.data)
    result = evaluate(rows)
    result["data"] = str(args.data)
    result["repetitions"] = args.repetitions
    result["timing"] = {
        "evaluate_inbound": time_inbound(rows, args.repetitions),
        "check_output": time_output(args.repetitions),
    }
    print_report(result, args.errors)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
