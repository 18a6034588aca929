"""Agent steps: the model's turns and its tools' results, kept in PostgreSQL instead of workflow history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


class StoredSearchHit(TypedDict, total=False):
    """One knowledge-base passage as `search_knowledge_base` stored it for the model."""

    article_id: str
    title: str
    content: str
    score: float
    section: str | None  # the heading path under the title ("Section > Subsection"), None for the introduction
    url: str  # the help-centre page of the section, which a reply cites


@dataclass(frozen=True)
class StoredStep:
    """A row of the turn so far: an assistant message (with its tool calls) or one tool's result."""

    role: str
    tool_call_id: str | None
    payload: dict[str, Any]
    step: int = 0  # which step of the turn: a tool result belongs to the assistant message of its step


_SEARCH_RESULTS = text(
    "SELECT payload FROM agent_steps WHERE conversation_id = :c AND turn = :t AND role = 'tool' "
    "AND payload->>'name' = 'search_knowledge_base' ORDER BY step"
)


async def turn_search_hits(session: AsyncSession, *, conversation_id: str, turn: int) -> list[StoredSearchHit] | None:
    """Every passage the knowledge-base searches of this turn returned, in step order.

    None when the turn has not searched yet; an empty list when it searched and found nothing
    (the offline responder tells the two apart: search first, then answer or hand off).
    """
    payloads = (await session.execute(_SEARCH_RESULTS, {"c": conversation_id, "t": turn})).scalars().all()
    if not payloads:
        return None
    return [hit for payload in payloads for hit in payload.get("result", {}).get("hits", [])]


async def record_assistant_step(
    session: AsyncSession,
    *,
    conversation_id: str,
    turn: int,
    step: int,
    content: str | None,
    tool_calls: Sequence[Mapping[str, object]],
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> str:
    """Store what the model said and which tools it called; a retried step overwrites its own row."""
    step_id = await session.scalar(
        text(
            "INSERT INTO agent_steps (conversation_id, turn, step, role, payload, prompt_tokens, completion_tokens) "
            "VALUES (:c, :t, :s, 'assistant', CAST(:p AS jsonb), :pt, :ct) "
            "ON CONFLICT (conversation_id, turn, step, tool_call_id) DO UPDATE SET payload = EXCLUDED.payload, "
            "prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens RETURNING id"
        ),
        {
            "c": conversation_id,
            "t": turn,
            "s": step,
            "p": json.dumps({"content": content, "tool_calls": tool_calls, "model": model}),
            "pt": prompt_tokens,
            "ct": completion_tokens,
        },
    )
    return str(step_id)


async def tool_call_arguments(session: AsyncSession, *, step_id: str, call_id: str) -> str | None:
    """The raw JSON arguments the model gave one tool call of a stored step; None when there is no such call."""
    payload = await session.scalar(text("SELECT payload FROM agent_steps WHERE id = :id"), {"id": step_id})
    for call in (payload or {}).get("tool_calls", []):
        if call.get("id") == call_id:
            return str(call.get("arguments") or "{}")
    return None


async def store_tool_result(
    session: AsyncSession,
    *,
    conversation_id: str,
    turn: int,
    step: int,
    call_id: str,
    name: str,
    result: dict[str, Any],
) -> None:
    """A tool's output for the model's next step; storing it again (a retried tool) replaces it."""
    await session.execute(
        text(
            "INSERT INTO agent_steps (conversation_id, turn, step, role, tool_call_id, payload) "
            "VALUES (:c, :t, :s, 'tool', :id, CAST(:p AS jsonb)) "
            "ON CONFLICT (conversation_id, turn, step, tool_call_id) DO UPDATE SET payload = EXCLUDED.payload"
        ),
        {
            "c": conversation_id,
            "t": turn,
            "s": step,
            "id": call_id,
            "p": json.dumps({"name": name, "result": result}, default=str),
        },
    )


async def steps_before(session: AsyncSession, *, conversation_id: str, turn: int, step: int) -> list[StoredStep]:
    """The turn's earlier steps, in the order the model sees them (each assistant step, then its tools)."""
    rows = await session.execute(
        text(
            "SELECT role, tool_call_id, payload, step FROM agent_steps WHERE conversation_id = :c AND turn = :t "
            "AND step < :s ORDER BY step, role, created_at"
        ),
        {"c": conversation_id, "t": turn, "s": step},
    )
    return [StoredStep(role=r.role, tool_call_id=r.tool_call_id, payload=r.payload, step=r.step) for r in rows]


# --- used by gateway
@dataclass(frozen=True)
class KnowledgeHit:
    """One article a `search_knowledge_base` call returned, with the turn and the query that found it."""

    conversation_id: uuid.UUID
    turn: int
    query: str | None
    article_id: str | None
    title: str | None
    score: float | None


def _score(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def knowledge_hits(session: AsyncSession, *, conversation_ids: Sequence[uuid.UUID]) -> list[KnowledgeHit]:
    """Every hit of the knowledge-base searches in these conversations, in the order they were made."""
    rows = await session.execute(
        text(
            "SELECT s.conversation_id, s.turn, s.payload->'result'->>'query' AS query, h->>'article_id' AS article_id, "
            "h->>'title' AS title, h->>'score' AS score FROM agent_steps s "
            "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.payload->'result'->'hits') = 'array' "
            "  THEN s.payload->'result'->'hits' ELSE '[]'::jsonb END) AS h "
            "WHERE s.conversation_id = ANY(:ids) AND s.role = 'tool' "
            "AND s.payload->>'name' = 'search_knowledge_base' ORDER BY s.created_at, s.turn, s.step"
        ),
        {"ids": list(conversation_ids)},
    )
    return [
        KnowledgeHit(
            conversation_id=r.conversation_id,
            turn=r.turn,
            query=r.query,
            article_id=r.article_id,
            title=r.title,
            score=_score(r.score),
        )
        for r in rows
    ]
