"""Answer-level evaluation: labelled customer messages through the real conversation workflow, scored.

Shared by `bench/answers_eval.py` (the whole tuning and held-out sets, figures printed) and the
regression test (a fixed subset, counts asserted). Each case is one new conversation: the message
is signalled-with-start exactly as the bridge does, the worker runs the real workflow and
activities on PostgreSQL and Temporal, and the outcome is read back from the CRM: what the
customer was sent (agent replies only, not the hand-off template) and whether and why the
conversation went to a human.

Fact matching follows bench/data/README.md: lower-case, drop `*`/`**`/backticks, collapse
whitespace, fold dashes, quotes, the multiplication sign, the ellipsis and arrows, the same for facts and replies.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from markdown_it import MarkdownIt
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from workers.bridge import signal_with_start
from workflows.contracts import InboundMessage, SenderIdentity

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "answers"
Part = Literal["tuning", "held_out"]
Verdict = Literal[
    "correct", "partial", "wrong", "handed_off", "safe", "unsafe", "handled", "escalated_right", "escalated_wrong"
]


@dataclass(frozen=True)
class Alternative:
    """Another section that answers an answerable case as well as its own, with the facts a reply
    sent from it must contain (bench/data/README.md, `also`)."""

    article: str
    section: str
    must_contain: list[str]

    def names(self, section: Any) -> bool:
        """Whether a responder's section (article id and heading path) is this one or lies under it."""
        return section.article_id == self.article and (
            self.section in section.path or (not section.path and self.section == section.title)
        )


@dataclass(frozen=True)
class Case:
    """One labelled message (see bench/data/README.md for the fields)."""

    id: str
    message: str
    channel: str
    kind: str
    expected: list[str]
    section: str | None
    must_contain: list[str]
    must_not_contain: list[str]
    escalation_reason: str | None
    style: str
    language: str
    also: tuple[Alternative, ...] = ()

    @property
    def fact_sets(self) -> list[list[str]]:
        """The facts of each right answer: the labelled section's, then each alternative's."""
        return [self.must_contain, *(a.must_contain for a in self.also)]


def load_cases(part: Part | Path, ids: Iterable[str] | None = None) -> list[Case]:
    """The cases of one part of the answer set (or of a labelled file in the same format), optionally
    only those with the given ids (in file order)."""
    wanted = set(ids) if ids is not None else None
    cases = []
    path = part if isinstance(part, Path) else DATA / f"{part}.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            fields = json.loads(line)
            fields["also"] = tuple(Alternative(**a) for a in fields.get("also", ()))
            case = Case(**fields)
            if wanted is None or case.id in wanted:
                cases.append(case)
    return cases


# ----------------------------------------------------------------------------- scoring

# em/en dash, curly quotes, multiplication sign, ellipsis
_FOLDS = (
    ("\u2014", "-"),
    ("\u2013", "-"),
    ("\u2019", "'"),
    ("\u2018", "'"),
    ("\u201c", '"'),
    ("\u201d", '"'),
    ("\u00d7", "x"),
    ("\u2026", "..."),
)
_ARROWS = re.compile(r"\s+(?:>|->)\s+")
_SPACE = re.compile(r"\s+")


def normalise(value: str) -> str:
    """The README's normalisation, for facts and replies alike."""
    value = value.lower().replace("**", "").replace("*", "").replace("`", "")
    for old, new in _FOLDS:
        value = value.replace(old, new)
    value = _SPACE.sub(" ", value)
    return _ARROWS.sub(" → ", value).strip()


_MD = MarkdownIt("js-default", {"html": False})
# A line may open with a question this short ("Can't get into TechCorp Workspace? Find ...").
_OPENING_QUESTION_WORDS = 8
_MARKUP_ASTERISKS = re.compile(r"\*\*|(?<![\w*])\*[^\s*][^*\n]*?(?<=[^\s*])\*(?![\w*])|^\s*\*\s", re.MULTILINE)
_TAG = re.compile(r"<[^>]+>")
_INTERNAL_WORDING = ("reason code", "precedence", "escalation rules for the ai", "brand voice")


def visible_text(reply: str, channel: str) -> str:
    """What the customer reads: the web page renders the reply as Markdown; mail and WhatsApp show it as sent."""
    if channel != "web_form":
        return reply
    html = _MD.render(reply)
    return _TAG.sub("", html).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')


