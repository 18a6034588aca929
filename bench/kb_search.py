"""Benchmark the knowledge-base search at scale: latency of hybrid search, HNSW recall against exact.

For each size N it builds a scratch copy of the `knowledge_base` table (same columns, generated
tsvector and indexes) in a throw-away schema, fills it with N synthetic chunks — the bundled
TechCorp chunks, then copies of them with a share of their words swapped for random words of the
same vocabulary, each copy under its own article ids — embeds every one of them with the
configured embedder, builds the HNSW and GIN indexes, and runs the labelled questions through the
real `kb.search.search` (the schema is first on the connection's search_path). It reports:

* hybrid search latency, p50 and p95, end to end (query embedding and round trips included),
  and the latency of the exact k-nearest-neighbour query (sequential scan) for comparison;
* for a few `hnsw.ef_search` values: kNN latency and recall@5 of the HNSW index, the share of
  the exact 5 nearest chunks that the index returns;
* agreement@5 of hybrid search with and without the index (the articles it returns);
* answer@5: questions whose expected article (any copy of it) is in the hybrid top 5 - copies of
  one article are distinct articles to the search, so duplicates crowd the top 5 as N grows;
* whether the planner picks the HNSW index at all (on small tables a sequential scan is cheaper).

Usage (from the repo root):

    .venv/bin/python bench/kb_search.py                       # its own embedded PostgreSQL
    .venv/bin/python bench/kb_search.py --database-url postgresql://... --sizes 1000 20000 --json /tmp/kb.json
    .venv/bin/python bench/kb_search.py --quality            # recall on the labelled retrieval sets
    .venv/bin/python bench/kb_search.py --quality --tune vector_share=0.3,0.4 phrase_bonus=0,0.05

``--quality`` ingests the bundled articles into the (embedded or given) database's real table and
scores bench/data/retrieval/{tuning,held_out}.jsonl and tests/kb/kb_questions.jsonl per mode:
recall@1/@5 (an expected article in the top k), primary@5, section@5 (the primary article's
labelled section among the top-5 hits' heading paths) and MRR. ``--misses`` lists the tuning
set's misses only; ``--tune`` scores only the tuning set: held-out is for reporting.

With a database URL the database must be migrated (`crm-fte migrate`); the bench only creates and
drops its own schema there and never touches the real `knowledge_base` rows.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Running as `python bench/kb_search.py` puts bench/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from core.settings import Settings  # noqa: E402
from crm.db import create_sessionmaker  # noqa: E402
from kb.chunking import chunk_article, plain_text  # noqa: E402
from kb.embeddings import Embedder, create_embedder  # noqa: E402
from kb.ingest import default_docs_path, discover_articles  # noqa: E402
from kb.lexical import CACHE as LEXICAL_CACHE  # noqa: E402
from kb.search import CANDIDATES, EF_SEARCH, SearchMode, search  # noqa: E402

QUESTIONS = REPO_ROOT / "tests" / "kb" / "kb_questions.jsonl"
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_TOKENS = re.compile(r"(\s+)")


def synthetic_chunks(n: int, *, swap_rate: float, seed: int) -> list[dict[str, Any]]:
    """N chunk rows: the real chunks first, then copies with `swap_rate` of their body words swapped."""
    base = [c for a in discover_articles(default_docs_path()) for c in chunk_article(a)]
    vocabulary = sorted({w.lower() for c in base for w in _WORD.findall(plain_text(c.content))})
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        chunk = base[i % len(base)]
        copy = i // len(base)
        header, _, body = chunk.content.partition("\n\n")
        title = chunk.title
        if copy:
            title = f"{chunk.title} ({copy})"
            header = header.replace(f"# {chunk.title}", f"# {title}", 1)
            tokens = _TOKENS.split(body)
            for j, token in enumerate(tokens):
                if _WORD.fullmatch(token) and rng.random() < swap_rate:
                    tokens[j] = rng.choice(vocabulary)
            body = "".join(tokens)
        content = f"{header}\n\n{body}"
        rows.append(
            {
                "article_id": f"bench-{copy:04d}/{chunk.article_id}",
                "chunk_index": chunk.chunk_index,
                "title": title,
                "category": chunk.category,
                "content": content,
                "content_hash": hashlib.sha256(content.encode()).hexdigest(),
                "section": chunk.section,
                "heading_path": list(chunk.heading_path),
            }
        )
    return rows


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def _source_schemas(engine: AsyncEngine) -> tuple[str, str]:
    """Schemas of the migrated `knowledge_base` table and of the pgvector extension."""
    async with engine.connect() as conn:
        table_schema = await conn.scalar(
            text(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass('knowledge_base')"
            )
        )
        vector_schema = await conn.scalar(
            text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        )
    if table_schema is None or vector_schema is None:
        raise SystemExit("kb_search: the database is not migrated (no knowledge_base table): run `crm-fte migrate`")
    return str(table_schema), str(vector_schema)


async def _load(engine: AsyncEngine, schema: str, source: str, rows: list[dict[str, Any]], vectors: Any) -> float:
    """Create the scratch table and insert the rows (no ANN index yet); returns seconds."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP TABLE IF EXISTS "{schema}".knowledge_base'))
        await conn.execute(
            text(
                f'CREATE TABLE "{schema}".knowledge_base (LIKE "{source}".knowledge_base '
                "INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE)"
            )
        )
        await conn.execute(text(f'ALTER TABLE "{schema}".knowledge_base ADD PRIMARY KEY (id)'))
        statement = text(
            f'INSERT INTO "{schema}".knowledge_base '
            "(article_id, chunk_index, title, category, content, content_hash, section, heading_path, embedding, "
            "embedding_model) VALUES (:article_id, :chunk_index, :title, :category, :content, :content_hash, "
            ":section, :heading_path, CAST(:embedding AS vector), 'bench')"
        )
        for start in range(0, len(rows), 1000):
            batch = [
                {**row, "embedding": "[" + ",".join(f"{x:.7g}" for x in vector) + "]"}
                for row, vector in zip(rows[start : start + 1000], vectors[start : start + 1000], strict=True)
            ]
            await conn.execute(statement, batch)
    return time.perf_counter() - started


