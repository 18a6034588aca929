"""`AgentActivities`: one model step per activity, and the model's knowledge-base and hand-off tools.

Model text and tool arguments/results are stored in `agent_steps` (PostgreSQL), never in the
workflow history. Without OPENAI_API_KEY the offline responder takes the model's place. The model
is any OpenAI-compatible server (OPENAI_BASE_URL): `activities.agent.model` turns what it answers
into tool calls, a repair request or a hand-off.
"""

from __future__ import annotations

import asyncio

import openai
from openai.types.chat import ChatCompletionMessageParam
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent.model import INVALID_CALL, ModelTurn, interpret, invalid_call_result, repaired_before, replay
from activities.agent.offline import MODEL_NAME as OFFLINE_MODEL
from activities.agent.offline import (
    SEARCH_PASSAGES,
    SEARCH_QUERY_CHARS,
    bank_section_first,
    bundled_matcher,
    heading_anchor,
    offline_decision,
)
from activities.agent.prompt import system_prompt
from activities.agent.tools import TOOLS, ModelToolCall
from activities.deps import ActivityDeps
from activities.guardrails.language import detect_language
from activities.heartbeat import heartbeating
from core.logging import get_logger
from core.observability import LLM_COST, LLM_TOKENS
from core.vocabulary import MODEL_ESCALATION_REASONS, PRIORITIES, EscalationReason, Priority
from crm.db import transaction
from crm.repositories import agent_steps, channel_configs, messages, notes
from kb.learning import is_learned
from kb.sections import section_texts
from kb.sections import whole_section as whole_section  # re-exported: its tests import it from here
from workflows.contracts import AgentStepInput, AgentStepResult, ErrorType, ToolCall, ToolInput, ToolResult

# What one model call may write; a reply longer than this is cut by the API, not by us.
MAX_COMPLETION_TOKENS = 1200
# How much of the conversation the model sees besides the current turn's own steps.
TRANSCRIPT_MESSAGES = 16
# `ApplicationError.type` of a step whose model output cannot be used (raised non-retryable: the
# workflow hands the conversation to a person with reason model_error).
MODEL_OUTPUT_UNUSABLE = "ModelOutputUnusable"

log = get_logger(__name__)