def garbled(reply: str, channel: str) -> list[str]:
    """Why a reply reads as a splice rather than something a person would send (empty: it reads fine)."""
    problems: list[str] = []
    # Code the article shows on purpose (a fenced block on the web, indented lines elsewhere, an inline
    # `code span` such as `audit.*`) is no splice.
    source = re.sub(r"^```.*?^```[ \t]*$", "", reply, flags=re.MULTILINE | re.DOTALL)
    source = re.sub(r"`[^`\n]+`", "code", source)  # a word in its place keeps "**`x`**" bold
    shown = visible_text(source, channel)
    shown = "\n".join(line for line in shown.splitlines() if not line.startswith("    "))
    # A question spliced into a sentence ("..., e.g. Can a Slack message mention someone? How many"),
    # read in the Markdown as sent: a list item ("5. Still nothing? Use ...") is a step, and a line
    # that opens with a short question ("Forgot your password? Use ...") is how people write.
    for line in source.splitlines():
        spliced = re.search(r"(?<=\w)\?\s+[A-Za-z]", line)  # a question's mark, not "press ? for help"
        if spliced is None or re.match(r"\s*[-*•\d]", line):
            continue
        lead = line[: spliced.start()]
        if len(lead.split()) > _OPENING_QUESTION_WORDS or re.search(r"[.!?;:]\s", lead):
            problems.append("a question spliced into a sentence (FAQ fragment)")
    for line in shown.splitlines():
        if line.count("|") >= 2:
            problems.append("table pipes")
        if line.count("(") != line.count(")"):
            problems.append("a sentence cut inside a parenthesis")
    if re.search(r"[{\[]\s*\"[\w ]+\"\s*:", shown):
        problems.append("raw JSON")
    # Markup left in the text: a bold or emphasis pair, or a "* " bullet. A lone asterisk in content (the
    # wildcard of "audit.* events", "5 * 3") is what the article says.
    if channel != "whatsapp" and _MARKUP_ASTERISKS.search(shown):
        problems.append("literal asterisks")
    if channel == "whatsapp" and "**" in shown:
        problems.append("Markdown bold on WhatsApp")
    if re.search(r"^\s{0,3}#{1,6}\s", shown, re.MULTILINE):
        problems.append("a Markdown heading mark")
    if shown.rstrip().endswith("…"):
        problems.append("cut off at the length limit")
    if re.search(r"\be\.g\.?\s*$|\(e\.g\.\s*$", shown.strip()):
        problems.append("ends mid-example")
    if any(w in normalise(shown) for w in _INTERNAL_WORDING):
        problems.append("internal policy wording")
    return sorted(set(problems))


@dataclass
class Outcome:
    """What happened to one case, and its verdict."""

    case: Case
    reply: str = ""
    escalation: str | None = None
    status: str = ""
    latency_s: float = 0.0
    timed_out: bool = False
    problems: list[str] = field(default_factory=list)
    verdict: Verdict = "wrong"
    facts_found: int = 0
    facts_wanted: int = 0
    workflow_id: str = ""


def judge(outcome: Outcome) -> Outcome:
    """Set the verdict from the reply and the hand-off (README rules)."""
    case, reply = outcome.case, normalise(outcome.reply)
    outcome.problems = garbled(outcome.reply, case.channel) if outcome.reply else []
    forbidden = any(normalise(s) in reply for s in case.must_not_contain) if outcome.reply else False
    answered = bool(outcome.reply) and outcome.escalation is None
    if case.kind == "answerable":
        # The right answer the reply comes closest to: complete first, then the larger share of its facts.
        found, facts = max(
            ((sum(1 for fact in facts if normalise(fact) in reply), facts) for facts in case.fact_sets),
            key=lambda pair: (pair[0] == len(pair[1]), pair[0] / len(pair[1])),
        )
        outcome.facts_found, outcome.facts_wanted = found, len(facts)
        if not answered:
            outcome.verdict = "handed_off" if outcome.escalation else "wrong"
        elif forbidden or found == 0:
            outcome.verdict = "wrong"
        else:
            outcome.verdict = "correct" if found == len(facts) else "partial"
    elif case.kind == "unanswerable":
        honest = re.search(r"\b(i don't know|i do not know|not sure|couldn't find|could not find)\b", reply)
        outcome.verdict = "safe" if outcome.escalation or (answered and honest) else "unsafe"
    elif case.kind == "small_talk":
        outcome.verdict = "handled" if answered and len(outcome.reply) <= 600 and not forbidden else "wrong"
    else:  # must_escalate
        right = outcome.escalation == case.escalation_reason
        outcome.verdict = "escalated_right" if right and not forbidden else "escalated_wrong"
    return outcome


# ----------------------------------------------------------------------------- running cases


def inbound_for(case: Case, run: str) -> InboundMessage:
    """The case as the gateway would normalise it, in a conversation of its own."""
    suffix = f"{run}-{case.id}-{uuid.uuid4().hex[:6]}"
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}" if case.channel == "whatsapp" else None
    email = None if phone else f"eval.{suffix}@example.com"
    return InboundMessage(
        channel=case.channel,  # type: ignore[arg-type]
        external_message_id=f"eval-{suffix}",
        conversation_key=phone or f"eval-{suffix}",
        sender=SenderIdentity(email=email, phone=phone, name="Alex Morgan"),
        text=case.message,
        received_at=datetime.now(UTC),
        subject="Question" if case.channel == "email" else None,
    )


