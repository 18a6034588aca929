"""The guardrail activities: the inbound decision before the model runs, the reply check after it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.agent.prompt import SYSTEM_PROMPT
from activities.deps import ActivityDeps
from activities.guardrails.classifier import classify
from activities.guardrails.output import check_output
from activities.guardrails.rules import evaluate_inbound
from core.logging import get_logger
from core.settings import Settings
from core.vocabulary import Channel
from crm.db import transaction
from crm.repositories import agent_steps, customers, messages
from workflows.contracts import (
    GuardrailInput,
    GuardrailResult,
    InboundClassification,
    OutputCheckResult,
    ToolInput,
)

log = get_logger(__name__)

_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


class GuardrailActivities:
    """The two guardrail activities, bound to the worker's shared deps."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name="check_inbound_guardrails")
    async def check_inbound_guardrails(self, inp: GuardrailInput) -> GuardrailResult:
        """Pre-LLM decision: answer, or escalate with a reason code (pricing, refund, legal, ...)."""
        async with self.deps.reads() as session:
            texts = await messages.contents_by_ids(session, message_ids=inp.message_ids)
        async with transaction(self.deps.sessions) as session:
            return await screen_inbound(
                session, self.deps.settings, message_ids=inp.message_ids, texts=texts, channel=inp.channel
            )

    @activity.defn(name="classify_inbound")
    async def classify_inbound(self, inp: GuardrailInput) -> InboundClassification:
        """With a model configured: may these messages, which the rules let through, still need a human?"""
        s = self.deps.settings
        if not s.openai_configured:
            # The workflow only asks when the config said a model is there; a worker without one
            # must not pass the messages as checked.
            raise RuntimeError("classify_inbound needs OPENAI_API_KEY on this worker")
        async with self.deps.reads() as session:
            texts = await messages.contents_by_ids(session, message_ids=inp.message_ids)
        limit_field = s.openai_max_tokens_parameter
        if limit_field == "auto":
            limit_field = "max_completion_tokens" if s.openai_base_url is None else "max_tokens"
        result = await classify(
            self.deps.openai(),
            model=s.openai_model,
            text="\n".join(texts),
            min_confidence=s.inbound_classifier_min_confidence,
            limit_field=limit_field,
        )
        if result.escalate:
            log.info("guardrails.classifier_escalate", reason=result.reason, confidence=round(result.confidence, 2))
        return result

    @activity.defn(name="check_reply_guardrails")
    async def check_reply_guardrails(self, inp: ToolInput) -> OutputCheckResult:
        """Post-LLM check: no prices, no refund promises, no features the knowledge base lacks, no prompt leak."""
        args = await self.deps.tool_arguments(inp)
        reply = str(args.get("message", ""))
        if not reply.strip():
            return OutputCheckResult(allowed=False, violations=["empty_reply"])
        passages = await self._turn_passages(inp.conversation_id, inp.turn)
        check = check_output(
            reply,
            kb_passages=passages,
            system_prompt=SYSTEM_PROMPT,
            customer_contacts=await self._customer_contacts(inp.customer_id),
        )
        if not check.allowed:
            log.warning("guardrails.reply_blocked", violations=check.violations)
        return OutputCheckResult(allowed=check.allowed, violations=check.violations)

    async def _customer_contacts(self, customer_id: str) -> list[str]:
        """Addresses a reply may mention: the customer's own email/phone numbers, and our support mailbox."""
        contacts: list[str] = []
        if _UUID.fullmatch(customer_id):  # "" before the customer is known: nobody's contacts are allowed
            async with self.deps.reads() as session:
                contacts = await customers.contact_points(session, customer_id=customer_id)
        if self.deps.settings.gmail_user_email:
            contacts.append(self.deps.settings.gmail_user_email)
        return contacts

    async def _turn_passages(self, conversation_id: str, turn: int) -> list[str]:
        """The passages this turn's knowledge-base searches returned: what a reply may claim."""
        async with self.deps.reads() as session:
            hits = await agent_steps.turn_search_hits(session, conversation_id=conversation_id, turn=turn)
        return [hit.get("content", "") for hit in hits or []]


async def screen_inbound(
    session: AsyncSession, settings: Settings, *, message_ids: Sequence[str], texts: Sequence[str], channel: Channel
) -> GuardrailResult:
    """The inbound decision on a turn's texts; the detected language is stored on its messages.

    Runs in the caller's transaction: `check_inbound_guardrails`, or the turn's intake
    (`record_inbound_turn`), which screens the messages it has just recorded.
    """
    decision = evaluate_inbound(
        "\n".join(texts),
        channel,
        negative_threshold=settings.negative_sentiment_threshold,
        semantic=settings.guardrails_semantic_enabled,
    )
    if decision.action == "escalate":
        log.info("guardrails.escalate", reason=decision.reason, sentiment=round(decision.sentiment, 3))
    if decision.language is not None and message_ids:
        await messages.record_language(session, message_ids=message_ids, language=decision.language)
    return GuardrailResult(
        action=decision.action,
        reason=decision.reason,
        language=decision.language,
        sentiment=decision.sentiment,
        matched=decision.matched[:10],
    )
