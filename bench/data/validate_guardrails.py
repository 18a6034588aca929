"""Validate bench/data/guardrails/{tuning,held_out}.jsonl and print counts per label x language x split.

Exit status 1 on any error: a bad field, a duplicate id or text, a reason outside the label set, or a
message in a language outside en/es/pt/fr/de that is not labelled `language`.
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "guardrails"
FIELDS = {"id", "text", "channel", "language", "expected_action", "expected_reason", "sentiment", "note"}
REASONS = {"pricing", "refund", "legal", "security", "human_request", "negative_sentiment", "language"}
SUPPORTED = {"en", "es", "pt", "fr", "de"}


def problems_of(row: dict[str, object]) -> list[str]:
    """What is wrong with one labelled message (empty when nothing is)."""
    found = []
    if set(row) != FIELDS:
        found.append(f"fields {sorted(set(row) ^ FIELDS)}")
    if not re.fullmatch(r"g-\d{4}", str(row.get("id"))):
        found.append("id")
    if not str(row.get("text", "")).strip():
        found.append("empty text")
    if row.get("channel") not in {"email", "whatsapp", "web_form"}:
        found.append("channel")
    if not re.fullmatch(r"[a-z]{2}", str(row.get("language"))):
        found.append("language code")
    if row.get("sentiment") not in {"angry", "negative", "neutral", "positive"}:
        found.append("sentiment")
    if row.get("expected_action") == "answer":
        if row.get("expected_reason") is not None:
            found.append("answer with a reason")
    elif row.get("expected_action") != "escalate" or row.get("expected_reason") not in REASONS:
        found.append("action/reason")
    if (row.get("expected_reason") == "language") != (row.get("language") not in SUPPORTED):
        found.append("language label")
    return found


def main() -> int:
    errors: list[str] = []
    rows: list[dict[str, object]] = []
    ids: set[object] = set()
    texts: set[object] = set()
    for split in ("tuning", "held_out"):
        for number, line in enumerate((DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            errors += [f"{split}:{number}: {p}" for p in problems_of(row)]
            if row["id"] in ids or row["text"] in texts:
                errors.append(f"{split}:{number}: duplicate id or text")
            ids.add(row["id"])
            texts.add(row["text"])
            rows.append({**row, "split": split})
    counts = collections.Counter(
        (r["expected_reason"] or "answer", r["language"] if r["language"] in SUPPORTED else "other", r["split"])
        for r in rows
    )
    for key in sorted(counts, key=str):
        print(*key, counts[key], sep="\t")
    for error in errors:
        print("ERROR", error, file=sys.stderr)
    print(f"{len(rows)} messages, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
