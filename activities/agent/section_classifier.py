"""The question bank as a classifier: one linear score per banked section for a message.

The ranker's other bank evidence compares a message with a section's nearest questions, one at a
time (cosine similarity of sentence vectors, BM25 of words). A model trained on every section's
questions at once learns what a section's customers say that other sections' customers do not, and
reads the pieces of words a typo or another language keeps ("exportier", "factur", "expor"), which
neither comparison does. It is ridge regression, one-vs-rest (+1 for the question's own section, -1
for every other), over
- TF-IDF character 2-5-grams inside words and word uni- and bigrams of the lower-cased,
  accent-folded text (the guardrails' learned layer reads the same, `normalise.char_ngrams`), hashed
  into `2**HASH_BITS` columns: sublinear term frequency, the bank's smoothed idf, L2-normalised;
- the message's multilingual sentence vector (the one the bank similarity uses), scaled by
  `SENTENCE_WEIGHT`;
- a constant.
It is solved in the primal ((Z^T Z + penalty I) W = Z^T Y, 4,609 columns), from row blocks so the dense
copy of the ~6,200 questions never exceeds a few tens of megabytes: about 6 s of CPU when a worker
first warms up, then well under a millisecond a message. Nothing is trained from customers' messages
beyond a cache of the trained weights, keyed by the bank's content (`kb.embeddings.cached_arrays`): the
same bank always gives the same scores.

Chosen on the tuning answer cases' cross-validation only (`bench/answers_eval.py --part tuning
--fit-ranker`, four fold seeds; answered correctly at <= 2 % wrong, mean of the four): without this
feature 134.5 of 272; with the sentence vector alone 139.8; with the n-grams and the vector 145-146
at 2**12, 2**13 or 2**14 columns and sentence weights 0.7-1.0 (penalty 3; 10 scored lower). With the
audited labels (bench/data/README.md) 136.5 without it and 147.0 with it.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from activities.guardrails.normalise import char_ngrams, fold_accents, word_ngrams
from kb.embeddings import cached_arrays

HASH_BITS = 12
RIDGE_PENALTY = 3.0
SENTENCE_WEIGHT = 1.0
# N-grams in fewer bank questions than this carry no weight (one question's quirk is not a section's).
MIN_DOCUMENT_FREQUENCY = 2
_BLOCK_ROWS = 1024


def _grams(text: str) -> Counter[str]:
    folded = fold_accents(text.lower())
    return Counter([*char_ngrams(folded), *word_ngrams(folded)])


def _column(gram: str) -> int:
    return zlib.crc32(gram.encode("utf-8")) & ((1 << HASH_BITS) - 1)


class SectionClassifier:
    """Ridge scores of a text for every class (a banked section), trained on the bank's questions."""

    def __init__(self, weights: np.ndarray, idf: dict[str, float]) -> None:
        """`weights`: (1 + 2**HASH_BITS + sentence dimensions) x classes; `idf`: each n-gram's weight."""
        self._weights = np.asarray(weights, dtype=np.float32)
        self._idf = idf
        self._columns: dict[str, int] = {}

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[int], classes: int, vectors: np.ndarray) -> SectionClassifier:
        """Fit on `texts` (class `labels[i]`, 0..classes-1; unit sentence vectors `vectors[i]`)."""
        if not (len(texts) == len(labels) == len(vectors)):
            raise ValueError("one label and one sentence vector per text")
        grams = [_grams(t) for t in texts]
        df: Counter[str] = Counter()
        for counts in grams:
            df.update(counts.keys())
        n = len(texts)
        # Smoothed idf, as scikit-learn's TfidfVectorizer computes it.
        idf = {g: math.log((1 + n) / (1 + c)) + 1.0 for g, c in df.items() if c >= MIN_DOCUMENT_FREQUENCY}
        width = 1 + (1 << HASH_BITS) + vectors.shape[1]
        model = cls(np.zeros((width, classes)), idf)
        gram_matrix = np.zeros((width, width))
        moments = np.zeros((width, classes))
        targets = np.full((n, classes), -1.0)
        targets[np.arange(n), np.asarray(labels, dtype=np.intp)] = 1.0
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(n, start + _BLOCK_ROWS)
            block = model._design(grams[start:stop], vectors[start:stop])
            gram_matrix += block.T @ block
            moments += block.T @ targets[start:stop]
        gram_matrix[np.diag_indices(width)] += RIDGE_PENALTY
        model._weights = np.linalg.solve(gram_matrix, moments).astype(np.float32)
        return model

    @classmethod
    def cached(
        cls, texts: Sequence[str], labels: Sequence[int], classes: int, vectors: np.ndarray
    ) -> SectionClassifier:
        """`train`, or the model trained on exactly these inputs by an earlier process (kept on disk
        beside the bank's sentence vectors: a restarted worker loads it in milliseconds)."""
        digest = hashlib.sha256(
            f"section-classifier/{HASH_BITS}/{RIDGE_PENALTY}/{SENTENCE_WEIGHT}/{MIN_DOCUMENT_FREQUENCY}/{classes}".encode()
        )
        for text, label in zip(texts, labels, strict=True):
            digest.update(f"{label}\x00{text}\x00".encode())
        digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

        def compute() -> dict[str, np.ndarray]:
            model = cls.train(texts, labels, classes, vectors)
            grams = sorted(model._idf)
            return {
                "weights": model._weights,
                "grams": np.array(grams, dtype=np.str_),
                "idf": np.array([model._idf[g] for g in grams], dtype=np.float64),
            }

        arrays = cached_arrays(digest.hexdigest(), compute)
        return cls(arrays["weights"], dict(zip(arrays["grams"].tolist(), arrays["idf"].tolist(), strict=True)))

    def _design(self, grams: Iterable[Counter[str]], vectors: np.ndarray) -> np.ndarray:
        """Rows of [1, hashed tf-idf n-grams, weighted sentence vector]."""
        rows = np.zeros((len(vectors), 1 + (1 << HASH_BITS) + vectors.shape[1]))
        rows[:, 0] = 1.0
        for i, counts in enumerate(grams):
            row = rows[i, 1 : 1 + (1 << HASH_BITS)]
            for gram, count in counts.items():
                idf = self._idf.get(gram)
                if idf is not None:
                    column = self._columns.get(gram)
                    if column is None:
                        column = self._columns[gram] = _column(gram)
                    row[column] += (1.0 + math.log(count)) * idf
            norm = float(np.linalg.norm(row))
            if norm:
                row /= norm
        rows[:, 1 + (1 << HASH_BITS) :] = SENTENCE_WEIGHT * np.asarray(vectors, dtype=np.float64)
        return rows

    def scores(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Each class's score for a message read as these texts (its start and its sentences, with
        their sentence vectors): the best over the texts."""
        if not texts:
            return np.zeros(self._weights.shape[1])
        design = self._design([_grams(t) for t in texts], vectors).astype(np.float32)
        return np.asarray((design @ self._weights).max(axis=0), dtype=np.float64)