async def _build_indexes(engine: AsyncEngine, schema: str) -> dict[str, float]:
    """The production indexes (HNSW cosine, GIN on the tsvector); seconds per index."""
    timings: dict[str, float] = {}
    async with engine.begin() as conn:
        for name, ddl in (
            ("hnsw", "USING hnsw (embedding vector_cosine_ops)"),
            ("gin", "USING gin (search_vector)"),
        ):
            started = time.perf_counter()
            await conn.execute(text(f'CREATE INDEX bench_kb_{name} ON "{schema}".knowledge_base {ddl}'))
            timings[name] = time.perf_counter() - started
        await conn.execute(text(f'ANALYZE "{schema}".knowledge_base'))
    return timings


async def _plan_uses_hnsw(engine: AsyncEngine, vector: list[float]) -> bool:
    """Whether the planner picks the HNSW index for the vector half of the search query."""
    literal = "[" + ",".join(f"{x:.7g}" for x in vector) + "]"
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}"))
        plan = await conn.execute(
            text(
                "EXPLAIN SELECT id FROM knowledge_base WHERE embedding IS NOT NULL "
                "ORDER BY embedding <=> CAST(:v AS vector) LIMIT 40"
            ),
            {"v": literal},
        )
        return any("bench_kb_hnsw" in line for (line,) in plan)


def overlap(found: list[Any], reference: list[Any], key: Callable[[Any], Any]) -> float:
    """Mean share of each reference top 5 that the found top 5 contains."""
    return statistics.fmean(
        len({key(h) for h in x[:5]} & {key(h) for h in y[:5]}) / max(1, len(y[:5]))
        for x, y in zip(found, reference, strict=True)
    )


async def _timed(calls: list[Callable[[], Awaitable[Any]]]) -> tuple[list[float], list[Any]]:
    timings: list[float] = []
    results: list[Any] = []
    for call in calls:
        started = time.perf_counter()
        results.append(await call())
        timings.append((time.perf_counter() - started) * 1000)
    return timings, results


