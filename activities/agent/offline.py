"""The offline responder: without a model, answer from the knowledge base or hand off.

It speaks the same tool-call protocol as a model (search first, then `send_response` or
`escalate_to_human`), so every reply still passes the reply check, and it says nothing it cannot
ground in a passage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from activities.agent.tools import ModelToolCall
from crm.repositories import agent_steps, messages
from workflows.contracts import AgentStepInput

MODEL_NAME = "offline-responder"

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]+")
_STOP = set(
    "a an and are as at be but by can could do does for from have how i if in is it its me my no not of on or our "
    "please so that the their them there this to was we what when where which who why will with would you your "
    "hi hello thanks thank there get got want need help".split()
)


async def offline_tool_calls(session: AsyncSession, inp: AgentStepInput) -> list[ModelToolCall]:
    """Search first; then answer from the best passage, or hand off when nothing grounds an answer."""
    question = "\n".join(await messages.contents_by_ids(session, message_ids=inp.message_ids)).strip()
    call_id = f"offline-{inp.turn}-{inp.step}"
    hits = await agent_steps.turn_search_hits(session, conversation_id=inp.conversation_id, turn=inp.turn)
    if hits is None:
        return [{"id": call_id, "name": "search_knowledge_base", "arguments": json.dumps({"query": question[:500]})}]
    answer = compose_grounded_answer(question, hits)
    if answer is None:
        return [{"id": call_id, "name": "escalate_to_human", "arguments": json.dumps({"reason": "no_answer"})}]
    return [{"id": call_id, "name": "send_response", "arguments": json.dumps({"message": answer})}]


def _content_words(value: str) -> set[str]:
    return {w for w in _WORD.findall(value.lower()) if w not in _STOP and len(w) > 2}


def compose_grounded_answer(question: str, hits: Sequence[Mapping[str, Any]], max_sentences: int = 4) -> str | None:
    """An extractive answer: the passage sentences that best match the question, with their source.

    Returns None when no passage shares enough meaning with the question to ground an answer.
    """
    wanted = _content_words(question)
    if not wanted or not hits:
        return None
    # Trust the search's order (hybrid ranking); skip only hits that share too little with the question.
    hit = next(
        (
            h
            for h in hits[:3]
            if len(wanted & _content_words(h.get("title", "") + " " + h.get("content", "")))
            / max(1, min(len(wanted), 6))
            >= 0.34
        ),
        None,
    )
    if hit is None:
        return None
    body = re.sub(r"^#+\s.*$", "", hit.get("content", ""), flags=re.MULTILINE)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", body) if len(s.strip()) > 20]
    if hit.get("title") and sentences and sentences[0].startswith(hit["title"]):
        sentences[0] = sentences[0][len(hit["title"]) :].lstrip(" :-—")
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(wanted & _content_words(sentences[i])), i))[
        :max_sentences
    ]
    chosen = [sentences[i] for i in sorted(ranked) if wanted & _content_words(sentences[i])]
    if not chosen:
        return None
    return f"Here is what our documentation says ({hit.get('title', 'TechCorp help')}):\n\n" + " ".join(chosen)
