"""Learning from resolved tickets (issue 17): a person's answer to a `no_answer` gap becomes a KB entry.

When the AI found nothing and a person answered, the customer's question and the person's answer
become a *suggested* knowledge-base entry (`kb_suggestions`, one per escalation). An agent reviews
it in the console: edits it, approves it (it is embedded and upserted into `knowledge_base` as
article `learned-<id>` through the same chunking and embedding as the bundled articles, in the
same transaction, so `kb.search` finds it once that commits) or rejects it.

Where suggestions come from. A person answers a `no_answer` escalation in one of two ways, and the
workflow records the reply at a different moment in each:

* ownership flow: replies (`reply` actions) are recorded *before* `hand_back`/`close` runs the
  `resolve_escalation_record` activity;
* one-step resolve: `resolve_escalation_record` runs *first*, and the reply it carries is formatted
  and recorded (`prepare_reply`) only afterwards.

So the suggestion is *derived* from what the CRM holds, never handed over by the workflow:
`collect_suggestions` turns every resolved `no_answer` escalation that has a person's reply and no
suggestion yet into one (the unique escalation id makes a second finding a no-op). It runs in three
places: inside `resolve_escalation_record`'s transaction (immediate for the ownership flow), inside
`prepare_reply`'s when it records a person's reply (the one-step path, whose reply arrives after the
resolve), and when the review queue is listed (anything a failed attempt missed). Nothing depends
on the order of the workflow's activities, and the workflow itself is untouched.

The stored replies are what the customer read (greeting, signature, ticket reference).
`strip_framing` takes those off, by the channel's greeting and signature (`channel_configs`) and
the person's name and ticket number, so the suggestion holds the person's words only (kb/ may not
import the channel formatter in activities/; tests/gateway/test_kb_learning_api.py runs the real
formatter of every channel through it). A reviewer sees and may edit both texts anyway.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from core.logging import get_logger
from crm.repositories import api_keys, channel_configs, kb_suggestions
from crm.repositories.channel_configs import ChannelStyle
from crm.repositories.kb_suggestions import ReplyPart, SuggestionRecord, UnlearnedGap
from kb.chunking import Article
from kb.embeddings import Embedder
from kb.ingest import ingest_article

log = get_logger(__name__)

# Approved entries live in the knowledge base under this prefix; the help centre does not serve them.
LEARNED_PREFIX = "learned-"
LEARNED_CATEGORY = "learned"
QUESTION_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 5000
TITLE_MAX_CHARS = 160
_SPACES = re.compile(r"\s+")


def learned_article_id(suggestion_id: uuid.UUID) -> str:
    """The stable knowledge-base article id of an approved suggestion."""
    return f"{LEARNED_PREFIX}{suggestion_id}"


def is_learned(article_id: str) -> bool:
    """Whether a knowledge-base article came from an approved suggestion (no help-centre page)."""
    return article_id.startswith(LEARNED_PREFIX)


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


# What the channel formatter writes around a person's reply besides the configured greeting and
# signature: their signature lines and the ticket reference (activities/channels/formatting.py).
_CLOSING_LINES = frozenset({"best regards,", "techcorp support"})


def _greeting_pattern(template: str | None) -> re.Pattern[str]:
    before, named, after = (template or "Hi {name},").partition("{name}")
    return re.compile(re.escape(before) + (r"[^\n]*" + re.escape(after) if named else "") + r"$")


def strip_framing(
    parts: list[ReplyPart], *, style: ChannelStyle, ticket_number: str | None, human_agent: str | None
) -> str:
    """The person's words from the stored parts of one reply: the greeting, signature and ticket
    reference the channel added are taken off; anything else stays for the reviewer."""
    lines = "\n".join(p.content for p in parts).strip().split("\n")
    if lines and _greeting_pattern(style.greeting).match(lines[0].strip()):
        lines = lines[1:]
    signature = {line.strip().lower() for line in (style.signature or "").split("\n") if line.strip()}

    def framing(line: str) -> bool:
        words = line.strip()
        lowered = words.lower()
        return (
            not words
            or lowered in _CLOSING_LINES
            or lowered in signature
            or bool(human_agent and (words == human_agent or words.startswith(f"— {human_agent},")))
            or bool(ticket_number and ticket_number in words and len(words) < 120)
        )

    while lines and framing(lines[-1]):
        lines.pop()
    return "\n".join(lines).strip()


async def _answer_text(session: AsyncSession, gap: UnlearnedGap) -> str:
    """The person's reply(ies) to the gap, one paragraph each, without the channel's framing."""
    style = await channel_configs.get_style(session, channel=gap.channel)
    # One reply is one or more parts (a long WhatsApp reply); part 1 starts the next reply.
    groups: list[list[ReplyPart]] = []
    for part in gap.reply_parts:
        if groups and part.part > 1:
            groups[-1].append(part)
        else:
            groups.append([part])
    answers = []
    for group in groups:
        text = strip_framing(group, style=style, ticket_number=gap.ticket_number, human_agent=group[0].human_agent)
        if text:
            answers.append(text)
    return "\n\n".join(answers)


async def collect_suggestions(session: AsyncSession, *, escalation_id: str | uuid.UUID | None = None) -> int:
    """Store a pending suggestion for each resolved `no_answer` gap a person answered (or for one escalation).

    Idempotent: an escalation that has a suggestion is skipped, and the unique key settles a race.
    Returns how many this call stored.
    """
    stored = 0
    for gap in await kb_suggestions.unlearned_gaps(session, escalation_id=escalation_id):
        question = _clip("\n".join(p.strip() for p in gap.question_parts if p.strip()), QUESTION_MAX_CHARS)
        answer = _clip(await _answer_text(session, gap), ANSWER_MAX_CHARS)
        if not question or not answer:
            continue  # nothing the customer asked (or nothing said) to learn from
        record = await kb_suggestions.insert_suggestion(
            session,
            conversation_id=gap.conversation_id,
            escalation_id=gap.escalation_id,
            question=question,
            answer=answer,
        )
        if record is not None:
            stored += 1
            log.info(
                "kb.suggestion_created",
                suggestion_id=str(record.id),
                escalation_id=str(gap.escalation_id),
                conversation_id=str(gap.conversation_id),
            )
    return stored


def learned_article(record: SuggestionRecord) -> Article:
    """The knowledge-base article an approved suggestion becomes: titled by the question, the answer its body."""
    title = _clip(_SPACES.sub(" ", record.question).strip(), TITLE_MAX_CHARS)
    return Article(
        article_id=learned_article_id(record.id),
        title=title,
        category=LEARNED_CATEGORY,
        body=f"# {title}\n\n{record.answer.strip()}\n",
        metadata={"source": "kb_suggestion", "escalation_id": str(record.escalation_id)},
    )


async def _pending(session: AsyncSession, suggestion_id: uuid.UUID) -> SuggestionRecord:
    record = await kb_suggestions.get_suggestion(session, suggestion_id=suggestion_id, for_update=True)
    if record is None:
        raise NotFound(f"no suggestion {suggestion_id}")
    if record.status != "pending":
        raise Conflict(f"suggestion {suggestion_id} was already {record.status} by {record.reviewed_by}")
    return record


async def _audit(
    session: AsyncSession,
    *,
    agent_name: str,
    api_key_id: uuid.UUID | None,
    action: str,
    record: SuggestionRecord,
    via: str,
) -> None:
    # The audit names the suggestion; its text stays in kb_suggestions (one place to clean on erasure).
    await api_keys.record_human_action(
        session,
        agent_name=agent_name,
        api_key_id=api_key_id,
        action=action,
        conversation_id=record.conversation_id,
        detail={
            "suggestion_id": str(record.id),
            "escalation_id": str(record.escalation_id),
            "article_id": record.article_id,
            "via": via,
        },
    )


async def edit_suggestion(
    session: AsyncSession,
    *,
    suggestion_id: uuid.UUID,
    question: str | None,
    answer: str | None,
    agent_name: str,
    api_key_id: uuid.UUID | None,
    via: str = "api",
) -> SuggestionRecord:
    """Change a pending suggestion's question and/or answer (NotFound; Conflict once reviewed) and audit it."""
    await _pending(session, suggestion_id)
    record = await kb_suggestions.edit_pending(
        session, suggestion_id=suggestion_id, question=question, answer=answer, editor=agent_name
    )
    if record is None:  # unreachable: the row is locked and pending
        raise Conflict(f"suggestion {suggestion_id} is no longer pending")
    await _audit(
        session, agent_name=agent_name, api_key_id=api_key_id, action="kb_suggestion.edited", record=record, via=via
    )
    log.info("kb.suggestion_edited", suggestion_id=str(suggestion_id), agent=agent_name)
    return record