async def bench_size(
    n: int, *, url: str, schema: str, source: str, search_path: str, embedder: Embedder, args: argparse.Namespace
) -> dict[str, Any]:
    """Build a table of `n` synthetic chunks and measure search on it."""
    admin = create_async_engine(url)
    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": search_path}})
    # For the ef_search sweep: the index even where the planner would rather scan a small table.
    forced = create_async_engine(
        url, connect_args={"server_settings": {"search_path": search_path, "enable_seqscan": "off"}}
    )
    try:
        rows = synthetic_chunks(n, swap_rate=args.swap_rate, seed=args.seed)
        started = time.perf_counter()
        vectors = await embedder.embed([plain_text(r["content"]) for r in rows])
        embed_seconds = time.perf_counter() - started
        insert_seconds = await _load(admin, schema, source, rows, vectors)
        index_seconds = await _build_indexes(admin, schema)
        # The version counter the BM25 cache watches is the real table's (the scratch table has no
        # trigger): drop the index so the first search builds it from this size's rows.
        LEXICAL_CACHE.clear()

        questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
        queries = [str(q["question"]) for q in questions]
        sessions = create_sessionmaker(engine)
        forced_sessions = create_sessionmaker(forced)
        uses_index = await _plan_uses_hnsw(engine, (await embedder.embed([queries[0]]))[0])

        def run(
            mode: SearchMode, per_article: int | None, *, index: bool = False, **options: Any
        ) -> list[Callable[[], Awaitable[Any]]]:
            target = forced_sessions if index else sessions
            return [
                functools.partial(
                    search, q, sessions=target, embedder=embedder, mode=mode, per_article=per_article, **options
                )
                for q in queries
            ]

        await _timed(run("hybrid", 1)[:10])  # warm-up: connections, caches, the embedder
        hybrid_ms: list[float] = []
        exact_ms: list[float] = []
        for _ in range(args.rounds):
            timings, hybrid_hits = await _timed(run("hybrid", 1))
            hybrid_ms += timings
            timings, exact_hits = await _timed(run("vector", None, exact=True))
            exact_ms += timings
        _, exact_hybrid_hits = await _timed(run("hybrid", 1, exact=True))
        sweep: list[dict[str, Any]] = []
        for ef in args.ef_search:
            vector_ms: list[float] = []
            for _ in range(args.rounds):
                timings, vector_hits = await _timed(run("vector", None, index=True, ef_search=ef))
                vector_ms += timings
            sweep.append(
                {
                    "ef_search": max(ef, CANDIDATES),
                    "p50_ms": percentile(vector_ms, 50),
                    "p95_ms": percentile(vector_ms, 95),
                    "recall_at_5": overlap(vector_hits, exact_hits, lambda h: h.chunk_id),
                }
            )

        answered = statistics.fmean(
            bool(set(q["expected"]) & {h.article_id.split("/", 1)[-1] for h in hits[:5]})
            for q, hits in zip(questions, hybrid_hits, strict=True)
        )
        return {
            "chunks": n,
            "embed_seconds": embed_seconds,
            "insert_seconds": insert_seconds,
            "hnsw_build_seconds": index_seconds["hnsw"],
            "gin_build_seconds": index_seconds["gin"],
            "planner_uses_hnsw": uses_index,
            "queries": len(hybrid_ms),
            "hybrid_p50_ms": percentile(hybrid_ms, 50),
            "hybrid_p95_ms": percentile(hybrid_ms, 95),
            "vector_exact_p50_ms": percentile(exact_ms, 50),
            "vector_exact_p95_ms": percentile(exact_ms, 95),
            "hnsw": sweep,
            "hybrid_agreement_at_5": overlap(hybrid_hits, exact_hybrid_hits, lambda h: h.article_id),
            "answer_at_5": answered,
        }
    finally:
        await forced.dispose()
        await engine.dispose()
        await admin.dispose()


