"""A semantic layer beside the rules: the nearest labelled escalation, over the offline embedding model.

It may add an escalation a rule missed, never remove one. Its example bank is the tuning half of
bench/data/guardrails (never the held-out half), and its threshold is calibrated on that half by
leave-one-out: the lowest cosine similarity at which no benign tuning message would have been
escalated. Measured with the WordLlama model (bench/guardrails_eval.py --semantic), it adds little:
word-vector averages put "the pricing page never loads" as close to a pricing request as "send us a
quote" is, so at a threshold with no false escalations it catches few paraphrases. It is therefore
not wired into the inbound activity; the model classifier (classifier.py) is the layer that reads
paraphrases when a model is configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.embeddings import Embedder

TUNING_SET = Path(__file__).resolve().parents[2] / "bench" / "data" / "guardrails" / "tuning.jsonl"
# Above the calibrated threshold by this much, so a message exactly as close as the worst benign one
# does not escalate.
MARGIN = 1e-3


@dataclass(frozen=True)
class SemanticLayer:
    """Unit vectors of labelled messages, their labels ("answer" or a reason) and the threshold."""

    vectors: np.ndarray
    labels: tuple[str, ...]
    threshold: float

    def nearest_escalation(self, vector: np.ndarray) -> tuple[str | None, float]:
        """The reason of the most similar escalation example and its cosine similarity."""
        escalations = [i for i, label in enumerate(self.labels) if label != "answer"]
        if not escalations:
            return None, 0.0
        sims = self.vectors[escalations] @ vector
        best = int(np.argmax(sims))
        return self.labels[escalations[best]], float(sims[best])

    def classify_vector(self, vector: np.ndarray) -> str | None:
        """A reason to escalate, or None: only above the calibrated threshold."""
        reason, similarity = self.nearest_escalation(_unit(vector))
        return reason if reason is not None and similarity >= self.threshold else None


def _unit(vectors: Any) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return np.asarray(array / np.where(norms == 0, 1, norms))


def calibrate(vectors: np.ndarray, labels: tuple[str, ...]) -> float:
    """Leave-one-out on the bank itself: just above the highest similarity a benign message has to any escalation."""
    unit = _unit(vectors)
    escalation = np.array([label != "answer" for label in labels])
    benign = ~escalation
    if not escalation.any() or not benign.any():
        return 1.0 + MARGIN  # nothing to separate: never escalate
    sims = unit[benign] @ unit[escalation].T
    return float(sims.max()) + MARGIN


async def build(embedder: Embedder, rows: list[dict[str, Any]]) -> SemanticLayer:
    """The layer over these labelled rows (the tuning set), with its threshold calibrated on them."""
    labels = tuple(row["expected_reason"] or "answer" for row in rows)
    vectors = _unit(await embedder.embed([row["text"] for row in rows]))
    return SemanticLayer(vectors=vectors, labels=labels, threshold=calibrate(vectors, labels))


def tuning_rows() -> list[dict[str, Any]]:
    """The example bank: bench/data/guardrails/tuning.jsonl only."""
    with TUNING_SET.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def leave_one_out(layer: SemanticLayer) -> dict[str, int]:
    """How the layer does on its own bank with each message held out in turn (at its threshold)."""
    caught = false = 0
    for i, label in enumerate(layer.labels):
        keep = [j for j in range(len(layer.labels)) if j != i]
        rest = SemanticLayer(layer.vectors[keep], tuple(layer.labels[j] for j in keep), layer.threshold)
        found = rest.classify_vector(layer.vectors[i])
        if found is not None:
            caught += label != "answer"
            false += label == "answer"
    return {"caught": caught, "escalations": sum(label != "answer" for label in layer.labels), "false": false}
