"""ConversationWorkflow: one durable workflow per support conversation.

Everything that happens to a conversation is an event in this workflow's history: a customer
message (signal `inbound_message`), a human's resolution (signal `resolve_escalation`), a timer
(SLA, idle). Every side effect is an activity with its own timeout and retry policy, so a crash
anywhere resumes where it was. Message bodies stay in PostgreSQL: the history carries ids and
short fields.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.vocabulary import (
        ESCALATION_REASON_LABELS,
        NEXT_PRIORITY,
        NOTIFICATION_KIND_LABELS,
        PRIORITIES,
        REASON_PRIORITY,
        CloseReason,
        ConversationOutcome,
        EscalationReason,
        MessageDirection,
        NotificationKind,
        Ownership,
        Priority,
        ReplySource,
        ResolutionAction,
    )
    from workflows import activity_refs as act
    from workflows import search_attributes as sa
    from workflows.contracts import (
        CUSTOMER_CHANGED_SIGNAL,
        INBOUND_SIGNAL,
        OWNERSHIP_REFUSED,
        OWNERSHIP_UPDATE,
        RATE_UPDATE,
        RESOLVE_ESCALATION_SIGNAL,
        RESOLVE_ESCALATION_UPDATE,
        AgentStepInput,
        AssignInput,
        BumpEscalationInput,
        CarriedState,
        CloseInput,
        ConversationConfig,
        ConversationInput,
        ConversationState,
        CustomerChanged,
        EnsureTicketInput,
        EscalateInput,
        GuardrailInput,
        GuardrailResult,
        InboundMessage,
        IntakeInput,
        MessageSummary,
        OpenConversationInput,
        OwnershipChange,
        OwnershipOutcome,
        PrepareReplyInput,
        Rating,
        RatingOutcome,
        RecordInboundInput,
        RecordRatingInput,
        ResolutionOutcome,
        ResolveEscalation,
        ResolveEscalationInput,
        SendReplyInput,
        ToolInput,
        TurnMetrics,
        conversation_workflow_id,
    )
    from workflows.notification_contracts import Notification, notification_key
    from workflows.notifications import start_notification
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
    from workflows.ratings import parse_rating

MAX_SEEN_IDS = 1000
MAX_LAST_MESSAGES = 10
# Lines of the step log an operator reads in the Temporal UI ("Current details").
MAX_STEP_LOG = 20
# Marks histories in which the short steps run as local activities (before: regular activities).
LOCAL_ACTIVITIES_PATCH = "short-steps-as-local-activities"
# Marks histories that upsert the `Language` search attribute.
LANGUAGE_PATCH = "language-search-attribute"
# Marks histories in which a model classifier checks what the inbound rules let through.
CLASSIFIER_PATCH = "llm-inbound-classifier"
# A turn's intake (senders, conversation, messages, ticket) is one local activity, not 3-4 + one per
# message: fewer workflow activations and database transactions per turn.
INTAKE_PATCH = "one-intake-step"
# A reply the channel refuses (or that keeps failing for the whole send window) hands the
# conversation to a person instead of failing the workflow.
DELIVERY_PATCH = "undelivered-reply-to-human"
# The team is told (NOTIFY_* sinks) of a new escalation, an SLA breach and a customer's message
# while a person owns the conversation: each one an abandoned child NotificationWorkflow.
NOTIFY_PATCH = "notify-the-team"
# After a resolved conversation closes, the customer is asked once for a rating (CSAT) and the run
# waits CSAT_WINDOW_HOURS for it; a low one reopens the conversation to a person.
RATING_PATCH = "ask-for-a-rating"
# WhatsApp's customer-service window, less an hour of margin for the send's own retries.
WHATSAPP_FREE_FORM_WINDOW = timedelta(hours=23)

In = TypeVar("In")
Out = TypeVar("Out")


@workflow.defn(name="ConversationWorkflow")
class ConversationWorkflow:
    """A customer conversation on one channel, from first message to close, across human hand-offs."""

    @workflow.init
    def __init__(self, inp: ConversationInput) -> None:
        self.channel = inp.channel
        self.conversation_key = inp.conversation_key
        # Everything that outlives this run is in one model, carried across continue-as-new as it is.
        self.carried = inp.carried_state or CarriedState()
        self._seen = set(self.carried.seen_message_ids)
        # Per run: turns since this run started, and a human's resolution while it is acted on.
        self.turns_this_run = 0
        self.resolution: ResolveEscalation | None = None
        self.resolution_outcome: ResolutionOutcome | None = None
        # What each step decided, newest last, shown in the Temporal UI as the workflow's current
        # details (metadata, not history: no effect on replay).
        self.step_log: list[str] = []
        self.one_intake_step = False  # set by `run` (the `one-intake-step` patch)
        self.undelivered_to_human = False  # set by `run` (the `undelivered-reply-to-human` patch)
        self.notify_team = False  # set by `run` (the `notify-the-team` patch)
        self.last_reply_delivered = True
        # The inbound guardrails' decision the turn's intake made (the `one-intake-step` patch).
        self.intake_guard: GuardrailResult | None = None
        # People's ownership actions (update `change_ownership`), acted on in order by the main loop,
        # and what each one came to: an outcome, or the reason it was refused.
        self.ownership_actions: list[tuple[int, OwnershipChange]] = []
        self.ownership_results: dict[int, OwnershipOutcome | str] = {}
        self.ownership_counter = 0
        self.ask_for_rating = False  # set by `run` (the `ask-for-a-rating` patch)
        # The customer's rating (update `rate_conversation`) while the run waits for one, and its outcome.
        self.awaiting_rating = False
        self.rating: Rating | None = None
        self.rating_outcome: RatingOutcome | None = None

    # ------------------------------------------------------------------ signals and queries
    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, message: InboundMessage) -> None:
        """A customer message; a redelivered one (same external id) is ignored."""
        if message.external_message_id in self._seen:
            workflow.logger.info("conversation.duplicate_ignored", extra={"id": message.external_message_id})
            return
        self._seen.add(message.external_message_id)
        self.carried.seen_message_ids.append(message.external_message_id)
        self.carried.pending.append(message)

    @workflow.signal(name=RESOLVE_ESCALATION_SIGNAL)
    def resolve_escalation(self, resolution: ResolveEscalation) -> None:
        """A human's reply; only the first one for an open escalation counts."""
        if self.carried.status != "escalated" or self.resolution is not None:
            workflow.logger.warning("conversation.resolution_ignored", extra={"status": self.carried.status})
            return
        self.resolution = resolution

    @workflow.signal(name=CUSTOMER_CHANGED_SIGNAL)
    def customer_changed(self, change: CustomerChanged) -> None:
        """A human merged or unmerged this conversation's customer: follow the record it now belongs to.

        Later tool calls (history), replies and the search attributes use the new record. A history
        without this signal never runs this code, so older histories replay unchanged.
        """
        c = self.carried
        if change.customer_id == c.customer_id:
            return
        c.customer_id = change.customer_id
        c.customer_email = change.email
        c.customer_phone = change.phone
        self._upsert(
            [
                sa.CUSTOMER_EMAIL.value_set(change.email) if change.email else sa.CUSTOMER_EMAIL.value_unset(),
                sa.CUSTOMER_PHONE.value_set(change.phone) if change.phone else sa.CUSTOMER_PHONE.value_unset(),
            ]
        )
        self._memo()
        self._log(f"customer record changed to {change.customer_id} (merge)")

    @workflow.update(name=RESOLVE_ESCALATION_UPDATE)
    async def resolve_escalation_update(self, resolution: ResolveEscalation) -> ResolutionOutcome:
        """Like the signal, but answers once the human's reply went out (API and console use this)."""
        self.resolution = resolution
        self.resolution_outcome = None
        await workflow.wait_condition(lambda: self.resolution_outcome is not None)
        outcome = self.resolution_outcome
        if outcome is None:  # cannot happen: the condition above waited for it
            raise ApplicationError("resolution finished without an outcome", non_retryable=True)
        return outcome

    @resolve_escalation_update.validator
    def _validate_resolution(self, resolution: ResolveEscalation) -> None:
        if self.carried.status != "escalated" or self.resolution is not None:
            raise ValueError(f"conversation is not awaiting a human (status {self.carried.status})")
        holder = self.carried.assignee
        if holder is not None and holder != resolution.agent:
            raise ValueError(f"held by {holder}")

    @workflow.update(name=OWNERSHIP_UPDATE)
    async def change_ownership(self, change: OwnershipChange) -> OwnershipOutcome:
        """A person claims, releases, assigns, takes over, replies to, hands back or closes this
        conversation. Acted on by the main loop in arrival order (never beside a turn); answers once done."""
        self.ownership_counter += 1
        number = self.ownership_counter
        self.ownership_actions.append((number, change))
        await workflow.wait_condition(lambda: number in self.ownership_results)
        result = self.ownership_results.pop(number)
        if isinstance(result, str):  # the state changed after the validator let it in
            raise ApplicationError(result, type=OWNERSHIP_REFUSED, non_retryable=True)
        return result

    @change_ownership.validator
    def _validate_ownership(self, change: OwnershipChange) -> None:
        refusal = self._ownership_refusal(change)
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.update(name=RATE_UPDATE)
    async def rate(self, rating: Rating) -> RatingOutcome:
        """The customer's rating from the ticket page or an email's link (through the gateway)."""
        self.rating = rating
        await workflow.wait_condition(lambda: self.rating_outcome is not None)
        if self.rating_outcome is None:  # cannot happen: the condition above waited for it
            raise ApplicationError("rating finished without an outcome", non_retryable=True)
        return self.rating_outcome

    @rate.validator
    def _validate_rating(self, rating: Rating) -> None:
        if self.rating is not None or self.rating_outcome is not None:
            raise ValueError("already_rated")
        if not self.awaiting_rating:
            raise ValueError("not_closed" if self.carried.status != "closed" else "not_waiting")

    @workflow.query(name="state")
    def state(self) -> ConversationState:
        c = self.carried
        return ConversationState(
            workflow_id=workflow.info().workflow_id,
            channel=self.channel,
            conversation_key=self.conversation_key,
            status=c.status,
            conversation_id=c.conversation_id,
            customer_id=c.customer_id,
            ticket_number=c.ticket_number,
            escalation=c.escalation,
            turns=c.turns,
            pending_messages=len(c.pending),
            last_messages=c.last_messages,
            ownership=self._ownership(),
            assignee=c.assignee,
        )

    # ------------------------------------------------------------------ main loop
    @workflow.run
    async def run(self, inp: ConversationInput) -> str:
        # Asked before any local activity: a patch first asked right after a local activity's result
        # can replay differently when a query split that workflow task (the marker lands in the
        # next task).
        self.one_intake_step = workflow.patched(INTAKE_PATCH)
        self.undelivered_to_human = workflow.patched(DELIVERY_PATCH)
        self.notify_team = workflow.patched(NOTIFY_PATCH)
        self.ask_for_rating = workflow.patched(RATING_PATCH)
        if self.carried.config is None:
            # Read once per conversation and carried: the run stays deterministic.
            if self._local():
                self.carried.config = await workflow.execute_local_activity(
                    act.load_conversation_config,
                    start_to_close_timeout=CPU_TIMEOUT,
                    retry_policy=CPU_RETRY,
                    summary="load conversation settings",
                )
            else:
                self.carried.config = await workflow.execute_activity(
                    act.load_conversation_config,
                    start_to_close_timeout=CPU_TIMEOUT,
                    retry_policy=CPU_RETRY,
                    summary="load conversation settings",
                )
        config = self.carried.config
        while True:
            if self.ownership_actions:
                number, change = self.ownership_actions.pop(0)
                await self._act(number, change)
            elif self.carried.status == "escalated":
                await self._wait_for_human()
            elif not self.carried.pending:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self.carried.pending or self.ownership_actions),
                        timeout=timedelta(seconds=config.idle_timeout_seconds),
                    )
                except TimeoutError:
                    await self._on_idle()
            else:
                await self._turn()
            if self.carried.status == "closed":
                for number, change in self.ownership_actions:  # too late: tell each person why
                    self.ownership_results[number] = self._ownership_refusal(change) or "the conversation is closed"
                self.ownership_actions.clear()
                if not self.carried.pending and self._rating_wanted():
                    await self._ask_for_rating()
                    if self.carried.status != "closed":
                        continue  # a low rating reopened it to a person
                if self.carried.pending:
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
        batch, self.carried.pending = self.carried.pending, []
        self.intake_guard = None
        started = workflow.time()
        new_ids = await self._record(batch)
        if not new_ids:
            return
        await self._ensure_ticket(batch[0])
        self.carried.turns += 1
        self.turns_this_run += 1
        if self.carried.status == "escalated":
            # Recorded for the human; the AI stays quiet and the team hears of it.
            await self._notify("customer_replied", batch[-1].external_message_id)
            return
        guard = self.intake_guard
        if guard is None:  # histories before the `one-intake-step` patch: its own activity
            guard = await self._short(
                act.check_inbound_guardrails,
                GuardrailInput(message_ids=new_ids, channel=self.channel),
                summary="pre-LLM guardrails",
                attempt_timeout=CPU_TIMEOUT,
            )
        self.carried.last_sentiment = guard.sentiment
        self._language(guard.language)
        self._log(
            f"turn {self.carried.turns}: inbound guardrails: "
            + (f"{guard.reason or 'human_request'} → escalate" if guard.action == "escalate" else "answer")
            + f" (sentiment {guard.sentiment:+.2f}{', ' + guard.language if guard.language else ''})"
        )
        prompt_tokens = completion_tokens = 0
        reason: EscalationReason | None = (guard.reason or "human_request") if guard.action == "escalate" else None
        if reason is None and self._config().inbound_classifier and workflow.patched(CLASSIFIER_PATCH):
            # The rules are the floor; the model may add an escalation they missed, never remove one.
            try:
                seen = await workflow.execute_activity(
                    act.classify_inbound,
                    GuardrailInput(message_ids=new_ids, channel=self.channel),
                    start_to_close_timeout=LLM_TIMEOUT,
                    retry_policy=LLM_RETRY,
                    summary="LLM inbound classifier",
                )
            except ActivityError as err:
                workflow.logger.warning("conversation.classifier_failed", extra={"error": str(err.cause)[:200]})
                reason = "model_error"  # fail closed: a person reads what could not be checked
            else:
                prompt_tokens += seen.prompt_tokens
                completion_tokens += seen.completion_tokens
                self.carried.tokens_used += seen.prompt_tokens + seen.completion_tokens
                if guard.language is None:
                    self._language(seen.language)
                if seen.escalate:
                    reason = seen.reason or "agent_requested"
                self._log(
                    "model classifier: "
                    + (f"{reason} → escalate" if seen.escalate else "answer")
                    + f" (confidence {seen.confidence:.2f})"
                )
        if reason is not None:
            await self._escalate(reason)
        else:
            step_prompt, step_completion = await self._agent_loop(new_ids)
            prompt_tokens += step_prompt
            completion_tokens += step_completion
        await self._short(
            act.record_turn_metrics,
            TurnMetrics(
                conversation_id=self._conversation(),
                channel=self.channel,
                latency_ms=(workflow.time() - started) * 1000,
                sentiment=guard.sentiment,
                escalated=self._escalated(),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                turn=self.carried.turns,
            ),
            summary="record turn metrics",
        )

    async def _record(self, batch: list[InboundMessage]) -> list[str]:
        """Resolve the customer, open the conversation, store each message; returns new message ids."""
        if self.one_intake_step:
            return await self._intake(batch)
        c = self.carried
        new_ids: list[str] = []
        for message in batch:
            customer = await self._short(act.resolve_customer, message, summary=f"identify {message.channel} sender")
            if c.customer_id is None:
                c.customer_id = customer.customer_id
            self._identity(customer.email, customer.phone)
            if c.conversation_id is None:
                c.conversation_id = await self._short(
                    act.open_conversation,
                    OpenConversationInput(
                        workflow_id=workflow.info().workflow_id,
                        run_id=workflow.info().run_id,
                        channel=self.channel,
                        conversation_key=self.conversation_key,
                        customer_id=c.customer_id,
                        subject=message.subject,
                    ),
                    summary="open the conversation record",
                )
            recorded = await self._short(
                act.record_inbound_message,
                RecordInboundInput(conversation_id=c.conversation_id, message=message),
                summary=f"record inbound {message.external_message_id[:40]}",
            )
            # `duplicate` means the row already existed: a retried activity whose first attempt
            # committed, or a reset replaying this turn. The signal-level dedupe above already
            # decided this message is new to the conversation, so the turn must still run; the
            # replies it produces are idempotent by key.
            new_ids.append(recorded.message_id)
            self._remember(recorded.message_id, "inbound", "customer", recorded.preview)
        return new_ids

    async def _intake(self, batch: list[InboundMessage]) -> list[str]:
        """The turn's intake as one local activity: what `_record`, `_ensure_ticket` and the inbound
        guardrails do step by step."""
        c = self.carried
        result = await self._short(
            act.record_inbound_turn,
            IntakeInput(
                workflow_id=workflow.info().workflow_id,
                run_id=workflow.info().run_id,
                channel=self.channel,
                conversation_key=self.conversation_key,
                messages=batch,
                customer_id=c.customer_id,
                conversation_id=c.conversation_id,
                needs_ticket=c.ticket_number is None,
                screen=c.status != "escalated",
            ),
            summary=f"record and screen {len(batch)} inbound message{'s' if len(batch) > 1 else ''}",
            attempt_timeout=CPU_TIMEOUT,
        )
        self.intake_guard = result.guard
        for customer in result.customers:
            if c.customer_id is None:
                c.customer_id = customer.customer_id
            self._identity(customer.email, customer.phone)
        c.conversation_id = result.conversation_id
        for recorded in result.recorded:
            self._remember(recorded.message_id, "inbound", "customer", recorded.preview)
        if result.ticket is not None and c.ticket_number is None:
            self._ticket(result.ticket.ticket_number)
        return [recorded.message_id for recorded in result.recorded]

    async def _notify(self, kind: NotificationKind, occurrence: str) -> None:
        """Tell the team (never waits for a delivery; a sink that is down delays only itself)."""
        c = self.carried
        if not (self.notify_team and c.config is not None and c.config.notify_team) or c.conversation_id is None:
            return
        escalation = c.escalation
        said = next((m.preview for m in reversed(c.last_messages) if m.direction == "inbound" and m.preview), "")
        reason = escalation.reason if escalation is not None else None
        parts = [NOTIFICATION_KIND_LABELS[kind], ESCALATION_REASON_LABELS[reason] if reason else None, self.channel]
        summary = " · ".join(p for p in parts if p) + (f" — “{said}”" if said else "")
        started = await start_notification(
            Notification(
                idempotency_key=notification_key(kind, c.conversation_id, occurrence),
                kind=kind,
                conversation_id=c.conversation_id,
                ticket_number=c.ticket_number,
                channel=self.channel,
                reason=reason,
                priority=escalation.priority if escalation is not None else "medium",
                sla_due_at=escalation.sla_due_at if escalation is not None else None,
                assignee=c.assignee,
                summary=summary[:200],
                occurred_at=workflow.now(),
            )
        )
        self._log(f"team notified: {kind}" if started else f"team already notified: {kind}")

    def _ticket(self, ticket_number: str) -> None:
        self.carried.ticket_number = ticket_number
        self._upsert([sa.TICKET_NUMBER.value_set(ticket_number)])
        self._memo()

    async def _ensure_ticket(self, first: InboundMessage) -> None:
        if self.carried.ticket_number is not None:
            return
        ticket = await self._short(
            act.ensure_ticket,
            EnsureTicketInput(
                conversation_id=self._conversation(),
                customer_id=self.carried.customer_id or "",
                channel=self.channel,
                subject=first.subject or first.text[:120],
                category=first.metadata.get("category", "other"),
                priority=_as_priority(first.metadata.get("priority", "medium")),
            ),
            summary="create ticket (once per conversation)",
        )
        self._ticket(ticket.ticket_number)

    async def _agent_loop(self, message_ids: list[str]) -> tuple[int, int]:
        """Model step → tool activities, bounded by steps and the conversation's token budget."""
        c, config = self.carried, self._config()
        prompt = completion = 0
        for step in range(config.max_agent_steps):
            if c.tokens_used >= config.max_tokens_per_conversation:
                await self._escalate("budget")
                return prompt, completion
            try:
                result = await workflow.execute_activity(
                    act.agent_step,
                    AgentStepInput(
                        conversation_id=self._conversation(),
                        customer_id=c.customer_id or "",
                        channel=self.channel,
                        ticket_number=c.ticket_number,
                        turn=c.turns,
                        step=step,
                        message_ids=message_ids,
                    ),
                    start_to_close_timeout=LLM_TIMEOUT,
                    heartbeat_timeout=LLM_HEARTBEAT,
                    retry_policy=LLM_RETRY,
                    summary=f"LLM step {step + 1}",
                )
            except ActivityError as err:
                workflow.logger.warning("conversation.model_failed", extra={"error": str(err.cause)[:200]})
                await self._escalate("model_error")
                return prompt, completion
            prompt += result.prompt_tokens
            completion += result.completion_tokens
            c.tokens_used += result.prompt_tokens + result.completion_tokens
            calls = ", ".join(call.name for call in result.tool_calls) or "no tool call"
            self._log(f"model step {step + 1}{' (' + result.model + ')' if result.model else ''}: {calls}")
            for call in result.tool_calls:
                tool_input = ToolInput(
                    conversation_id=self._conversation(),
                    customer_id=c.customer_id or "",
                    channel=self.channel,
                    ticket_number=c.ticket_number,
                    turn=c.turns,
                    step=step,
                    step_id=result.step_id,
                    call_id=call.call_id,
                )
                if call.name == "send_response":
                    if any(change.action == "take_over" for _, change in self.ownership_actions):
                        # A person took the conversation while the model was writing: they answer.
                        self._log("AI reply not sent: a person took the conversation over")
                        return prompt, completion
                    check = await self._short(
                        act.check_reply_guardrails,
                        tool_input,
                        summary="post-LLM output check",
                        attempt_timeout=CPU_TIMEOUT,
                    )
                    verdict = "allowed" if check.allowed else f"blocked ({', '.join(check.violations)})"
                    self._log(f"reply check: {verdict}")
                    if not check.allowed:
                        await self._escalate("unsafe_output")
                    else:
                        await self._reply("agent", step_id=result.step_id, call_id=call.call_id)
                        if result.conversation_resolved and self.last_reply_delivered:
                            # The customer confirmed it worked: the polite reply above closes it.
                            await self._close("resolved")
                    return prompt, completion
                tool = act.TOOLS.get(call.name)
                if tool is None:
                    continue  # the activity recorded an error result for the model to see
                try:
                    outcome = await self._short(
                        tool, tool_input, summary=f"tool {call.name}", attempt_timeout=KB_TIMEOUT
                    )
                except ActivityError as err:
                    # Never fail the conversation: a person takes over.
                    workflow.logger.warning("conversation.tool_failed", extra={"error": str(err.cause)[:200]})
                    await self._escalate("model_error")
                    return prompt, completion
                if call.name == "escalate_to_human":
                    await self._escalate(outcome.escalate_reason or "agent_requested", outcome.escalate_priority)
                    return prompt, completion
        await self._escalate("budget")
        return prompt, completion

    # ------------------------------------------------------------------ replies
    async def _reply(
        self,
        source: ReplySource,
        *,
        step_id: str | None = None,
        call_id: str | None = None,
        template: str | None = None,
        human_agent: str | None = None,
        human_reply: str | None = None,
        hand_off_if_undelivered: bool = True,
    ) -> list[str]:
        """Format and record the reply under a deterministic key, then send each part in order.

        An AI or template reply the channel refuses hands the conversation to a person
        (`delivery_failed`), unless `hand_off_if_undelivered` is False (the rating question: nobody
        needs a person because a survey did not go out)."""
        self.carried.replies += 1
        # Deterministic across retries, resets and continue-as-new (the counter is carried), unique
        # per conversation: a replayed turn finds its reply already recorded and never sends twice.
        key = f"{self._conversation()}/reply-{self.carried.replies}"
        prepared = await self._short(
            act.prepare_reply,
            PrepareReplyInput(
                conversation_id=self._conversation(),
                channel=self.channel,
                ticket_number=self.carried.ticket_number,
                idempotency_key=key,
                source=source,
                step_id=step_id,
                call_id=call_id,
                template=template,
                human_agent=human_agent,
                human_reply=human_reply,
            ),
            summary=f"format {source} reply for {self.channel}",
        )
        self.last_reply_delivered = True
        for message_id in prepared.message_ids:
            try:
                result = await workflow.execute_activity(
                    act.SEND_REPLY[self.channel],
                    SendReplyInput(message_id=message_id),
                    start_to_close_timeout=SEND_TIMEOUT,
                    schedule_to_close_timeout=SEND_SCHEDULE_TO_CLOSE,
                    retry_policy=SEND_RETRY,
                    summary=f"send {self.channel} reply",
                )
            except ActivityError as err:
                if not self.undelivered_to_human:
                    raise
                # The later parts stay unsent (they would read out of order); a person takes over.
                self.last_reply_delivered = False
                cause = str(err.cause)[:120] if err.cause else "send failed"
                workflow.logger.warning("conversation.reply_undelivered", extra={"error": cause})
                self._log(f"{source} reply on {self.channel}: not delivered ({cause})")
                self._replied(source, delivered=False)
                if source != "human" and hand_off_if_undelivered:
                    await self._escalate("delivery_failed")
                return prepared.message_ids
            self._remember(result.message_id, "outbound", "human_agent" if source == "human" else "agent", "")
            self._log(f"{source} reply on {self.channel}: {result.delivery_status}")
        self._replied(source, delivered=True)
        return prepared.message_ids

    def _replied(self, source: ReplySource, *, delivered: bool) -> None:
        """What the conversation's outcome at close is decided from (no effect on history)."""
        c = self.carried
        c.last_reply_source = source
        c.last_reply_delivered = delivered
        if source == "human" and delivered:
            c.human_replied = True

    # ------------------------------------------------------------------ escalation
    async def _escalate(self, reason: EscalationReason, priority: Priority | None = None) -> None:
        if self.carried.status == "escalated":
            return
        self.carried.escalation = await self._short(
            act.record_escalation,
            EscalateInput(
                conversation_id=self._conversation(),
                ticket_number=self.carried.ticket_number,
                reason=reason,
                priority=priority or REASON_PRIORITY[reason],
                sla_due_at=self._sla_due(),
            ),
            summary=f"escalate to a human ({reason})",
        )
        self.carried.status = "escalated"
        self._log(f"escalated to a human: {reason}, priority {self.carried.escalation.priority}")
        self._publish_status()
        escalation_id = self.carried.escalation.escalation_id
        if reason == "taken_over":  # the person who took it answers: no holding message, nobody to tell
            return
        if reason != "delivery_failed":  # the channel just refused a message: a holding one would fail too
            await self._reply("template", template=f"escalation:{reason}")
        await self._notify("escalation_new", escalation_id)

    async def _wait_for_human(self) -> None:
        """Wait durably for `resolve_escalation`; re-notify and raise priority when the SLA passes."""
        escalation = self.carried.escalation
        if escalation is None:  # an invariant: `escalated` is only ever set with its record
            raise ApplicationError("conversation escalated without an escalation record", non_retryable=True)
        if escalation.responded_at is not None:
            # A person answered: the SLA is met. Wait for what they or the customer do next.
            await workflow.wait_condition(
                lambda: self.resolution is not None or bool(self.carried.pending or self.ownership_actions)
            )
            if self.ownership_actions:
                return  # the main loop acts on it
            await self._after_wait()
            return
        remaining = escalation.sla_due_at - workflow.now()
        config = self._config()
        warn_before = timedelta(minutes=config.notify_due_soon_minutes)
        if self.notify_team and config.notify_team and remaining > warn_before:
            # First wait until the SLA is about to pass: the team hears of it while it still can act.
            try:
                await workflow.wait_condition(
                    lambda: self.resolution is not None or bool(self.carried.pending or self.ownership_actions),
                    timeout=remaining - warn_before,
                )
            except TimeoutError:
                await self._notify("sla_due_soon", f"{escalation.escalation_id}:{escalation.sla_due_at.isoformat()}")
                return  # the next wait runs to the deadline itself
            remaining = escalation.sla_due_at - workflow.now()
        try:
            await workflow.wait_condition(
                lambda: self.resolution is not None or bool(self.carried.pending or self.ownership_actions),
                timeout=max(remaining, timedelta(seconds=1)),
            )
        except TimeoutError:
            new_priority = NEXT_PRIORITY[escalation.priority]
            self.carried.escalation = await self._short(
                act.bump_escalation,
                BumpEscalationInput(
                    escalation_id=escalation.escalation_id, new_priority=new_priority, new_sla_due_at=self._sla_due()
                ),
                summary=f"SLA passed: re-notify, priority {new_priority}",
            )
            await self._notify("sla_breached", f"{escalation.escalation_id}:{escalation.sla_due_at.isoformat()}")
            return
        if self.ownership_actions:
            return  # the main loop acts on it
        await self._after_wait()

    async def _after_wait(self) -> None:
        """What ended the wait for a person: a customer message, or the resolve signal/update."""
        escalation = self.carried.escalation
        if escalation is None:  # an invariant: only called while escalated
            raise ApplicationError("conversation escalated without an escalation record", non_retryable=True)
        if self.carried.pending:
            await self._turn()  # recorded and shown to the human, not answered by the AI
            return
        resolution = self.resolution
        if resolution is None:  # the wait ends on a resolution or a message; the message was handled above
            return
        await self._short(
            act.resolve_escalation_record,
            ResolveEscalationInput(
                escalation_id=escalation.escalation_id,
                conversation_id=self._conversation(),
                agent=resolution.agent,
                action=resolution.action,
            ),
            summary=f"{resolution.agent} resolved ({resolution.action})",
        )
        reply_ids = await self._reply("human", human_agent=resolution.agent, human_reply=resolution.reply)
        self.carried.escalation = None
        self._unassigned()
        if resolution.action == "close":
            await self._close("human_closed")
        else:
            self.carried.status = "active"
            self._publish_status()
        self.resolution_outcome = ResolutionOutcome(
            ticket_number=self.carried.ticket_number,
            status=self.carried.status,
            reply_message_ids=reply_ids,
            reply_delivered=self.last_reply_delivered,
        )
        self.resolution = None

    # ------------------------------------------------------------------ ownership
    def _ownership(self) -> Ownership:
        c = self.carried
        if c.status == "closed":
            return "closed"
        if c.status == "escalated":
            return "human" if c.assignee else "waiting"
        return "ai"

    def _ownership_refusal(self, change: OwnershipChange) -> str | None:
        """Why this action cannot happen now (None: it can). The validator's rule, and checked again
        when the main loop comes to act on it (someone else may have claimed it in between)."""
        c = self.carried
        if c.status == "closed":
            return "the conversation is closed"
        if c.conversation_id is None:
            return "the conversation has not started yet"
        holder = c.assignee
        if change.action == "take_over":
            return f"held by {holder}" if holder not in (None, change.agent) else None
        if c.status != "escalated":
            return "the AI is answering this conversation: take it over first"
        if change.action == "assign":
            return None  # reassigning is what a lead does: allowed whoever holds it (audited)
        if change.action == "release" and holder is None:
            return "nobody holds this conversation"
        if holder not in (None, change.agent):
            return f"held by {holder}"
        return None

    async def _act(self, number: int, change: OwnershipChange) -> None:
        """Carry out one ownership action and record what it came to for its update."""
        refusal = self._ownership_refusal(change)
        if refusal is not None:
            self.ownership_results[number] = refusal
            return
        c = self.carried
        reply_ids: list[str] = []
        delivered = True
        if change.action == "claim":
            await self._assign(change.agent)
        elif change.action == "release":
            await self._assign(None)
        elif change.action == "assign":
            await self._assign(change.to)
        elif change.action == "take_over":
            if c.status != "escalated":
                await self._escalate("taken_over")
            await self._assign(change.agent)
        elif change.action == "reply":
            if c.assignee is None:
                await self._assign(change.agent)
            reply_ids = await self._reply("human", human_agent=change.agent, human_reply=change.reply)
            delivered = self.last_reply_delivered
            if delivered:
                await self._responded()
        else:  # hand_back, close
            await self._end_escalation(
                change.agent, "resume_ai" if change.action == "hand_back" else "close", change.note
            )
        self.ownership_results[number] = OwnershipOutcome(
            status=c.status,
            ownership=self._ownership(),
            assignee=c.assignee,
            ticket_number=c.ticket_number,
            reply_message_ids=reply_ids,
            reply_delivered=delivered,
        )

    async def _assign(self, who: str | None) -> None:
        """Give the open escalation to a person (None: back to the queue); mirrored in the CRM and the UI."""
        c = self.carried
        escalation = c.escalation
        if escalation is None or who == c.assignee:
            return
        await self._short(
            act.assign_escalation,
            AssignInput(escalation_id=escalation.escalation_id, assignee=who),
            summary=f"assign to {who}" if who else "release to the queue",
        )
        c.assignee = who
        self._upsert([sa.ASSIGNEE.value_set(who) if who else sa.ASSIGNEE.value_unset()])
        self._memo()
        self._log(f"owned by {who}" if who else "released to the queue")

    async def _responded(self) -> None:
        """A person's first reply meets the SLA: its timers stop and the queue stops counting it overdue."""
        escalation = self.carried.escalation
        if escalation is None or escalation.responded_at is not None:
            return
        await self._short(
            act.assign_escalation,
            AssignInput(escalation_id=escalation.escalation_id, assignee=self.carried.assignee, responded=True),
            summary="first human reply: SLA met",
        )
        escalation.responded_at = workflow.now()

    def _unassigned(self) -> None:
        """The escalation ended: nobody owns the conversation any more (the record keeps who did)."""
        if self.carried.assignee is not None:
            self.carried.assignee = None
            self._upsert([sa.ASSIGNEE.value_unset()])

    async def _end_escalation(self, agent: str, action: ResolutionAction, note: str | None) -> None:
        """A person hands the conversation back to the AI (with a note it reads) or closes it."""
        escalation = self.carried.escalation
        if escalation is None:  # the refusal check above makes this unreachable
            raise ApplicationError("no escalation to end", non_retryable=True)
        await self._short(
            act.resolve_escalation_record,
            ResolveEscalationInput(
                escalation_id=escalation.escalation_id,
                conversation_id=self._conversation(),
                agent=agent,
                action=action,
                note=note,
            ),
            summary=f"{agent}: {'hand back to the AI' if action == 'resume_ai' else 'close'}",
        )
        self.carried.escalation = None
        self._unassigned()
        if action == "close":
            await self._close("human_closed")
        else:
            self.carried.status = "active"
            self._log(f"handed back to the AI by {agent}" + (" with a note" if note else ""))
            self._publish_status()

    # ------------------------------------------------------------------ closing
    async def _on_idle(self) -> None:
        if self.carried.conversation_id is None:
            self.carried.status = "closed"
            return
        if self.carried.last_sentiment <= self._config().negative_sentiment_threshold:
            # Never close on an unhappy customer: a human follows up first.
            await self._escalate("negative_sentiment")
            return
        await self._close("idle")

    def _outcome(self, reason: CloseReason) -> ConversationOutcome:
        """How the conversation ended: a person's work, the AI's, or nobody's (the customer left)."""
        c = self.carried
        if reason == "human_closed" or c.human_replied:
            return "resolved_by_human"
        if reason == "resolved":  # the customer confirmed it worked
            return "resolved_by_ai"
        # Idle: the customer wrote nothing more within the window after the last reply.
        if c.last_reply_source == "agent" and c.last_reply_delivered:
            return "resolved_by_ai"
        return "abandoned"  # after a holding message or a reply that never reached them

    async def _close(self, reason: CloseReason) -> None:
        outcome = self._outcome(reason)
        await self._short(
            act.close_conversation,
            CloseInput(conversation_id=self._conversation(), reason=reason, outcome=outcome),
            summary=f"close conversation ({reason}: {outcome})",
        )
        self.carried.status = "closed"
        self.carried.outcome = outcome
        self._log(f"closed ({reason}): {outcome.replace('_', ' ')}")
        self._publish_status()

    # ------------------------------------------------------------------ the customer's rating
    def _rating_wanted(self) -> bool:
        c = self.carried
        config = self._config()
        return (
            self.ask_for_rating
            and config.csat_enabled
            and not c.rating_asked
            and c.conversation_id is not None
            and c.outcome in ("resolved_by_ai", "resolved_by_human")
            and self._may_message_first()
        )

    def _may_message_first(self) -> bool:
        """WhatsApp takes a free-form message only within 24 hours of the customer's last one: after
        an idle close (24 h of silence by default) the question would be refused, so it is not asked."""
        if self.channel != "whatsapp":
            return True
        last_inbound = max((m.at for m in self.carried.last_messages if m.direction == "inbound"), default=None)
        return last_inbound is not None and workflow.now() - last_inbound < WHATSAPP_FREE_FORM_WINDOW

    async def _ask_for_rating(self) -> None:
        """Ask once; wait for a rating (a reply "4", or the ticket page / an email's link through the
        gateway's update); store it; a low one reopens the conversation to a person with it attached.
        A message that is not a rating ends the wait: it starts a new conversation."""
        c, config = self.carried, self._config()
        c.rating_asked = True
        await self._reply("template", template="rating:ask", hand_off_if_undelivered=False)
        if not self.last_reply_delivered:
            return
        self.awaiting_rating = True
        self._log("asked the customer for a rating")
        try:
            await workflow.wait_condition(
                lambda: self.rating is not None or bool(c.pending),
                timeout=timedelta(seconds=config.csat_window_seconds),
            )
        except TimeoutError:
            if self.rating is None:  # a rating that came with the timer's last tick is still taken
                self._log("no rating within the window")
                return
        finally:
            self.awaiting_rating = False
        rating = self.rating
        if rating is None:
            parsed = parse_rating(c.pending[0].text)
            if parsed is None:
                return  # a new question: the main loop starts a fresh conversation with it
            c.pending.pop(0)
            rating = self.rating = Rating(score=parsed[0], comment=parsed[1], via="reply")
        low = rating.score <= config.csat_low_score
        await self._short(
            act.record_rating,
            RecordRatingInput(conversation_id=self._conversation(), channel=self.channel, rating=rating, low=low),
            summary=f"customer rating {rating.score}/5",
        )
        self._log(f"rated {rating.score}/5" + (": reopened for a person" if low else ""))
        # Decided: the update answers now, and any later rating is refused as already given.
        self.rating_outcome = RatingOutcome(score=rating.score, reopened=low, ticket_number=c.ticket_number)
        if low:
            c.status = "active"  # reopened; the escalation below hands it to a person
            await self._escalate("low_rating")

    def _continue_as_new(self, *, fresh: bool) -> None:
        c = self.carried
        seen = c.seen_message_ids[-MAX_SEEN_IDS:]
        if fresh:
            # A new conversation on the same key: only the dedupe state, the queued messages and the
            # configuration go along.
            carried = CarriedState(seen_message_ids=seen, pending=c.pending, config=c.config)
        else:
            carried = c.model_copy(update={"seen_message_ids": seen})
        workflow.continue_as_new(
            ConversationInput(channel=self.channel, conversation_key=self.conversation_key, carried_state=carried)
        )

    # ------------------------------------------------------------------ helpers
    async def _short(
        self,
        activity: Callable[[In], Awaitable[Out]],
        arg: In,
        *,
        summary: str | None = None,
        attempt_timeout: timedelta = DB_TIMEOUT,
    ) -> Out:
        """A short CRM/guardrail/tool activity, run as a *local* activity, retried through a database
        restart (DB_RETRY).

        Local activities run in this worker inside the workflow task, so a turn's dozen short steps
        cost no server round trips (their results are recorded as markers in the history). They
        are idempotent: a worker that dies mid-task runs them again. The model call (heartbeats,
        up to 90 s) and the channel sends (external side effects, retried for an hour) stay
        regular activities.
        """
        if self._local():
            return await workflow.execute_local_activity(
                activity,
                arg,
                start_to_close_timeout=attempt_timeout,
                schedule_to_close_timeout=DB_SCHEDULE_TO_CLOSE,
                retry_policy=DB_RETRY,
                summary=summary,
            )
        return await workflow.execute_activity(
            activity,
            arg,
            start_to_close_timeout=attempt_timeout,
            schedule_to_close_timeout=DB_SCHEDULE_TO_CLOSE,
            retry_policy=DB_RETRY,
            summary=summary,
        )

    @staticmethod
    def _local() -> bool:
        """Short steps run as local activities; histories written before that keep replaying."""
        return workflow.patched(LOCAL_ACTIVITIES_PATCH)

    def _config(self) -> ConversationConfig:
        config = self.carried.config
        if config is None:  # `run` loads it before anything else happens
            raise ApplicationError("conversation configuration used before it was loaded", non_retryable=True)
        return config

    def _sla_due(self) -> datetime:
        """The SLA deadline: the configured business hours from now, in workflow time."""
        config = self._config()
        return add_business_hours(
            workflow.now(),
            config.sla_business_hours,
            day_start=config.business_day_start_hour,
            day_end=config.business_day_end_hour,
            holidays=frozenset(date.fromisoformat(day) for day in config.holidays),
        )

    def _language(self, language: str | None) -> None:
        """Record the customer's language and show it in the Temporal UI (`Language`)."""
        if language and language != self.carried.language and workflow.patched(LANGUAGE_PATCH):
            self.carried.language = language
            self._upsert([sa.LANGUAGE.value_set(language)])

    def _log(self, line: str) -> None:
        """Add a line to the step log the Temporal UI shows as this workflow's current details."""
        self.step_log.append(f"{workflow.now():%Y-%m-%d %H:%M:%S} UTC · {line}")
        del self.step_log[:-MAX_STEP_LOG]
        workflow.set_current_details("\n".join(f"- {entry}" for entry in self.step_log))

    def _escalated(self) -> bool:
        return self.carried.status == "escalated"

    def _conversation(self) -> str:
        if self.carried.conversation_id is None:
            raise ApplicationError("conversation used before it was opened", non_retryable=True)
        return self.carried.conversation_id

    def _identity(self, email: str | None, phone: str | None) -> None:
        c = self.carried
        updates = []
        if email and email != c.customer_email:
            c.customer_email = email
            updates.append(sa.CUSTOMER_EMAIL.value_set(email))
        if phone and phone != c.customer_phone:
            c.customer_phone = phone
            updates.append(sa.CUSTOMER_PHONE.value_set(phone))
        if updates:
            self._upsert(updates)

    def _remember(self, message_id: str, direction: MessageDirection, role: str, preview: str) -> None:
        last = self.carried.last_messages
        last.append(
            MessageSummary(
                message_id=message_id, direction=direction, role=role, at=workflow.now(), preview=preview[:120]
            )
        )
        del last[:-MAX_LAST_MESSAGES]

    def _publish_status(self) -> None:
        status = self.carried.status
        self._upsert([sa.CONVERSATION_STATUS.value_set(status), sa.ESCALATED.value_set(status == "escalated")])
        self._memo()

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        config = self.carried.config
        if config is None or config.search_attributes:
            workflow.upsert_search_attributes(updates)

    def _memo(self) -> None:
        c = self.carried
        who = c.customer_email or c.customer_phone or "unknown customer"
        parts = [f"{self.channel} conversation with {who}", f"status {c.status}"]
        if c.ticket_number:
            parts.append(f"ticket {c.ticket_number}")
        if c.escalation is not None:
            parts.append(f"escalated ({c.escalation.reason}, {c.escalation.priority})")
        if c.assignee:
            parts.append(f"owned by {c.assignee}")
        workflow.upsert_memo({"summary": "; ".join(parts)})


def _as_priority(value: str) -> Priority:
    """A ticket priority from message metadata (the web form's choice); anything else is medium."""
    for priority in PRIORITIES:
        if priority == value:
            return priority
    return "medium"


__all__ = ["ConversationWorkflow", "conversation_workflow_id"]
