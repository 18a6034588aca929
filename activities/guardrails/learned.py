"""The learned layer beside the rules: a character n-gram classifier that catches reworded escalations.

Keyword rules trail the next wording ("could you send the funds back" is a refund nobody wrote a rule
for). This layer reads what the rules let through and may add an escalation, never remove one. It is
a linear model over TF-IDF character n-grams (2-5, inside words) and word uni- and bigrams of the
lower-cased, accent-folded text: subword pieces ("reembols", "erstatt", "rembours", "quot") carry
across languages, inflections and typos without a word list or an embedding model.

The model is regularised least squares (ridge regression, one score per class plus one "needs a
human" score), solved in its dual form: with a few hundred examples that is one small linear solve,
so it trains in a fraction of a second with numpy alone (scikit-learn's import costs more time and
memory than the whole layer; ``bench/guardrails_eval.py --compare-learned`` measured the same
features with its logistic regression). Nothing trained is checked in: the layer is trained when first
used, on
- ``data/learned_bank.jsonl``: the tuning half of bench/data/guardrails, never the held-out half (a
  copy in the package so a deployed worker has it; a test checks that it matches, and
  ``python bench/guardrails_eval.py --write-bank`` rewrites it);
- the ``examples`` of every ``[[rule]]`` in ``data/rules_<lang>.toml``.

``THRESHOLD`` on the "needs a human" score was calibrated by 10-fold cross-validation on the tuning
half only (``python bench/guardrails_eval.py --calibrate``). Deterministic: the same bank and text
always give the same decision.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from activities.guardrails.normalise import fold_accents, prepare
from core.vocabulary import GUARDRAIL_REASONS, GuardrailReason

BANK_FILE = "learned_bank.jsonl"
ANSWER = "answer"
# The "needs a human" score at or above which the layer escalates (see the module docstring).
THRESHOLD = 0.49
# The calibration's allowance: out-of-fold false escalations the layer may add on top of the rules,
# as a share of the benign tuning messages.
FALSE_ESCALATION_BUDGET = 0.01
# Ridge penalty: larger is smoother (chosen by the same cross-validation).
RIDGE_PENALTY = 0.3
# Character n-grams seen in fewer training messages than this are not features.
MIN_DOCUMENT_FREQUENCY = 2

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def features(text: str, channel: str | None) -> str:
    """What the layer reads: the customer's new words, lower-cased and without accents."""
    return fold_accents(prepare(text, channel).lower())


def _char_ngrams(text: str) -> Iterable[str]:
    # Character 2- to 5-grams inside each word padded with spaces (scikit-learn's "char_wb").
    for word in _SPACE.sub(" ", text).split():
        padded = f" {word} "
        size = len(padded)
        for n in range(2, 6):
            if n > size:
                break
            for start in range(size - n + 1):
                yield padded[start : start + n]


def _word_ngrams(text: str) -> Iterable[str]:
    words = _WORD.findall(text)
    yield from (f"w:{w}" for w in words)
    yield from (f"w:{a} {b}" for a, b in itertools.pairwise(words))


@dataclass(frozen=True)
class Example:
    """One labelled message: the text as features() prepared it, and "answer" or a guardrail reason."""

    text: str
    label: str


def bank_rows() -> list[dict[str, Any]]:
    """The packaged copy of the tuning set (id, text, channel, expected_reason)."""
    source = resources.files("activities.guardrails") / "data" / BANK_FILE
    return [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]


def examples_of(rows: Sequence[dict[str, Any]]) -> list[Example]:
    """Labelled rows as examples; messages labelled `language` are the detector's business, not the layer's."""
    return [
        Example(features(row["text"], row.get("channel")), row.get("expected_reason") or ANSWER)
        for row in rows
        if row.get("expected_reason") != "language"
    ]


def rule_examples() -> list[Example]:
    """The `examples` every rule carries, labelled with the rule's reason."""
    from activities.guardrails.rules import rule_book  # rules imports this module

    return [Example(features(text, None), rule.reason) for rule in rule_book().rules for text in rule.examples]


class _Vocabulary:
    """Feature columns and their inverse document frequencies, for one kind of n-gram."""

    def __init__(self, docs: Sequence[Counter[str]], min_df: int, offset: int) -> None:
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(doc.keys())
        kept = sorted(gram for gram, count in df.items() if count >= min_df)
        n = len(docs)
        self.columns = {gram: offset + i for i, gram in enumerate(kept)}
        # Smoothed idf, as scikit-learn's TfidfVectorizer computes it.
        self.idf = {gram: math.log((1 + n) / (1 + df[gram])) + 1.0 for gram in kept}

    def row(self, counts: Counter[str]) -> tuple[list[int], list[float]]:
        """Sublinear tf-idf of the known n-grams, L2-normalised."""
        cols: list[int] = []
        values: list[float] = []
        for gram, count in counts.items():
            column = self.columns.get(gram)
            if column is not None:
                cols.append(column)
                values.append((1.0 + math.log(count)) * self.idf[gram])
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return cols, [v / norm for v in values]