class AgentActivities:
    """The model step and the tools that search the knowledge base and hand off to a human."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    # ------------------------------------------------------------------ tools
    @activity.defn(name="search_knowledge_base")
    async def search_knowledge_base(self, inp: ToolInput) -> ToolResult:
        """Tool `search_knowledge_base`: hybrid (vector + full-text) search over the product docs."""
        from kb.search import search

        args = await self.deps.tool_arguments(inp)
        query = str(args.get("query", "")).strip()[:SEARCH_QUERY_CHARS]
        if not query:
            await self.deps.store_tool_result(inp, "search_knowledge_base", {"error": "query is required", "hits": []})
            return ToolResult(call_id=inp.call_id, name="search_knowledge_base", ok=False, summary="empty query")
        hits = await search(
            query, sessions=self.deps.sessions, embedder=self.deps.embedder(), limit=self.deps.settings.agent_kb_results
        )
        # The question bank's section first when it is sure of one (customers' own wordings; the
        # offline responder's evidence), then: a section too long for one chunk was stored in
        # pieces, and the model reads it whole.
        bank = await asyncio.to_thread(bundled_matcher().match, query)
        async with self.deps.reads() as session:
            hits = await bank_section_first(session, hits, bank)
            sections = await section_texts(session, hits)
        help_url = self.help_url()
        result = {
            "query": query,
            "hits": [
                {
                    "article_id": h.article_id,
                    "title": h.title,
                    "section": " > ".join(h.heading_path) or None,
                    # The help centre's page for the article, at the section's heading: what the reply cites.
                    # None for an answer the team wrote (issue 17): it has no help-centre page.
                    "url": None
                    if is_learned(h.article_id)
                    else f"{help_url}/help/{h.slug}" + (f"#{heading_anchor(h.section)}" if h.section else ""),
                    "content": content,
                    "score": round(h.score, 4),
                }
                for h, content in zip(hits, sections, strict=True)
            ],
        }
        await self.deps.store_tool_result(inp, "search_knowledge_base", result)
        titles = ", ".join(dict.fromkeys(h.article_id for h in hits))
        return ToolResult(
            call_id=inp.call_id, name="search_knowledge_base", summary=f"{len(hits)} hits: {titles}"[:300]
        )

    @activity.defn(name="escalate_to_human")
    async def escalate_to_human(self, inp: ToolInput) -> ToolResult:
        """Tool `escalate_to_human`: the model decided a person must answer."""
        args = await self.deps.tool_arguments(inp)
        given_reason, given_priority = args.get("reason"), args.get("priority")
        # A reason the model made up is recorded as the model's own request.
        reason: EscalationReason = given_reason if given_reason in MODEL_ESCALATION_REASONS else "agent_requested"
        priority: Priority | None = given_priority if given_priority in PRIORITIES else None
        await self.deps.store_tool_result(inp, "escalate_to_human", {"escalated": True, "reason": reason})
        return ToolResult(
            call_id=inp.call_id,
            name="escalate_to_human",
            summary=f"escalate: {reason}",
            escalate_reason=reason,
            escalate_priority=priority,
        )

    # ------------------------------------------------------------------ the model step
    @activity.defn(name="agent_step")
    async def agent_step(self, inp: AgentStepInput) -> AgentStepResult:
        """One model call (OpenAI-compatible, or the offline responder); stores its output in agent_steps.

        Invalid tool calls are recorded with a result telling the model what was wrong and are not
        run (one repair attempt per turn); output that cannot be used at all is recorded, then raised
        as a non-retryable `ModelOutputUnusable`, which the workflow turns into a hand-off.
        """
        resolved = False
        async with heartbeating():
            if self.deps.settings.openai_configured:
                decided, usage, model = await self._openai_step(inp)
            else:
                calls, resolved = await self._offline_step(inp)
                decided = ModelTurn(content=None, calls=calls, handoff=None if calls else "the responder chose nothing")
                usage, model = (0, 0), OFFLINE_MODEL
        async with transaction(self.deps.sessions) as session:
            step_id = await agent_steps.record_assistant_step(
                session,
                conversation_id=inp.conversation_id,
                turn=inp.turn,
                step=inp.step,
                content=decided.content,
                tool_calls=decided.calls,
                model=model,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
        for call in decided.calls:
            problem = decided.rejected.get(call["id"])
            if problem is not None:  # the model reads this on its next step instead of the turn failing
                await self.deps.store_tool_result(
                    ToolInput(**inp.model_dump(exclude={"message_ids"}), step_id=step_id, call_id=call["id"]),
                    INVALID_CALL,
                    invalid_call_result(problem, call["arguments"]),
                )
        if decided.handoff is not None:
            log.warning("agent.model_output_unusable", problem=decided.handoff[:300], model=model, step=inp.step)
            raise ApplicationError(
                f"model output unusable: {decided.handoff}"[:500], type=MODEL_OUTPUT_UNUSABLE, non_retryable=True
            )
        return AgentStepResult(
            step_id=step_id,
            tool_calls=[ToolCall(call_id=c["id"], name=c["name"]) for c in decided.runnable],
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            model=model,
            conversation_resolved=resolved,
        )

    async def _offline_step(self, inp: AgentStepInput) -> tuple[list[ModelToolCall], bool]:
        """The offline responder's step: its tool calls, and whether the customer said it is solved."""
        from kb.search import search

        async def search_sections(question: str) -> list[dict[str, object]]:
            # One passage per section (not per article): the responder picks the section to send.
            hits = await search(
                question,
                sessions=self.deps.sessions,
                embedder=self.deps.embedder(),
                limit=SEARCH_PASSAGES,
                per_article=None,
            )
            return [h.model_dump(mode="json") for h in hits]

        async with self.deps.reads() as session:
            decision = await offline_decision(session, inp, help_url=self.help_url(), search_sections=search_sections)
        return decision.calls, decision.resolved

    def help_url(self) -> str:
        """Where customers reach the gateway's help centre (links in replies point there)."""
        return self.deps.settings.customer_base_url

    async def _openai_step(self, inp: AgentStepInput) -> tuple[ModelTurn, tuple[int, int], str]:
        """Ask the model for the next step of this turn and interpret its answer."""
        s = self.deps.settings
        async with self.deps.reads() as session:
            transcript = await messages.recent_transcript(
                session, conversation_id=inp.conversation_id, limit=TRANSCRIPT_MESSAGES
            )
            steps = await agent_steps.steps_before(
                session, conversation_id=inp.conversation_id, turn=inp.turn, step=inp.step
            )
            style = await channel_configs.get_style(session, channel=inp.channel)
            turn_text = "\n".join(await messages.contents_by_ids(session, message_ids=inp.message_ids))
            handed_back = await notes.hand_back_notes(session, conversation_id=inp.conversation_id)
        # The language this turn is written in (the same detector the guardrails use): a hint that keeps
        # smaller models from answering a Spanish question in the English of the help centre.
        language = detect_language(turn_text).language
        prompt = system_prompt(
            inp.channel,
            inp.ticket_number,
            tone=style.tone,
            max_chars=style.max_response_length,
            language=language,
            hand_back_notes=[note.body for note in handed_back],
        )
        request: list[ChatCompletionMessageParam] = [{"role": "system", "content": prompt}, *replay(transcript, steps)]
        # OpenAI's current models take `max_completion_tokens` (reasoning models reject `max_tokens`);
        # servers behind OPENAI_BASE_URL (vLLM, Ollama, llama.cpp) all read `max_tokens`.
        limit_field = s.openai_max_tokens_parameter
        if limit_field == "auto":
            limit_field = "max_completion_tokens" if s.openai_base_url is None else "max_tokens"
        try:
            # No `tool_choice`: "auto" is the default wherever tools are given, and some servers
            # reject the explicit value unless started with extra flags (vLLM --enable-auto-tool-choice).
            response = await self.deps.openai().chat.completions.create(
                model=s.openai_model,
                messages=request,
                tools=TOOLS,
                max_tokens=MAX_COMPLETION_TOKENS if limit_field == "max_tokens" else openai.omit,
                max_completion_tokens=MAX_COMPLETION_TOKENS if limit_field == "max_completion_tokens" else openai.omit,
            )
        except (openai.RateLimitError, openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
            raise  # retryable: Temporal backs off and tries again
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409):  # request timeout, conflict: transient, as the client itself treats them
                raise
            raise ApplicationError(
                f"model rejected the request: HTTP {exc.status_code}", type=ErrorType.MODEL_REJECTED, non_retryable=True
            ) from exc
        model = response.model or s.openai_model
        usage = (
            int(getattr(response.usage, "prompt_tokens", 0) or 0),
            int(getattr(response.usage, "completion_tokens", 0) or 0),
        )
        LLM_TOKENS.labels(model, "prompt").inc(usage[0])
        LLM_TOKENS.labels(model, "completion").inc(usage[1])
        LLM_COST.labels(model).inc(
            usage[0] / 1000 * s.llm_prompt_cost_per_1k_usd + usage[1] / 1000 * s.llm_completion_cost_per_1k_usd
        )
        if not response.choices:
            raise RuntimeError("the model server answered without a choice")  # retryable: a server hiccup
        choice = response.choices[0]
        message = choice.message
        decided = interpret(
            content=message.content,
            refusal=getattr(message, "refusal", None),
            finish_reason=choice.finish_reason,
            raw_calls=message.tool_calls,
            turn=inp.turn,
            step=inp.step,
            repaired_before=repaired_before(steps),
        )
        return decided, usage, model
