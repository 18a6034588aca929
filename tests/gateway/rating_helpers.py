"""What the rating tests share: test-only workflows that keep the `rate_conversation` contract, and a
closed ticket whose conversation's workflow is one of them (rows written with the real repositories)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from core.ticket_links import TOKEN_HEADER, ticket_token
from core.vocabulary import Channel
from crm.db import transaction
from crm.repositories import conversations, customers, tickets
from workflows.contracts import RATE_UPDATE, Rating, RatingOutcome

LOW_SCORE = 2


@workflow.defn(name="RatingContractWorkflow")
class RatingContractWorkflow:
    """Test-only: waits for one rating like a closed conversation does; `refusal` makes the validator refuse."""

    @workflow.init
    def __init__(self, refusal: str | None) -> None:
        # Set before any handler runs: an update may arrive in the workflow's very first task.
        self.refusal = refusal
        self.ratings: list[Rating] = []
        self.finished = False

    @workflow.run
    async def run(self, refusal: str | None) -> int:
        await workflow.wait_condition(lambda: self.finished)  # the end of the rating window
        await workflow.wait_condition(workflow.all_handlers_finished)
        return len(self.ratings)

    @workflow.update(name=RATE_UPDATE)
    async def rate(self, rating: Rating) -> RatingOutcome:
        self.ratings.append(rating)
        return RatingOutcome(score=rating.score, reopened=rating.score <= LOW_SCORE, ticket_number="TKT-TEST")

    @rate.validator
    def _validate(self, rating: Rating) -> None:
        if self.refusal is not None:
            raise ValueError(self.refusal)
        if self.ratings:
            raise ValueError("already_rated")

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.query
    def received(self) -> list[Rating]:
        return self.ratings


@workflow.defn(name="NoRatingWorkflow")
class NoRatingWorkflow:
    """Test-only: a conversation from before ratings (no `rate_conversation` update)."""

    def __init__(self) -> None:
        self.finished = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.finished)

    @workflow.signal
    def finish(self) -> None:
        self.finished = True


def contract_worker(client: Client, task_queue: str) -> Worker:
    """A worker for the test-only workflows (unsandboxed: the sandbox would re-import the test tree)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RatingContractWorkflow, NoRatingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


@dataclass
class ClosedTicket:
    number: str
    token: str
    handle: WorkflowHandle[Any, Any]

    @property
    def path(self) -> str:
        return f"/api/v1/tickets/{self.number}/rating"

    @property
    def auth(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token}


async def closed_ticket(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    *,
    task_queue: str,
    secret: str,
    channel: Channel = "web_form",
    refusal: str | None = None,
) -> ClosedTicket:
    """A ticket whose closed conversation's workflow waits for a rating (or refuses with `refusal`)."""
    workflow_id = f"rating-contract-{uuid.uuid4()}"
    email = f"ola.{uuid.uuid4().hex[:8]}@example.com"
    async with transaction(sessions) as session:
        customer_id = await customers.create_customer(session, email=email, phone=None, name="Ola")
        conversation_id = await conversations.create_conversation(
            session,
            customer_id=customer_id,
            channel=channel,
            conversation_key=f"rating-{uuid.uuid4().hex}",
            workflow_id=workflow_id,
        )
        created = await tickets.create_ticket(
            session,
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=channel,
            subject="Board alerts",
            contact_email=email,
        )
        await conversations.close(session, conversation_id=conversation_id, outcome="resolved_by_ai")
        await tickets.resolve_with_conversation(session, conversation_id=conversation_id, notes="resolved by the AI")
    handle = await client.start_workflow(
        RatingContractWorkflow.run,
        refusal,
        id=workflow_id,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=10),
    )
    return ClosedTicket(created.ticket_number, ticket_token(secret, created.ticket_id), handle)