class LearnedLayer:
    """Ridge scores over character and word n-grams: one per class, and one for "needs a human"."""

    def __init__(
        self, examples: Sequence[Example], *, penalty: float = RIDGE_PENALTY, min_df: int = MIN_DOCUMENT_FREQUENCY
    ) -> None:
        chars = [Counter(_char_ngrams(e.text)) for e in examples]
        words = [Counter(_word_ngrams(e.text)) for e in examples]
        self._chars = _Vocabulary(chars, min_df, offset=0)
        self._words = _Vocabulary(words, 1, offset=len(self._chars.columns))
        width = len(self._chars.columns) + len(self._words.columns)
        self.classes: tuple[str, ...] = (ANSWER, *(r for r in GUARDRAIL_REASONS if any(e.label == r for e in examples)))
        # Targets: "needs a human" (+1/-1), then one +1/-1 column per class.
        targets = np.full((len(examples), 1 + len(self.classes)), -1.0)
        for i, example in enumerate(examples):
            targets[i, 0] = -1.0 if example.label == ANSWER else 1.0
            targets[i, 1 + self.classes.index(example.label)] = 1.0
        rows = [self._row(c, w) for c, w in zip(chars, words, strict=True)]
        lengths = np.array([len(cols) for cols, _ in rows])
        owner = np.repeat(np.arange(len(rows)), lengths)
        columns = np.fromiter((col for cols, _ in rows for col in cols), dtype=np.int64, count=int(lengths.sum()))
        values = np.fromiter((v for _, vals in rows for v in vals), dtype=np.float64, count=int(lengths.sum()))
        # Dual ridge: w = X^T (X X^T + penalty I)^-1 Y; the Gram matrix is built in column blocks so the
        # dense copy of X never exceeds a few megabytes. The constant feature is the intercept.
        gram = np.ones((len(rows), len(rows)))
        block = 2048
        for start in range(0, width, block):
            inside = (columns >= start) & (columns < start + block)
            dense = np.zeros((len(rows), min(block, width - start)))
            dense[owner[inside], columns[inside] - start] = values[inside]
            gram += dense @ dense.T
        alpha = np.linalg.solve(gram + penalty * np.eye(len(rows)), targets)
        weights = np.stack(
            [np.bincount(columns, weights=values * alpha[owner, k], minlength=width) for k in range(targets.shape[1])],
            axis=1,
        )
        self._weights = weights.astype(np.float32)
        self._bias = alpha.sum(axis=0)

    def _row(self, chars: Counter[str], words: Counter[str]) -> tuple[list[int], list[float]]:
        c_cols, c_values = self._chars.row(chars)
        w_cols, w_values = self._words.row(words)
        return c_cols + w_cols, c_values + w_values

    def scores(self, prepared: str) -> np.ndarray:
        """The raw scores of one prepared text: "needs a human", then one per class."""
        cols, values = self._row(Counter(_char_ngrams(prepared)), Counter(_word_ngrams(prepared)))
        if not cols:
            return np.asarray(self._bias)
        return np.asarray(self._bias + np.asarray(values, dtype=np.float32) @ self._weights[cols])

    def assess_prepared(self, prepared: str) -> tuple[GuardrailReason, float]:
        """The likeliest escalation reason of a prepared text and its "needs a human" score."""
        scores = self.scores(prepared)
        best = max(range(1, len(self.classes)), key=lambda k: scores[1 + k])
        reason = next(r for r in GUARDRAIL_REASONS if r == self.classes[best])
        return reason, float(scores[0])

    def assess(self, text: str, channel: str | None) -> tuple[GuardrailReason, float]:
        """The likeliest escalation reason for this message and its "needs a human" score."""
        return self.assess_prepared(features(text, channel))


@cache
def learned_layer() -> LearnedLayer:
    """The layer trained on the packaged tuning set and the rules' examples (once per process)."""
    return LearnedLayer([*examples_of(bank_rows()), *rule_examples()])


def escalation_of_prepared(prepared: str, *, threshold: float = THRESHOLD) -> tuple[GuardrailReason, float] | None:
    """(reason, score) when the layer would escalate this text (as features() prepares it), else None."""
    reason, score = learned_layer().assess_prepared(prepared)
    return (reason, score) if score >= threshold else None


def escalation(text: str, channel: str | None, *, threshold: float = THRESHOLD) -> tuple[GuardrailReason, float] | None:
    """(reason, score) when the layer would escalate this message, else None."""
    return escalation_of_prepared(features(text, channel), threshold=threshold)


def _near_duplicate(a: str, b: str) -> bool:
    wa, wb = set(a.split()), set(b.split())
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= 0.6


def out_of_fold(
    rows: Sequence[dict[str, Any]],
    extra: Sequence[Example],
    *,
    folds: int = 10,
    seed: int = 20251202,
    penalty: float = RIDGE_PENALTY,
    min_df: int = MIN_DOCUMENT_FREQUENCY,
) -> list[tuple[GuardrailReason, float] | None]:
    """k-fold on the labelled rows: each row assessed by a layer trained without it (None for `language` rows).

    The rules' examples always train; any that repeats a held-back message (same or nearly the same
    words) is left out of that fold, so a copy cannot flatter the figure.
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    prepared = [features(row["text"], row.get("channel")) for row in rows]
    result: list[tuple[GuardrailReason, float] | None] = [None] * len(rows)
    for fold in range(folds):
        held = [int(i) for i in order[fold::folds] if rows[int(i)].get("expected_reason") != "language"]
        held_set = set(held)
        train = [
            Example(prepared[i], rows[i].get("expected_reason") or ANSWER)
            for i in range(len(rows))
            if i not in held_set and rows[i].get("expected_reason") != "language"
        ]
        train += [e for e in extra if not any(_near_duplicate(e.text, prepared[i]) for i in held)]
        layer = LearnedLayer(train, penalty=penalty, min_df=min_df)
        for i in held:
            result[i] = layer.assess_prepared(prepared[i])
    return result
