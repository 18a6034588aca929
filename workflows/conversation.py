"""ConversationWorkflow: one durable workflow per support conversation.

Everything that happens to a conversation is an event in this workflow's history: a customer
message (signal `inbound_message`), a human's resolution (signal `resolve_escalation`), a timer
(SLA, idle). Every side effect is an activity with its own timeout and retry policy, so a crash
anywhere resumes where it was. Message bodies stay in PostgreSQL: the history carries ids and
short fields.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.contracts import (
        INBOUND_SIGNAL,
        RESOLVE_ESCALATION_SIGNAL,
        RESOLVE_ESCALATION_UPDATE,
        AgentStepInput,
        AgentStepResult,
        BumpEscalationInput,
        CarriedState,
        CloseInput,
        ConversationConfig,
        ConversationInput,
        ConversationState,
        CustomerRef,
        EnsureTicketInput,
        EscalateInput,
        EscalationReason,
        EscalationState,
        GuardrailInput,
        GuardrailResult,
        InboundMessage,
        MessageSummary,
        OpenConversationInput,
        OutputCheckResult,
        PreparedReply,
        PrepareReplyInput,
        Priority,
        RecordedMessage,
        RecordInboundInput,
        ResolutionOutcome,
        ResolveEscalation,
        ResolveEscalationInput,
        SendResult,
        TicketRef,
        ToolInput,
        ToolResult,
        TurnMetrics,
        conversation_workflow_id,
    )
    from workflows.policies import (
        CPU_RETRY,
        CPU_TIMEOUT,
        DB_RETRY,
        DB_SCHEDULE_TO_CLOSE,
        DB_TIMEOUT,
        KB_TIMEOUT,
        LLM_HEARTBEAT,
        LLM_RETRY,
        LLM_TIMEOUT,
        SEND_RETRY,
        SEND_SCHEDULE_TO_CLOSE,
        SEND_TIMEOUT,
        add_business_hours,
    )

MAX_SEEN_IDS = 1000
MAX_LAST_MESSAGES = 10
# Marks histories in which the short steps run as local activities (before: regular activities).
LOCAL_ACTIVITIES_PATCH = "short-steps-as-local-activities"
REASON_PRIORITY: dict[str, Priority] = {
    "security": "urgent",
    "legal": "high",
    "refund": "high",
    "negative_sentiment": "high",
    "pricing": "medium",
    "human_request": "medium",
    "unsafe_output": "medium",
    "model_error": "medium",
    "budget": "medium",
    "no_answer": "medium",
    "agent_requested": "medium",
}
NEXT_PRIORITY: dict[str, Priority] = {"low": "medium", "medium": "high", "high": "urgent", "urgent": "urgent"}
TOOL_ACTIVITIES = {"search_knowledge_base", "create_ticket", "get_customer_history", "escalate_to_human"}


@workflow.defn(name="ConversationWorkflow")
class ConversationWorkflow:
    """A customer conversation on one channel, from first message to close, across human hand-offs."""

    @workflow.init
    def __init__(self, inp: ConversationInput) -> None:
        carried = inp.carried_state or CarriedState()
        self.channel = inp.channel
        self.conversation_key = inp.conversation_key
        self.status = carried.status
        self.conversation_id = carried.conversation_id
        self.customer_id = carried.customer_id
        self.customer_email = carried.customer_email
        self.customer_phone = carried.customer_phone
        self.ticket_number = carried.ticket_number
        self.escalation: EscalationState | None = carried.escalation
        self.seen: list[str] = list(carried.seen_message_ids)
        self.seen_set = set(self.seen)
        self.pending: list[InboundMessage] = list(carried.pending)
        self.turns = carried.turns
        self.turns_this_run = 0
        self.tokens_used = carried.tokens_used
        self.last_sentiment = carried.last_sentiment
        self.last_messages: list[MessageSummary] = list(carried.last_messages)
        self.config = carried.config
        self.resolution: ResolveEscalation | None = None
        self.resolution_outcome: ResolutionOutcome | None = None
        self.reply_counter = carried.replies

    # ------------------------------------------------------------------ signals and queries
    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, message: InboundMessage) -> None:
        """A customer message; a redelivered one (same external id) is ignored."""
        if message.external_message_id in self.seen_set:
            workflow.logger.info("conversation.duplicate_ignored", extra={"id": message.external_message_id})
            return
        self.seen_set.add(message.external_message_id)
        self.seen.append(message.external_message_id)
        self.pending.append(message)

    @workflow.signal(name=RESOLVE_ESCALATION_SIGNAL)
    def resolve_escalation(self, resolution: ResolveEscalation) -> None:
        """A human's reply; only the first one for an open escalation counts."""
        if self.status != "escalated" or self.resolution is not None:
            workflow.logger.warning("conversation.resolution_ignored", extra={"status": self.status})
            return
        self.resolution = resolution

    @workflow.update(name=RESOLVE_ESCALATION_UPDATE)
    async def resolve_escalation_update(self, resolution: ResolveEscalation) -> ResolutionOutcome:
        """Like the signal, but answers once the human's reply went out (API and console use this)."""
        self.resolution = resolution
        self.resolution_outcome = None
        await workflow.wait_condition(lambda: self.resolution_outcome is not None)
        assert self.resolution_outcome is not None
        return self.resolution_outcome

    @resolve_escalation_update.validator
    def _validate_resolution(self, resolution: ResolveEscalation) -> None:
        if self.status != "escalated" or self.resolution is not None:
            raise ValueError(f"conversation is not awaiting a human (status {self.status})")

    @workflow.query(name="state")
    def state(self) -> ConversationState:
        return ConversationState(
            workflow_id=workflow.info().workflow_id,
            channel=self.channel,
            conversation_key=self.conversation_key,
            status=self.status,  # type: ignore[arg-type]
            conversation_id=self.conversation_id,
            customer_id=self.customer_id,
            ticket_number=self.ticket_number,
            escalation=self.escalation,
            turns=self.turns,
            pending_messages=len(self.pending),
            last_messages=self.last_messages,
        )

    # ------------------------------------------------------------------ main loop
    @workflow.run
    async def run(self, inp: ConversationInput) -> str:
        if self.config is None:
            run_activity = workflow.execute_local_activity if self._local() else workflow.execute_activity
            self.config = await run_activity(
                "load_conversation_config",
                start_to_close_timeout=CPU_TIMEOUT,
                retry_policy=CPU_RETRY,
                result_type=ConversationConfig,
            )
        config = self.config
        while True:
            if self.status == "escalated":
                await self._wait_for_human()
            elif not self.pending:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self.pending), timeout=timedelta(seconds=config.idle_timeout_seconds)
                    )
                except TimeoutError:
                    await self._on_idle()
            else:
                await self._turn()
            if self.status == "closed":
                if self.pending:
                    # Messages arrived while closing: they start a fresh conversation on the same key.
                    self._continue_as_new(fresh=True)
                await workflow.wait_condition(workflow.all_handlers_finished)
                return "closed"
            if (
                workflow.info().is_continue_as_new_suggested() or self.turns_this_run >= config.max_turns_per_run
            ) and workflow.all_handlers_finished():
                self._continue_as_new(fresh=False)

    # ------------------------------------------------------------------ one turn
    async def _turn(self) -> None:
        assert self.config is not None
        batch, self.pending = self.pending, []
        started = workflow.time()
        new_ids = await self._record(batch)
        if not new_ids:
            return
        await self._ensure_ticket(batch[0])
        self.turns += 1
        self.turns_this_run += 1
        if self.status == "escalated":
            return  # recorded for the human; the AI stays quiet
        guard = await self._db(
            "check_inbound_guardrails",
            GuardrailInput(message_ids=new_ids, channel=self.channel),
            GuardrailResult,
            "pre-LLM guardrails",
            CPU_TIMEOUT,
        )
        self.last_sentiment = guard.sentiment
        prompt_tokens = completion_tokens = 0
        if guard.action == "escalate":
            reason: EscalationReason = guard.reason or "human_request"  # type: ignore[assignment]
            await self._escalate(reason)
        else:
            prompt_tokens, completion_tokens = await self._agent_loop(new_ids)
        await self._db(
            "record_turn_metrics",
            TurnMetrics(
                conversation_id=self._conversation(),
                channel=self.channel,
                latency_ms=(workflow.time() - started) * 1000,
                sentiment=guard.sentiment,
                escalated=self.status == "escalated",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                turn=self.turns,
            ),
            None,
            summary="record turn metrics",
        )

    async def _record(self, batch: list[InboundMessage]) -> list[str]:
        """Resolve the customer, open the conversation, store each message; returns new message ids."""
        new_ids: list[str] = []
        for message in batch:
            customer = await self._db(
                "resolve_customer", message, CustomerRef, summary=f"identify {message.channel} sender"
            )
            if self.customer_id is None:
                self.customer_id = customer.customer_id
            self._identity(customer)
            if self.conversation_id is None:
                ref = await self._db(
                    "open_conversation",
                    OpenConversationInput(
                        workflow_id=workflow.info().workflow_id,
                        run_id=workflow.info().run_id,
                        channel=self.channel,
                        conversation_key=self.conversation_key,
                        customer_id=self.customer_id,
                        subject=message.subject,
                    ),
                    str,
                )
                self.conversation_id = ref
            recorded = await self._db(
                "record_inbound_message",
                RecordInboundInput(conversation_id=self.conversation_id, message=message),
                RecordedMessage,
                summary=f"record inbound {message.external_message_id[:40]}",
            )
            # `duplicate` means the row already existed: a retried activity whose first attempt
            # committed, or a reset replaying this turn. The signal-level dedupe above already
            # decided this message is new to the conversation, so the turn must still run; the
            # replies it produces are idempotent by key.
            new_ids.append(recorded.message_id)
            self._remember(recorded.message_id, "inbound", "customer", recorded.preview)
        return new_ids

    async def _ensure_ticket(self, first: InboundMessage) -> None:
        if self.ticket_number is not None:
            return
        ticket = await self._db(
            "ensure_ticket",
            EnsureTicketInput(
                conversation_id=self._conversation(),
                customer_id=self.customer_id or "",
                channel=self.channel,
                subject=first.subject or first.text[:120],
                category=first.metadata.get("category", "other"),
                priority=first.metadata.get("priority", "medium"),  # type: ignore[arg-type]
            ),
            TicketRef,
            summary="create ticket (once per conversation)",
        )
        self.ticket_number = ticket.ticket_number
        self._upsert([sa.TICKET_NUMBER.value_set(ticket.ticket_number)])
        self._memo()

    async def _agent_loop(self, message_ids: list[str]) -> tuple[int, int]:
        """Model step → tool activities, bounded by steps and the conversation's token budget."""
        assert self.config is not None
        prompt = completion = 0
        for step in range(self.config.max_agent_steps):
            if self.tokens_used >= self.config.max_tokens_per_conversation:
                await self._escalate("budget")
                return prompt, completion
            try:
                result = await workflow.execute_activity(
                    "agent_step",
                    AgentStepInput(
                        conversation_id=self._conversation(),
                        customer_id=self.customer_id or "",
                        channel=self.channel,
                        ticket_number=self.ticket_number,
                        turn=self.turns,
                        step=step,
                        message_ids=message_ids,
                    ),
                    start_to_close_timeout=LLM_TIMEOUT,
                    heartbeat_timeout=LLM_HEARTBEAT,
                    retry_policy=LLM_RETRY,
                    result_type=AgentStepResult,
                    summary=f"LLM step {step + 1}",
                )
            except ActivityError as err:
                workflow.logger.warning("conversation.model_failed", extra={"error": str(err.cause)[:200]})
                await self._escalate("model_error")
                return prompt, completion
            prompt += result.prompt_tokens
            completion += result.completion_tokens
            self.tokens_used += result.prompt_tokens + result.completion_tokens
            for call in result.tool_calls:
                tool_input = ToolInput(
                    conversation_id=self._conversation(),
                    customer_id=self.customer_id or "",
                    channel=self.channel,
                    ticket_number=self.ticket_number,
                    turn=self.turns,
                    step=step,
                    step_id=result.step_id,
                    call_id=call.call_id,
                )
                if call.name == "send_response":
                    check = await self._db(
                        "check_reply_guardrails", tool_input, OutputCheckResult, "post-LLM output check", CPU_TIMEOUT
                    )
                    if not check.allowed:
                        await self._escalate("unsafe_output")
                    else:
                        await self._reply("agent", step_id=result.step_id, call_id=call.call_id)
                    return prompt, completion
                if call.name not in TOOL_ACTIVITIES:
                    continue  # the activity recorded an error result for the model to see
                try:
                    outcome = await self._db(call.name, tool_input, ToolResult, f"tool {call.name}", KB_TIMEOUT)
                except ActivityError as err:
                    # Never fail the conversation: a person takes over.
                    workflow.logger.warning("conversation.tool_failed", extra={"error": str(err.cause)[:200]})
                    await self._escalate("model_error")
                    return prompt, completion
                if call.name == "escalate_to_human":
                    await self._escalate(outcome.escalate_reason or "agent_requested", outcome.escalate_priority)  # type: ignore[arg-type]
                    return prompt, completion
        await self._escalate("budget")
        return prompt, completion

    # ------------------------------------------------------------------ replies
    async def _reply(self, source: str, **fields: object) -> list[str]:
        """Format and record the reply under a deterministic key, then send each part in order."""
        self.reply_counter += 1
        # Deterministic across retries, resets and continue-as-new (the counter is carried), unique
        # per conversation: a replayed turn finds its reply already recorded and never sends twice.
        key = f"{self._conversation()}/reply-{self.reply_counter}"
        prepared = await self._db(
            "prepare_reply",
            PrepareReplyInput(
                conversation_id=self._conversation(),
                channel=self.channel,
                ticket_number=self.ticket_number,
                idempotency_key=key,
                source=source,  # type: ignore[arg-type]
                **fields,  # type: ignore[arg-type]
            ),
            PreparedReply,
            summary=f"format {source} reply for {self.channel}",
        )
        for message_id in prepared.message_ids:
            result = await workflow.execute_activity(
                f"send_{self.channel}_reply",
                message_id,
                start_to_close_timeout=SEND_TIMEOUT,
                schedule_to_close_timeout=SEND_SCHEDULE_TO_CLOSE,
                retry_policy=SEND_RETRY,
                result_type=SendResult,
                summary=f"send {self.channel} reply",
            )
            self._remember(result.message_id, "outbound", "human_agent" if source == "human" else "agent", "")
        return prepared.message_ids

    # ------------------------------------------------------------------ escalation
    async def _escalate(self, reason: EscalationReason, priority: Priority | None = None) -> None:
        assert self.config is not None
        if self.status == "escalated":
            return
        priority = priority or REASON_PRIORITY.get(reason, "medium")
        due = self._sla_due()
        self.escalation = await self._db(
            "record_escalation",
            EscalateInput(
                conversation_id=self._conversation(),
                ticket_number=self.ticket_number,
                reason=reason,
                priority=priority,
                sla_due_at=due,
            ),
            EscalationState,
            summary=f"escalate to a human ({reason})",
        )
        self.status = "escalated"
        self._publish_status()
        await self._reply("template", template=f"escalation:{reason}")

    async def _wait_for_human(self) -> None:
        """Wait durably for `resolve_escalation`; re-notify and raise priority when the SLA passes."""
        assert self.config is not None and self.escalation is not None
        remaining = self.escalation.sla_due_at - workflow.now()
        try:
            await workflow.wait_condition(
                lambda: self.resolution is not None or bool(self.pending),
                timeout=max(remaining, timedelta(seconds=1)),
            )
        except TimeoutError:
            new_priority = NEXT_PRIORITY[self.escalation.priority]
            next_due = self._sla_due()
            self.escalation = await self._db(
                "bump_escalation",
                BumpEscalationInput(
                    escalation_id=self.escalation.escalation_id, new_priority=new_priority, new_sla_due_at=next_due
                ),
                EscalationState,
                summary=f"SLA passed: re-notify, priority {new_priority}",
            )
            return
        if self.pending:
            await self._turn()  # recorded and shown to the human, not answered by the AI
            return
        resolution = self.resolution
        assert resolution is not None
        await self._db(
            "resolve_escalation_record",
            ResolveEscalationInput(
                escalation_id=self.escalation.escalation_id,
                conversation_id=self._conversation(),
                agent=resolution.agent,
                action=resolution.action,
            ),
            str,
            summary=f"{resolution.agent} resolved ({resolution.action})",
        )
        reply_ids = await self._reply("human", human_agent=resolution.agent, human_reply=resolution.reply)
        self.escalation = None
        if resolution.action == "close":
            await self._close("human_closed")
        else:
            self.status = "active"
            self._publish_status()
        self.resolution_outcome = ResolutionOutcome(
            ticket_number=self.ticket_number,
            status=self.status,  # type: ignore[arg-type]
            reply_message_ids=reply_ids,
        )
        self.resolution = None

    # ------------------------------------------------------------------ closing
    async def _on_idle(self) -> None:
        assert self.config is not None
        if self.conversation_id is None:
            self.status = "closed"
            return
        if self.last_sentiment <= self.config.negative_sentiment_threshold:
            # Never close on an unhappy customer: a human follows up first.
            await self._escalate("negative_sentiment")
            return
        await self._close("idle")

    async def _close(self, reason: str) -> None:
        await self._db(
            "close_conversation",
            CloseInput(conversation_id=self._conversation(), reason=reason),  # type: ignore[arg-type]
            str,
            summary=f"close conversation ({reason})",
        )
        self.status = "closed"
        self._publish_status()

    def _continue_as_new(self, *, fresh: bool) -> None:
        carried = CarriedState(
            seen_message_ids=self.seen[-MAX_SEEN_IDS:],
            pending=self.pending,
            config=self.config,
        )
        if not fresh:
            carried = CarriedState(
                status=self.status,  # type: ignore[arg-type]
                conversation_id=self.conversation_id,
                customer_id=self.customer_id,
                customer_email=self.customer_email,
                customer_phone=self.customer_phone,
                ticket_number=self.ticket_number,
                escalation=self.escalation,
                seen_message_ids=self.seen[-MAX_SEEN_IDS:],
                pending=self.pending,
                turns=self.turns,
                tokens_used=self.tokens_used,
                last_sentiment=self.last_sentiment,
                last_messages=self.last_messages,
                config=self.config,
                replies=self.reply_counter,
            )
        workflow.continue_as_new(
            ConversationInput(channel=self.channel, conversation_key=self.conversation_key, carried_state=carried)
        )

    # ------------------------------------------------------------------ helpers
    async def _db(  # type: ignore[no-untyped-def]
        self,
        name: str,
        arg: object,
        result_type: type | None,
        summary: str | None = None,
        attempt_timeout: timedelta = DB_TIMEOUT,
    ):
        """A short CRM/guardrail/tool activity, run as a *local* activity, retried through a database
        restart (DB_RETRY).

        Local activities run in this worker inside the workflow task, so a turn's dozen short steps
        cost no server round trips (their results are recorded as markers in the history). They
        are idempotent: a worker that dies mid-task runs them again. The model call (heartbeats,
        up to 90 s) and the channel sends (external side effects, retried for an hour) stay
        regular activities.
        """
        run_activity = workflow.execute_local_activity if self._local() else workflow.execute_activity
        return await run_activity(
            name,
            arg,
            start_to_close_timeout=attempt_timeout,
            schedule_to_close_timeout=DB_SCHEDULE_TO_CLOSE,
            retry_policy=DB_RETRY,
            result_type=result_type,
            summary=summary,
        )

    @staticmethod
    def _local() -> bool:
        """Short steps run as local activities; histories written before that keep replaying."""
        return workflow.patched(LOCAL_ACTIVITIES_PATCH)

    def _sla_due(self) -> datetime:
        """The SLA deadline: the configured business hours from now, in workflow time."""
        assert self.config is not None
        return add_business_hours(
            workflow.now(),
            self.config.sla_business_hours,
            day_start=self.config.business_day_start_hour,
            day_end=self.config.business_day_end_hour,
        )

    def _conversation(self) -> str:
        if self.conversation_id is None:
            raise ApplicationError("conversation used before it was opened", non_retryable=True)
        return self.conversation_id

    def _identity(self, customer: CustomerRef) -> None:
        updates = []
        if customer.email and customer.email != self.customer_email:
            self.customer_email = customer.email
            updates.append(sa.CUSTOMER_EMAIL.value_set(customer.email))
        if customer.phone and customer.phone != self.customer_phone:
            self.customer_phone = customer.phone
            updates.append(sa.CUSTOMER_PHONE.value_set(customer.phone))
        if updates:
            self._upsert(updates)

    def _remember(self, message_id: str, direction: str, role: str, preview: str) -> None:
        self.last_messages.append(
            MessageSummary(
                message_id=message_id,
                direction=direction,  # type: ignore[arg-type]
                role=role,
                at=workflow.now(),
                preview=preview[:120],
            )
        )
        del self.last_messages[:-MAX_LAST_MESSAGES]

    def _publish_status(self) -> None:
        self._upsert(
            [sa.CONVERSATION_STATUS.value_set(self.status), sa.ESCALATED.value_set(self.status == "escalated")]
        )
        self._memo()

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        if self.config is None or self.config.search_attributes:
            workflow.upsert_search_attributes(updates)

    def _memo(self) -> None:
        who = self.customer_email or self.customer_phone or "unknown customer"
        parts = [f"{self.channel} conversation with {who}", f"status {self.status}"]
        if self.ticket_number:
            parts.append(f"ticket {self.ticket_number}")
        if self.escalation is not None:
            parts.append(f"escalated ({self.escalation.reason}, {self.escalation.priority})")
        workflow.upsert_memo({"summary": "; ".join(parts)})


__all__ = ["ConversationWorkflow", "conversation_workflow_id"]
