"""Who answers a conversation: people claim, release, assign, take over, reply, hand back, close.

The workflow owns the answer (its `change_ownership` update: the validator refuses what cannot
happen now, the main loop acts on the rest in order); this module finds the conversation's workflow,
sends the update, maps a refusal to 409 naming the holder, and writes every attempt to the
`human_actions` audit trail, whether it went through the API, the console, the CLI or MCP.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.client import WorkflowUpdateStage as UpdateStage
from temporalio.service import RPCError, RPCStatusCode

from core.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from core.logging import get_logger
from core.temporal import update_refusal
from crm.db import transaction
from crm.repositories import api_keys, conversations
from gateway.agents.ownership_schemas import OwnershipResult
from gateway.agents.service import reply_delivery_status
from workflows.contracts import OWNERSHIP_UPDATE, OwnershipChange, OwnershipOutcome

log = get_logger(__name__)

# How long the API waits for the workflow to act: a reply waits for its send (then 202 if longer).
OWNERSHIP_WAIT_SECONDS = 30.0
_HELD_BY = "held by "


@dataclass(frozen=True)
class Actor:
    """Who acts, and through what (the audit trail says both)."""

    name: str
    api_key_id: uuid.UUID | None
    via: Literal["api", "cli", "mcp"] = "api"


def _conversation_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no conversation {value!r}") from None


async def change_ownership(
    *,
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    conversation_id: str,
    change: OwnershipChange,
    actor: Actor,
    wait_seconds: float = OWNERSHIP_WAIT_SECONDS,
) -> OwnershipResult:
    """Send one ownership action to the conversation's workflow and audit it.

    NotFound: no such conversation, or (assign) no such colleague. Conflict: the workflow refused
    (someone else holds it, it is closed, the AI holds it and this is not a take-over...).
    """
    conv_id = _conversation_uuid(conversation_id)
    async with sessions() as session:
        target = await conversations.ownership_target(session, conversation_id=conv_id)
        if target is not None and change.action == "assign" and change.to is not None:
            if not await api_keys.has_active_key(session, name=change.to):
                raise NotFound(f"no colleague named {change.to!r} (a person with an active API key)")
    if target is None:
        raise NotFound(f"no conversation {conversation_id}")

    async def audit(outcome: str, **extra: Any) -> None:
        detail: dict[str, Any] = {"via": actor.via, "outcome": outcome, **extra}
        if change.to is not None:
            detail["to"] = change.to
        if change.reply is not None:
            detail["reply"] = change.reply
        if change.note is not None:
            detail["note"] = change.note
        async with transaction(sessions) as session:
            await api_keys.record_human_action(
                session,
                agent_name=actor.name,
                api_key_id=actor.api_key_id,
                action=f"conversation.{change.action}",
                ticket_number=target.ticket_number,
                conversation_id=target.conversation_id,
                detail=detail,
            )

    async def refused(exc: WorkflowUpdateFailedError) -> Conflict:
        # The validator's ValueError, or the main loop's OwnershipRefused.
        reason = update_refusal(exc)
        await audit("refused", reason=reason)
        holder = reason[len(_HELD_BY) :] if reason.startswith(_HELD_BY) else None
        where = target.ticket_number or f"conversation {conversation_id}"
        message = f"{where} is held by {holder}" if holder else f"{where}: {reason}"
        return Conflict(message, detail={"reason": reason, "holder": holder})

    handle = temporal.get_workflow_handle(target.workflow_id)
    try:
        update = await handle.start_update(
            OWNERSHIP_UPDATE,
            change,
            wait_for_stage=UpdateStage.ACCEPTED,
            result_type=OwnershipOutcome,
            rpc_timeout=timedelta(seconds=wait_seconds),
        )
    except WorkflowUpdateFailedError as exc:
        raise await refused(exc) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise ServiceUnavailable(
            f"no worker took the {change.action} within {wait_seconds:g}s; check the conversation before retrying"
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            await audit("refused", reason="workflow not running")
            raise Conflict(f"conversation {conversation_id} is no longer running (closed)") from None
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise BadRequest(f"the workflow refused the request: {exc.message[:200]}") from None
        raise ServiceUnavailable("Temporal did not answer; retry") from exc

    outcome: OwnershipOutcome | None = None
    try:
        outcome = await asyncio.wait_for(update.result(), wait_seconds)
    except TimeoutError:
        log.warning("agents.ownership_still_running", conversation=conversation_id, action=change.action)
    except WorkflowUpdateFailedError as exc:
        raise await refused(exc) from None
    await audit(
        "accepted" if outcome is None else "completed",
        assignee=outcome.assignee if outcome else None,
        reply_message_ids=outcome.reply_message_ids if outcome else [],
    )
    delivery = await reply_delivery_status(sessions, outcome.reply_message_ids) if outcome else None
    log.info(
        "agents.ownership_changed",
        conversation=conversation_id,
        action=change.action,
        agent=actor.name,
        via=actor.via,
        assignee=outcome.assignee if outcome else None,
    )
    return OwnershipResult(
        conversation_id=target.conversation_id,
        ticket_id=target.ticket_number,
        action=change.action,
        done=outcome is not None,
        status=outcome.status if outcome else None,
        ownership=outcome.ownership if outcome else None,
        assignee=outcome.assignee if outcome else None,
        reply_message_ids=outcome.reply_message_ids if outcome else [],
        delivery_status=delivery,
    )