async def approve_suggestion(
    session: AsyncSession,
    *,
    suggestion_id: uuid.UUID,
    embedder: Embedder,
    agent_name: str,
    api_key_id: uuid.UUID | None,
    via: str = "api",
) -> SuggestionRecord:
    """Embed the entry into the knowledge base, mark it approved and audit it, all in the caller's transaction."""
    pending = await _pending(session, suggestion_id)
    article = learned_article(pending)
    report = await ingest_article(session, article, embedder=embedder)
    record = await kb_suggestions.mark_reviewed(
        session, suggestion_id=suggestion_id, status="approved", reviewer=agent_name, article_id=article.article_id
    )
    if record is None:  # unreachable: the row is locked and pending
        raise Conflict(f"suggestion {suggestion_id} is no longer pending")
    await _audit(
        session, agent_name=agent_name, api_key_id=api_key_id, action="kb_suggestion.approved", record=record, via=via
    )
    log.info(
        "kb.suggestion_approved",
        suggestion_id=str(suggestion_id),
        article_id=article.article_id,
        chunks=report.inserted + report.updated + report.unchanged,
        agent=agent_name,
    )
    return record


async def reject_suggestion(
    session: AsyncSession,
    *,
    suggestion_id: uuid.UUID,
    agent_name: str,
    api_key_id: uuid.UUID | None,
    via: str = "api",
) -> SuggestionRecord:
    """Reject a pending suggestion (it never reaches the knowledge base) and audit it."""
    await _pending(session, suggestion_id)
    record = await kb_suggestions.mark_reviewed(
        session, suggestion_id=suggestion_id, status="rejected", reviewer=agent_name
    )
    if record is None:  # unreachable: the row is locked and pending
        raise Conflict(f"suggestion {suggestion_id} is no longer pending")
    await _audit(
        session, agent_name=agent_name, api_key_id=api_key_id, action="kb_suggestion.rejected", record=record, via=via
    )
    log.info("kb.suggestion_rejected", suggestion_id=str(suggestion_id), agent=agent_name)
    return record
