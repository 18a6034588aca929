"""BM25 over the knowledge-base chunks: rare words weigh what they should.

PostgreSQL's ``ts_rank`` has no inverse document frequency: a word that only one article contains
counts no more than "click" or "settings", so a customer's one telling word lost to the common ones.
BM25 (the ``bm25s`` library, Lucene's variant) weighs each query word by how rare it is among the
chunks and saturates repeated words. The index lives in the process, built from the table's rows
and rebuilt when ``knowledge_base_version`` (bumped by a statement trigger on every write, migration
0008) moves on, so every worker sees an ingest on its next search. At 20k chunks a rebuild took
2.2 s once and a query 0.2 ms p50 / 0.4 ms p95 on the shared 2-core machine.

Words are lower-cased, English stop words dropped, and stemmed with Snowball (PyStemmer). The
title and the heading path are indexed again besides the chunk text (which already starts with
them): a word in a section's heading says more about the section than the same word in passing.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bm25s
import numpy as np
import Stemmer

# bm25s logs every index build at INFO/DEBUG through the standard library; one line per rebuild
# is logged here instead (kb.lexical_index_ready).
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Lucene BM25 parameters at their usual values: on bench/data/retrieval/tuning.jsonl every k1 in
# 0.9..1.5 and b in 0.5..0.9 gave hybrid recall@5 within 0.906..0.918 (noise), so none is tuned.
K1 = 1.2
B = 0.75
# How many times the title and heading path are indexed in addition to the chunk text (0..2 were
# equally good on the tuning set; once keeps a heading word ahead of the same word in passing).
HEADING_REPEAT = 1

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
# A short English stop list: words that carry no topic. Negations and "not" stay (symptoms use them).
_STOP = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i i'm if in into is it
    it's its me my of on or our so than that the their them then there these they this to too us was we were
    what when where which who why will with would you your yours hi hello hey please thanks thank regards""".split()
)


@dataclass(frozen=True)
class LexicalDocument:
    """What BM25 indexes of one chunk."""

    chunk_id: uuid.UUID
    category: str
    title: str
    heading_path: tuple[str, ...]
    content: str
    article_id: str = ""


class Tokenizer:
    """Lower-case words, stop words out, Snowball stems (thread-safe: one stemmer per thread)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _stemmer(self) -> Any:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer("english")
        return stemmer

    def __call__(self, text: str) -> list[str]:
        """The stemmed content words of `text`, in order."""
        words = [w for w in _WORD.findall(text.lower().replace("\u2019", "'")) if w not in _STOP and len(w) > 1]
        stems: list[str] = self._stemmer().stemWords(words)
        return stems


TOKENIZE = Tokenizer()


def document_tokens(doc: LexicalDocument) -> list[str]:
    """The tokens BM25 indexes for one chunk: its text plus its title and heading path again."""
    headings = " ".join((doc.title, *doc.heading_path))
    return TOKENIZE(doc.content) + TOKENIZE(headings) * HEADING_REPEAT


class LexicalIndex:
    """A BM25 index over a fixed set of chunks."""

    def __init__(self, documents: Sequence[LexicalDocument], *, version: object = None) -> None:
        self.version = version
        self.ids = [d.chunk_id for d in documents]
        # The articles these chunks belong to (what the knowledge base holds, at this index's version).
        self.article_ids = frozenset(d.article_id for d in documents if d.article_id)
        self._categories = np.array([d.category for d in documents], dtype=object)
        self._bm25: bm25s.BM25 | None = None
        tokens = [document_tokens(d) for d in documents]
        if any(tokens):
            self._bm25 = bm25s.BM25(k1=K1, b=B)
            self._bm25.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for `query` (zeros when no query word is indexed)."""
        tokens = TOKENIZE(query)
        if self._bm25 is None or not tokens:
            return np.zeros(len(self.ids), dtype=np.float32)
        known = [t for t in tokens if t in self._bm25.vocab_dict]
        if not known:
            return np.zeros(len(self.ids), dtype=np.float32)
        result: np.ndarray = self._bm25.get_scores(known)
        return result

    def search(self, query: str, *, limit: int, category: str | None = None) -> list[tuple[uuid.UUID, float]]:
        """The best `limit` chunks with a positive score, best first (ties by index order)."""
        scores = self.scores(query)
        if category is not None:
            scores = np.where(self._categories == category, scores, 0.0)
        positive = int(np.count_nonzero(scores > 0))
        if positive == 0:
            return []
        k = min(limit, positive)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        ordered = sorted(top.tolist(), key=lambda i: (-float(scores[i]), i))[:k]
        return [(self.ids[i], float(scores[i])) for i in ordered if scores[i] > 0]


class LexicalCache:
    """One index per process, rebuilt when the table's version moves on."""

    def __init__(self) -> None:
        self._index: LexicalIndex | None = None
        self._lock = threading.Lock()

    def current(self, version: object) -> LexicalIndex | None:
        """The cached index if it was built at `version`."""
        index = self._index
        return index if index is not None and index.version == version else None

    def build(self, documents: Sequence[LexicalDocument], *, version: object) -> LexicalIndex:
        """The index at `version`: built once, however many searches ask at the same time (blocking)."""
        # Searches that find the index stale at once queue here instead of each building a copy.
        with self._lock:
            index = self.current(version)
            if index is None:
                index = self._index = LexicalIndex(documents, version=version)
            return index

    def clear(self) -> None:
        """Forget the index (the next search rebuilds it)."""
        with self._lock:
            self._index = None


CACHE = LexicalCache()