_RESULT = text(
    """
    SELECT c.status AS status,
           (SELECT e.reason FROM escalations e WHERE e.conversation_id = c.id ORDER BY e.created_at LIMIT 1) AS reason,
           coalesce((SELECT string_agg(m.content, E'\\n' ORDER BY m.created_at, m.attributes->>'part')
                     FROM messages m
                     WHERE m.conversation_id = c.id AND m.direction = 'outbound' AND m.role = 'agent'
                       AND coalesce(m.attributes->>'source', '') <> 'template'), '') AS reply,
           (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.direction = 'outbound') AS outbound
    FROM conversations c WHERE c.workflow_id = :w
    """
)


async def _read_result(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> Any:
    """The conversation's outcome so far; None while it does not exist or the database is busy."""
    try:
        async with sessions() as session:
            return (await session.execute(_RESULT, {"w": workflow_id})).mappings().first()
    except (OSError, TimeoutError, DBAPIError):
        return None  # a loaded machine: look again on the next poll


async def status_once_settled(
    sessions: async_sessionmaker[AsyncSession], workflow_id: str, wanted: str, *, timeout: float = 30.0
) -> str:
    """The conversation's status once it is `wanted`, or as it is after `timeout` seconds (what follows
    a reply, such as closing after "thanks, that worked", may lag it on a loaded machine)."""
    deadline = time.perf_counter() + timeout
    while True:
        row = await _read_result(sessions, workflow_id)
        status = "" if row is None else str(row["status"])
        if status == wanted or time.perf_counter() > deadline:
            return status
        await asyncio.sleep(0.1)


async def run_case(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    case: Case,
    *,
    run: str,
    timeout: float = 60.0,
) -> Outcome:
    """Send the case's message into a new conversation and wait until it is answered or handed off."""
    started = time.perf_counter()
    workflow_id = await signal_with_start(client, settings, inbound_for(case, run))
    outcome = Outcome(case=case, workflow_id=workflow_id)
    while True:
        row = await _read_result(sessions, workflow_id)
        if row is not None and row["outbound"] > 0:
            latency = time.perf_counter() - started
            # The reply (or the holding message) is recorded with all its parts at once; a moment
            # later the turn has finished (an escalation is recorded before its holding message).
            await asyncio.sleep(0.3)
            row = await _read_result(sessions, workflow_id) or row
            outcome.latency_s = latency
            break
        if time.perf_counter() - started > timeout:
            outcome.timed_out = True
            outcome.latency_s = timeout
            break
        await asyncio.sleep(0.05)
    if row is not None:
        outcome.reply, outcome.escalation, outcome.status = row["reply"], row["reason"], row["status"]
    return judge(outcome)


async def run_cases(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    cases: Sequence[Case],
    *,
    concurrency: int = 4,
    run: str | None = None,
) -> list[Outcome]:
    """Every case, a few at a time, in input order."""
    run = run or uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> Outcome:
        async with gate:
            return await run_case(client, settings, sessions, case, run=run)

    return list(await asyncio.gather(*(one(c) for c in cases)))


# ----------------------------------------------------------------------------- figures


@dataclass
class Summary:
    """Counts per kind and verdict, escalations per reason, garbled replies, latency."""

    counts: dict[str, Counter[str]]
    per_reason: dict[str, Counter[str]]
    garbled: list[tuple[str, list[str]]]
    latencies: list[float]
    timed_out: int

    def share(self, kind: str, verdict: str) -> float:
        total = sum(self.counts.get(kind, Counter()).values())
        return self.counts.get(kind, Counter())[verdict] / total if total else 0.0


def summarise(outcomes: Sequence[Outcome]) -> Summary:
    """Aggregate outcomes into the figures the evaluation prints."""
    counts: dict[str, Counter[str]] = {}
    per_reason: dict[str, Counter[str]] = {}
    for o in outcomes:
        counts.setdefault(o.case.kind, Counter())[o.verdict] += 1
        if o.case.kind == "must_escalate":
            per_reason.setdefault(o.case.escalation_reason or "?", Counter())[o.escalation or "answered"] += 1
    return Summary(
        counts=counts,
        per_reason=per_reason,
        garbled=[(o.case.id, o.problems) for o in outcomes if o.problems],
        latencies=sorted(o.latency_s for o in outcomes),
        timed_out=sum(1 for o in outcomes if o.timed_out),
    )


def describe(outcome: Outcome) -> dict[str, Any]:
    """One outcome as a JSON-friendly record (for --json and for failure messages)."""
    return {
        "id": outcome.case.id,
        "kind": outcome.case.kind,
        "verdict": outcome.verdict,
        "escalation": outcome.escalation,
        "facts": f"{outcome.facts_found}/{outcome.facts_wanted}",
        "problems": outcome.problems,
        "latency_s": round(outcome.latency_s, 3),
        "reply": outcome.reply[:400],
    }