async def run_bench(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size in turn, in one scratch schema dropped at the end."""
    settings = Settings(database_url=SecretStr(url))
    embedder = create_embedder(settings)
    admin = create_async_engine(settings.database_dsn)
    schema = f"kb_bench_{secrets.token_hex(4)}"
    try:
        source, vector_schema = await _source_schemas(admin)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        search_path = ", ".join(dict.fromkeys([f'"{schema}"', f'"{vector_schema}"', f'"{source}"']))
        results = []
        for n in args.sizes:
            print(f"-- {n} chunks: generating, embedding ({embedder.model_name}), loading, indexing ...", flush=True)
            result = await bench_size(
                n,
                url=settings.database_dsn,
                schema=schema,
                source=source,
                search_path=search_path,
                embedder=embedder,
                args=args,
            )
            results.append(result)
            print(
                f"   embedded in {result['embed_seconds']:.1f}s, inserted in {result['insert_seconds']:.1f}s, "
                f"HNSW built in {result['hnsw_build_seconds']:.1f}s, GIN in {result['gin_build_seconds']:.1f}s",
                flush=True,
            )
        return results
    finally:
        if not args.keep:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


# ----------------------------------------------------------------------------- quality

RETRIEVAL_SETS = {
    "tuning": REPO_ROOT / "bench" / "data" / "retrieval" / "tuning.jsonl",
    "held_out": REPO_ROOT / "bench" / "data" / "retrieval" / "held_out.jsonl",
    "kb_questions": QUESTIONS,
}


def load_set(path: Path) -> list[dict[str, Any]]:
    """One labelled question set (JSON lines)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_set(items: list[dict[str, Any]], results: list[list[Any]]) -> dict[str, Any]:
    """recall@1/@5 (any expected article), primary@5, section@5, MRR, and recall@5 per style."""
    n = len(items)
    any1 = any5 = primary5 = section5 = mrr = 0.0
    by_style: dict[str, list[float]] = {}
    misses: list[str] = []
    for item, hits in zip(items, results, strict=True):
        expected = list(item["expected"])
        found = [h.article_id for h in hits]
        hit5 = bool(set(expected) & set(found[:5]))
        any5 += hit5
        any1 += bool(found[:1] and found[0] in expected)
        primary5 += expected[0] in found[:5]
        mrr += next((1 / r for r, a in enumerate(found, start=1) if a in expected), 0.0)
        section = item.get("section")
        if section:
            section5 += any(h.article_id == expected[0] and section in h.heading_path for h in hits[:5])
        by_style.setdefault(str(item.get("style", "-")), []).append(float(hit5))
        if not hit5:
            misses.append(f"{item.get('id', '-')}: {item['question'][:80]!r} -> want {expected[0]}, got {found[:3]}")
    with_section = sum(1 for i in items if i.get("section")) or 1
    return {
        "questions": n,
        "recall_at_1": any1 / n,
        "recall_at_5": any5 / n,
        "primary_at_5": primary5 / n,
        "section_at_5": section5 / with_section,
        "mrr": mrr / n,
        "recall_at_5_by_style": {k: statistics.fmean(v) for k, v in sorted(by_style.items())},
        "misses": misses,
    }


async def evaluate(sessions: Any, embedder: Embedder, items: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """Run every question of a set through the real search (top 10, one section per article)."""
    results = [
        await search(str(item["question"]), sessions=sessions, embedder=embedder, limit=10, **options) for item in items
    ]
    return score_set(items, results)


def parse_grid(values: list[str]) -> list[dict[str, float]]:
    """`name=v1,v2` options into every combination (for --tune)."""
    grid: list[dict[str, float]] = [{}]
    for value in values:
        name, _, choices = value.partition("=")
        grid = [{**g, name: float(c)} for g in grid for c in choices.split(",")]
    return grid


async def run_quality(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the bundled articles into the real table and score the labelled sets."""
    from kb.ingest import ingest_path

    settings = Settings(database_url=SecretStr(url))
    embedder = create_embedder(settings)
    engine = create_async_engine(settings.database_dsn)
    sessions = create_sessionmaker(engine)
    try:
        await ingest_path(default_docs_path(), sessions=sessions, embedder=embedder, prune=True)
        report: dict[str, Any] = {"embedder": embedder.model_name, "sets": {}, "tuning_grid": []}
        if args.tune:
            tuning = load_set(RETRIEVAL_SETS["tuning"])
            for options in parse_grid(args.tune):
                figures = await evaluate(sessions, embedder, tuning, **options)
                figures.pop("misses")
                report["tuning_grid"].append({"options": options, **figures})
                print(
                    f"   tune {options}: recall@5={figures['recall_at_5']:.3f} primary@5={figures['primary_at_5']:.3f} "
                    f"section@5={figures['section_at_5']:.3f} MRR={figures['mrr']:.3f}",
                    flush=True,
                )
            return report
        for name, path in RETRIEVAL_SETS.items():
            for mode in ("hybrid", "vector", "text"):
                figures = await evaluate(sessions, embedder, load_set(path), mode=mode)
                report["sets"][f"{name}/{mode}"] = figures
        return report
    finally:
        await engine.dispose()


def print_quality(report: dict[str, Any], *, show_misses: bool) -> None:
    print(f"kb search quality ({report['embedder']}), any expected article in the top k, one hit per article")
    header = f"{'set/mode':<22} {'n':>4} {'recall@1':>8} {'recall@5':>8} {'primary@5':>9} {'section@5':>9} {'MRR':>6}"
    print(header)
    print("-" * len(header))
    for name, r in report["sets"].items():
        print(
            f"{name:<22} {r['questions']:>4} {r['recall_at_1']:>8.3f} {r['recall_at_5']:>8.3f} "
            f"{r['primary_at_5']:>9.3f} {r['section_at_5']:>9.3f} {r['mrr']:>6.3f}"
        )
    for name, r in report["sets"].items():
        if name.endswith("/hybrid"):
            styles = ", ".join(f"{k} {v:.2f}" for k, v in r["recall_at_5_by_style"].items())
            print(f"{name} recall@5 by style: {styles}")
    if show_misses:
        # Only the tuning set's misses: the held-out set is for reporting, never for reading failures.
        for miss in report["sets"].get("tuning/hybrid", {}).get("misses", []):
            print("  miss", miss)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'chunks':>7} {'hybrid p50/p95 ms':>18} {'exact-kNN p50/p95 ms':>21} {'hybrid agree@5':>14} "
        f"{'answer@5':>8} {'planner uses HNSW':>17}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['chunks']:>7} {r['hybrid_p50_ms']:>8.1f} / {r['hybrid_p95_ms']:<7.1f} "
            f"{r['vector_exact_p50_ms']:>10.1f} / {r['vector_exact_p95_ms']:<8.1f} "
            f"{r['hybrid_agreement_at_5']:>14.3f} {r['answer_at_5']:>8.3f} "
            f"{'yes' if r['planner_uses_hnsw'] else 'no':>17}"
        )
    print()
    header = f"{'chunks':>7} {'ef_search':>9} {'HNSW kNN p50/p95 ms':>20} {'HNSW recall@5 vs exact':>22}"
    print("HNSW index (used even where the planner would scan, enable_seqscan=off):")
    print(header)
    print("-" * len(header))
    for r in results:
        for row in r["hnsw"]:
            print(
                f"{r['chunks']:>7} {row['ef_search']:>9} {row['p50_ms']:>9.1f} / {row['p95_ms']:<8.1f} "
                f"{row['recall_at_5']:>22.3f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="A migrated CRM database (default: $DATABASE_URL, else an embedded PostgreSQL in a temp dir).",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000], help="Corpus sizes in chunks.")
    parser.add_argument("--rounds", type=int, default=2, help="Passes over the labelled questions per size.")
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=sorted({CANDIDATES, 100, EF_SEARCH, 2 * EF_SEARCH}),
        help=f"hnsw.ef_search values to measure vector kNN at (search() uses {EF_SEARCH}).",
    )
    parser.add_argument("--swap-rate", type=float, default=0.2, help="Share of words swapped in synthetic copies.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch schema (for EXPLAIN by hand).")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument(
        "--quality",
        action="store_true",
        help="Instead of latency: ingest the bundled articles and score the labelled question sets "
        "(bench/data/retrieval tuning and held_out, tests/kb/kb_questions.jsonl).",
    )
    parser.add_argument(
        "--tune",
        nargs="+",
        metavar="OPTION=V1,V2",
        help="With --quality: score only the tuning set, for every combination of these search() options.",
    )
    parser.add_argument("--misses", action="store_true", help="With --quality: list the tuning set's misses.")
    args = parser.parse_args()

    from core.logging import configure_logging

    configure_logging(level="WARNING", log_format="console")
    server = None
    scratch: Path | None = None
    url = args.database_url
    if not url:
        from crm import db
        from workers.embedded import EmbeddedPostgres, free_port

        scratch = Path(tempfile.mkdtemp(prefix="kb-bench-"))
        server = EmbeddedPostgres(scratch, free_port(), scratch / "logs", database="kb_bench")
        print(f"-- starting an embedded PostgreSQL in {scratch}", flush=True)
        server.start()
        url = server.url()
        db.upgrade(url)
    try:
        if args.quality:
            report = asyncio.run(run_quality(url, args))
            print()
            if not args.tune:
                print_quality(report, show_misses=args.misses)
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
            return 0
        results = asyncio.run(run_bench(url, args))
    finally:
        if server is not None:
            server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(
        f"kb search benchmark - {results[0]['queries'] if results else 0} queries per size "
        f"(labelled questions x {args.rounds}), synthetic copies with {args.swap_rate:.0%} of words swapped, "
        f"every chunk embedded (no vector reuse); latency end to end incl. query embedding; "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print_table(results)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in {"database_url", "json"}}
        args.json.write_text(json.dumps({"args": settings, "results": results}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
