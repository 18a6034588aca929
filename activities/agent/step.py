"""`AgentActivities`: one model step per activity, and the model's knowledge-base and hand-off tools.

Model text and tool arguments/results are stored in `agent_steps` (PostgreSQL), never in the
workflow history. Without OPENAI_API_KEY the offline responder takes the model's place.
"""

from __future__ import annotations

import json

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionMessageToolCallParam
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent.offline import MODEL_NAME as OFFLINE_MODEL
from activities.agent.offline import offline_tool_calls
from activities.agent.prompt import system_prompt
from activities.agent.tools import TOOL_NAMES, TOOLS, ModelToolCall
from activities.deps import ActivityDeps
from activities.heartbeat import heartbeating
from core.observability import LLM_COST, LLM_TOKENS
from core.vocabulary import MODEL_ESCALATION_REASONS, PRIORITIES, EscalationReason, Priority
from crm.db import transaction
from crm.repositories import agent_steps, messages
from workflows.contracts import AgentStepInput, AgentStepResult, ErrorType, ToolCall, ToolInput, ToolResult

# What one model call may write; a reply longer than this is cut by the API, not by us.
MAX_COMPLETION_TOKENS = 1200
# How much of the conversation the model sees besides the current turn's own steps.
TRANSCRIPT_MESSAGES = 16


class AgentActivities:
    """The model step and the tools that search the knowledge base and hand off to a human."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self._client: openai.AsyncOpenAI | None = None

    # ------------------------------------------------------------------ tools
    @activity.defn(name="search_knowledge_base")
    async def search_knowledge_base(self, inp: ToolInput) -> ToolResult:
        """Tool `search_knowledge_base`: hybrid (vector + full-text) search over the product docs."""
        from kb.search import search

        args = await self.deps.tool_arguments(inp)
        query = str(args.get("query", "")).strip()[:500]
        if not query:
            await self.deps.store_tool_result(inp, "search_knowledge_base", {"error": "query is required", "hits": []})
            return ToolResult(call_id=inp.call_id, name="search_knowledge_base", ok=False, summary="empty query")
        hits = await search(
            query, sessions=self.deps.sessions, embedder=self.deps.embedder(), limit=self.deps.settings.agent_kb_results
        )
        result = {
            "query": query,
            "hits": [
                {"article_id": h.article_id, "title": h.title, "content": h.content, "score": round(h.score, 4)}
                for h in hits
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
        """One model call (OpenAI-compatible, or the offline responder); stores its output in agent_steps."""
        async with heartbeating():
            if self.deps.settings.openai_configured:
                content, calls, usage, model = await self._openai_step(inp)
            else:
                async with self.deps.sessions() as session:
                    calls = await offline_tool_calls(session, inp)
                content, usage, model = None, (0, 0), OFFLINE_MODEL
        if not calls:
            # A plain answer is a send_response; nothing the model says reaches a customer unchecked.
            calls = [
                {
                    "id": f"auto-{inp.turn}-{inp.step}",
                    "name": "send_response",
                    "arguments": json.dumps({"message": content or ""}),
                }
            ]
        unknown = [c for c in calls if c["name"] not in TOOL_NAMES]
        async with transaction(self.deps.sessions) as session:
            step_id = await agent_steps.record_assistant_step(
                session,
                conversation_id=inp.conversation_id,
                turn=inp.turn,
                step=inp.step,
                content=content,
                tool_calls=calls,
                model=model,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
        for call in unknown:  # tell the model on its next step instead of failing the turn
            await self.deps.store_tool_result(
                ToolInput(**inp.model_dump(exclude={"message_ids"}), step_id=step_id, call_id=call["id"]),
                call["name"],
                {"error": f"unknown tool {call['name']}"},
            )
        return AgentStepResult(
            step_id=step_id,
            tool_calls=[ToolCall(call_id=c["id"], name=c["name"]) for c in calls],
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            model=model,
        )

    def _openai(self) -> openai.AsyncOpenAI:
        if self._client is None:
            s = self.deps.settings
            if s.openai_api_key is None:  # agent_step checks openai_configured first
                raise RuntimeError("OPENAI_API_KEY is not set")
            self._client = openai.AsyncOpenAI(
                api_key=s.openai_api_key.get_secret_value(),
                base_url=s.openai_base_url,
                max_retries=0,  # Temporal owns retries
                timeout=s.openai_timeout_seconds,
            )
        return self._client

    async def _conversation_messages(self, inp: AgentStepInput) -> list[ChatCompletionMessageParam]:
        """The recent transcript, then this turn's earlier steps (tool calls and their results)."""
        async with self.deps.sessions() as session:
            transcript = await messages.recent_transcript(
                session, conversation_id=inp.conversation_id, limit=TRANSCRIPT_MESSAGES
            )
            steps = await agent_steps.steps_before(
                session, conversation_id=inp.conversation_id, turn=inp.turn, step=inp.step
            )
        result: list[ChatCompletionMessageParam] = []
        for line in transcript:
            if line.direction == "inbound":
                result.append({"role": "user", "content": line.content})
            else:
                result.append({"role": "assistant", "content": line.content})
        for stored in steps:
            if stored.role == "assistant":
                tool_calls: list[ChatCompletionMessageToolCallParam] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in stored.payload.get("tool_calls", [])
                ]
                result.append({"role": "assistant", "content": stored.payload.get("content"), "tool_calls": tool_calls})
            else:
                result.append(
                    {
                        "role": "tool",
                        "tool_call_id": stored.tool_call_id or "",
                        "content": json.dumps(stored.payload.get("result")),
                    }
                )
        return result

    async def _openai_step(self, inp: AgentStepInput) -> tuple[str | None, list[ModelToolCall], tuple[int, int], str]:
        s = self.deps.settings
        messages_: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system_prompt(inp.channel, inp.ticket_number)},
            *await self._conversation_messages(inp),
        ]
        try:
            response = await self._openai().chat.completions.create(
                model=s.openai_model,
                messages=messages_,
                tools=TOOLS,
                tool_choice="auto",
                max_tokens=MAX_COMPLETION_TOKENS,
            )
        except (openai.RateLimitError, openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
            raise  # retryable: Temporal backs off and tries again
        except openai.APIStatusError as exc:
            raise ApplicationError(
                f"model rejected the request: HTTP {exc.status_code}", type=ErrorType.MODEL_REJECTED, non_retryable=True
            ) from exc
        choice = response.choices[0].message
        model = response.model or s.openai_model
        if response.usage:
            LLM_TOKENS.labels(model, "prompt").inc(response.usage.prompt_tokens)
            LLM_TOKENS.labels(model, "completion").inc(response.usage.completion_tokens)
            LLM_COST.labels(model).inc(
                response.usage.prompt_tokens / 1000 * s.llm_prompt_cost_per_1k_usd
                + response.usage.completion_tokens / 1000 * s.llm_completion_cost_per_1k_usd
            )
        calls: list[ModelToolCall] = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments or "{}"}
            for c in (choice.tool_calls or [])
            if c.type == "function"
        ]
        usage = (response.usage.prompt_tokens, response.usage.completion_tokens) if response.usage else (0, 0)
        return choice.content, calls, usage, model
