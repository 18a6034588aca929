"""The semantic layer's arithmetic (activities/guardrails/semantic.py) on hand-made vectors.

The layer is measured with the real embedding model by `python bench/guardrails_eval.py --semantic`;
these tests pin what it promises whatever the model: the threshold is calibrated so no benign example
of its bank would escalate, it only ever names an escalation reason, and its bank is the tuning set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from activities.guardrails.semantic import TUNING_SET, SemanticLayer, calibrate, leave_one_out, tuning_rows

VECTORS = np.array(
    [
        [1.0, 0.0, 0.0],  # refund
        [0.9, 0.1, 0.0],  # refund
        [0.0, 1.0, 0.0],  # answer
        [0.0, 0.9, 0.2],  # answer
        [0.6, 0.8, 0.0],  # answer, between the two groups
    ]
)
LABELS = ("refund", "refund", "answer", "answer", "answer")


def test_the_threshold_lets_no_benign_example_escalate() -> None:
    threshold = calibrate(VECTORS, LABELS)
    unit = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    closest_benign = max(float(unit[b] @ unit[e]) for b in (2, 3, 4) for e in (0, 1))
    assert closest_benign < threshold <= closest_benign + 0.01
    layer = SemanticLayer(unit, LABELS, threshold)
    assert [layer.classify_vector(v) for v in unit[2:]] == [None, None, None]
    assert layer.classify_vector(np.array([1.0, 0.02, 0.0])) == "refund"
    assert leave_one_out(layer) == {"caught": 2, "escalations": 2, "false": 0}


def test_a_bank_without_escalations_never_escalates() -> None:
    layer = SemanticLayer(VECTORS[2:], LABELS[2:], calibrate(VECTORS[2:], LABELS[2:]))
    assert layer.classify_vector(VECTORS[0]) is None


def test_the_bank_is_the_tuning_set_and_never_the_held_out_set() -> None:
    assert TUNING_SET.name == "tuning.jsonl"
    held_out = Path(TUNING_SET).with_name("held_out.jsonl")
    with held_out.open(encoding="utf-8") as fh:
        held_texts = {json.loads(line)["text"] for line in fh if line.strip()}
    bank = tuning_rows()
    assert len(bank) >= 207 and not {row["text"] for row in bank} & held_texts
