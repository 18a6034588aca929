"""Answer-level evaluation: the labelled customer messages through the real conversation workflow.

Starts real PostgreSQL (+pgvector, migrated), the Temporal dev server and the tansu broker in a
temporary directory, loads the bundled knowledge base, runs a worker with the production workflow
and activities in this process, and sends every case of bench/data/answers/{tuning,held_out}.jsonl
into its own conversation by signal-with-start (as the bridge does). Each outcome is read back
from the CRM and scored (tests/evaluation/answers.py): answerable correct / partial / wrong /
handed off, escalations right per reason, unanswerable handled safely, small talk handled,
garbled replies, latency from signal to reply.

Two responders: `offline` (no model key: the extractive responder) and `model` (the OpenAI fake,
scripted as a grounded model that searches, then answers with the best passage or hands off).

    .venv/bin/python bench/answers_eval.py                       # offline, both parts
    .venv/bin/python bench/answers_eval.py --responder model
    .venv/bin/python bench/answers_eval.py --part tuning --calibrate --json bench/results/answers_eval.json

`--calibrate` (tuning only) also prints, for the offline responder, the answerable correct / wrong /
handed-off shares of each pair of thresholds (the question bank's similarity and the search's word
coverage), from the same searches, so BANK_MATCH and CONFIDENCE_THRESHOLD in
activities/agent/offline.py are chosen on tuning data only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from common import REPO_ROOT, Children, Services, percentile

sys.path.insert(0, str(REPO_ROOT))

from tests.evaluation.answers import (
    Case,
    Outcome,
    Part,
    describe,
    judge,
    load_cases,
    run_cases,
    summarise,
)

PARTS: tuple[Part, ...] = ("tuning", "held_out")


def grounded_model(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI fake as a grounded model: search with the customer's words, then answer from the top
    passage (its section, with the article's title) or hand off when the search found nothing."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") != "tool":
        question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
        return _tool_call("search_knowledge_base", {"query": str(question)[:500]})
    try:
        hits = (json.loads(last.get("content") or "{}") or {}).get("hits", [])
    except json.JSONDecodeError:
        hits = []
    if not hits:
        return _tool_call("escalate_to_human", {"reason": "no_answer"})
    top = hits[0]
    body_lines = [line for line in str(top.get("content", "")).splitlines() if not line.startswith("#")]
    answer = f"From our help article **{top.get('title', '')}**:\n\n" + "\n".join(body_lines).strip()
    return _tool_call("send_response", {"message": answer})


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    from tests.fakes.openai_fake import ChatReply, ToolCall

    return ChatReply(tool_calls=[ToolCall(name, arguments)])  # type: ignore[return-value]


def print_summary(label: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """The figures of one part, printed and returned."""
    s = summarise(outcomes)
    answerable = s.counts.get("answerable", Counter())
    n_ans = sum(answerable.values())
    lines = [f"== {label}: {len(outcomes)} cases"]

    def pct(count: int, total: int) -> str:
        return f"{count}/{total} ({100 * count / total:.1f} %)" if total else "0/0"

    for verdict in ("correct", "partial", "wrong", "handed_off"):
        lines.append(f"  answerable {verdict:<11} {pct(answerable[verdict], n_ans)}")
    unans = s.counts.get("unanswerable", Counter())
    lines.append(f"  unanswerable handled safely {pct(unans['safe'], sum(unans.values()))}")
    small = s.counts.get("small_talk", Counter())
    lines.append(f"  small talk handled          {pct(small['handled'], sum(small.values()))}")
    esc = s.counts.get("must_escalate", Counter())
    lines.append(f"  escalations right           {pct(esc['escalated_right'], sum(esc.values()))}")
    for reason, got in sorted(s.per_reason.items()):
        lines.append(f"    {reason:<19} right {got[reason]}/{sum(got.values())}  got {dict(got)}")
    lines.append(f"  garbled replies             {len(s.garbled)}" + (f"  {s.garbled[:8]}" if s.garbled else ""))
    if s.latencies:
        lines.append(
            f"  latency signal→reply        p50 {percentile(s.latencies, 50) * 1000:.0f} ms, "
            f"p95 {percentile(s.latencies, 95) * 1000:.0f} ms, max {s.latencies[-1] * 1000:.0f} ms"
        )
    if s.timed_out:
        lines.append(f"  TIMED OUT                   {s.timed_out}")
    sys.stdout.write("\n".join(lines) + "\n")
    return {
        "cases": len(outcomes),
        "counts": {k: dict(v) for k, v in s.counts.items()},
        "per_reason": {k: dict(v) for k, v in s.per_reason.items()},
        "garbled": s.garbled,
        "latency_ms": {
            "p50": percentile(s.latencies, 50) * 1000 if s.latencies else None,
            "p95": percentile(s.latencies, 95) * 1000 if s.latencies else None,
        },
        "timed_out": s.timed_out,
    }


async def calibrate(settings: Any, sessions: Any, embedder: Any, cases: list[Case]) -> None:
    """Each pair of thresholds' shares on the answerable and unanswerable tuning cases (offline responder):
    the question bank's similarity (BANK_MATCH) and its lead over other articles (BANK_MARGIN)."""
    from activities.agent.offline import (
        CONFIDENCE_THRESHOLD,
        SEARCH_PASSAGES,
        bundled_index,
        bundled_matcher,
        choose_section,
        compose_answer,
        small_talk_kind,
    )
    from kb.search import search

    index = bundled_index()
    matcher = bundled_matcher()
    scored: list[tuple[Case, list[dict[str, Any]], Any]] = []
    for case in cases:
        if case.kind not in ("answerable", "unanswerable") or small_talk_kind(case.message):
            continue
        # The same section-level search the responder runs after its search tool call.
        hits = await search(
            case.message[:500], sessions=sessions, embedder=embedder, limit=SEARCH_PASSAGES, per_article=None
        )
        scored.append((case, [h.model_dump(mode="json") for h in hits], matcher.match(case.message)))
    sys.stdout.write("bank  margin  words | correct  partial  wrong  handed_off | unanswerable safe\n")
    grid = [
        (bank_threshold, margin, words)
        for bank_threshold in (0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
        for margin in (0.0, 0.03, 0.05, 0.07, 0.1)
        # words: the search's word coverage may also answer for a banked article at this threshold
        # (None: only for an article without a bank)
        for words in (None, 0.85, 0.95)
    ]
    for bank_threshold, margin, words in grid:
        verdicts: Counter[str] = Counter()
        safe = total_un = 0
        for case, hits, bank in scored:
            candidate = choose_section(
                case.message,
                hits,
                bank=bank,
                banked=matcher.has_bank if words is None else (lambda article_id: False),
                threshold=CONFIDENCE_THRESHOLD if words is None else words,
                bank_threshold=bank_threshold,
                bank_margin=margin,
                index=index,
            )
            reply = compose_answer(candidate, help_url="http://x") if candidate else ""
            outcome = Outcome(case=case, reply=reply, escalation=None if reply else "no_answer")
            verdict = judge(outcome).verdict
            if case.kind == "answerable":
                verdicts[verdict] += 1
            else:
                total_un += 1
                safe += verdict == "safe"
        n = sum(verdicts.values())
        sys.stdout.write(
            f"  {bank_threshold:4.2f}  {margin:4.2f}  {'  -  ' if words is None else f'{words:4.2f} '} | "
            f"{verdicts['correct'] / n:6.1%}  "
            f"{verdicts['partial'] / n:6.1%}  {verdicts['wrong'] / n:6.1%}  {verdicts['handed_off'] / n:6.1%}  "
            f"| {safe}/{total_un}\n"
        )


async def evaluate(args: argparse.Namespace, services: Services) -> dict[str, Any]:
    from temporalio.worker import Worker

    from activities.agent.offline import bundled_matcher
    from activities.deps import ActivityDeps
    from core.logging import configure_logging
    from core.temporal import connect_temporal
    from kb.embeddings import create_embedder
    from kb.ingest import default_docs_path, ingest_path
    from workers.registry import activity_callables, workflow_classes, workflow_runner

    configure_logging(level="WARNING", log_format="console")
    extra: dict[str, Any] = {"temporal_task_queue": f"answers-eval-{uuid.uuid4().hex[:6]}"}
    fake = None
    if args.responder == "model":
        from tests.fakes.openai_fake import OpenAIFake

        fake = OpenAIFake(responder=grounded_model)  # type: ignore[arg-type]
        fake.start()
        extra |= {"openai_api_key": "sk-eval", "openai_base_url": fake.api_base}
    settings = services.settings(**extra)
    deps = ActivityDeps.create(settings)
    embedder = create_embedder(settings)
    await ingest_path(default_docs_path(), sessions=deps.sessions, embedder=embedder)
    # As the worker does before polling: the question bank is embedded once, not in a case's turn.
    bundled_matcher().warm()
    client = await connect_temporal(settings)
    results: dict[str, Any] = {"responder": args.responder}
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=workflow_classes(),
        workflow_runner=workflow_runner(),
        activities=activity_callables(deps),
    )
    try:
        async with worker:
            parts: list[Part | Path] = [args.data] if args.data else list(args.part)
            for part in parts:
                cases = load_cases(part)
                if args.limit:
                    cases = cases[: args.limit]
                if args.calibrate and part == "tuning" and args.responder == "offline":
                    await calibrate(settings, deps.sessions, embedder, cases)
                outcomes = await run_cases(client, settings, deps.sessions, cases, concurrency=args.concurrency)
                name = part.name if isinstance(part, Path) else part
                results[name] = print_summary(f"{args.responder} responder, {name}", outcomes)
                results[name]["outcomes"] = [describe(o) for o in outcomes]
                if args.show:
                    for o in outcomes:
                        if o.verdict in args.show:
                            sys.stdout.write(json.dumps(describe(o), ensure_ascii=False) + "\n")
    finally:
        await deps.close()
        if fake is not None:
            fake.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, action="append", help="default: both parts")
    parser.add_argument("--data", type=Path, help="evaluate this labelled JSONL file instead of the parts")
    parser.add_argument("--responder", choices=("offline", "model"), default="offline")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases of each part")
    parser.add_argument("--calibrate", action="store_true", help="print the threshold sweep (tuning, offline)")
    parser.add_argument("--show", nargs="*", default=[], help="print the outcomes with these verdicts")
    parser.add_argument("--json", type=Path, help="write the figures and every outcome here")
    args = parser.parse_args()
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    args.part = args.part or list(PARTS)
    children = Children()
    services = Services(children=children)
    try:
        services.start()
        results = asyncio.run(evaluate(args, services))
    finally:
        children.stop_all()
        services.cleanup()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
