"""What an agent does to customer records: merge (after a preview), unmerge, GDPR export and erasure.

The HTTP API and `crm-fte customers ...` call these same functions. The CRM part is
`crm.merging` (one transaction each); this module adds Temporal: after a merge or an unmerge
commits, each open conversation workflow that moved gets the `customer_changed` signal (a
workflow that closed meanwhile is logged and skipped); an erasure deletes every workflow execution
of the customer's conversations (Temporal terminates a running one first) (their histories hold message texts, their
search attributes the email address and phone number) before the CRM redaction commits.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.errors import CRMError, ServiceUnavailable
from core.logging import get_logger
from crm import merging
from crm.db import transaction
from crm.merging import MergePreview, MergeRecord
from crm.repositories.merges import StoredMerge
from gateway.agents.customer_schemas import (
    ErasureResult,
    MergeList,
    MergePreviewView,
    MergeResult,
    MergeView,
    PreviewCustomer,
    PreviewIdentifier,
)
from workflows.contracts import CUSTOMER_CHANGED_SIGNAL, CustomerChanged

log = get_logger(__name__)


class ConfirmationMismatch(CRMError):
    """An erasure whose `confirm` does not repeat the customer id."""

    status_code = 422
    code = "validation_error"


def preview_view(preview: MergePreview) -> MergePreviewView:
    def side(s: merging.CustomerSide) -> PreviewCustomer:
        return PreviewCustomer(
            id=s.id,
            name=s.name,
            email=s.email,
            phone=s.phone,
            identifiers=[PreviewIdentifier.model_validate(i, from_attributes=True) for i in s.identifiers],
            conversations=s.conversations,
            open_conversations=s.open_conversations,
            tickets=s.tickets,
        )

    return MergePreviewView(
        source=side(preview.source),
        target=side(preview.target),
        conversation_ids=preview.conversation_ids,
        ticket_ids=preview.ticket_ids,
        identifiers=len(preview.identifier_ids),
        identity_confirmations=len(preview.identity_confirmation_ids),
        metric_points=preview.metric_points,
        open_workflows=len(preview.open_workflow_ids),
        duplicate_identifiers=preview.duplicate_identifiers,
        profile_filled=preview.profile_filled,
        conflicts=preview.conflicts,
    )


def merge_view(merge: StoredMerge, window: timedelta) -> MergeView:
    return MergeView(
        id=merge.id,
        source_customer_id=merge.source_customer_id,
        target_customer_id=merge.target_customer_id,
        actor=merge.actor,
        reason=merge.reason,
        merged_at=merge.merged_at,
        unmerged_at=merge.unmerged_at,
        unmerged_by=merge.unmerged_by,
        unmerge_until=merge.merged_at + window,
    )


async def preview(sessions: async_sessionmaker[AsyncSession], *, source_id: str, target_id: str) -> MergePreviewView:
    """What merging `source_id` into `target_id` would move (nothing changes)."""
    async with sessions() as session:
        return preview_view(await merging.preview_merge(session, source_id=source_id, target_id=target_id))


async def list_merges(sessions: async_sessionmaker[AsyncSession], *, customer_id: str, window: timedelta) -> MergeList:
    """The merges a customer took part in, latest first, with the end of each one's unmerge window."""
    async with sessions() as session:
        state, found = await merging.merges_of(session, customer_id=customer_id)
    return MergeList(customer_id=state.id, merged_into=state.merged_into, merges=[merge_view(m, window) for m in found])


async def tell_workflows(temporal: Client | None, record: MergeRecord) -> tuple[list[str], list[str]]:
    """Signal `customer_changed` to each open workflow that moved; (told, not told). Never raises."""
    contact = record.now_belong_to
    change = CustomerChanged(
        customer_id=contact.customer_id, email=contact.email, phone=contact.phone, name=contact.name
    )
    told: list[str] = []
    missed: list[str] = []
    for workflow_id in record.open_workflow_ids:
        if temporal is None:
            missed.append(workflow_id)
            continue
        try:
            await temporal.get_workflow_handle(workflow_id).signal(CUSTOMER_CHANGED_SIGNAL, change)
            told.append(workflow_id)
        except RPCError as exc:
            # NOT_FOUND: the workflow completed since; its conversation is closed and has nothing to follow.
            log.warning(
                "agents.customer_changed_not_signalled",
                workflow_id=workflow_id,
                merge_id=str(record.merge_id),
                status=exc.status.name if exc.status else None,
                error=str(exc)[:200],
            )
            missed.append(workflow_id)
    return told, missed


def _result(record: MergeRecord, told: list[str], missed: list[str]) -> MergeResult:
    return MergeResult(
        merge_id=record.merge_id,
        source_customer_id=record.source_customer_id,
        target_customer_id=record.target_customer_id,
        actor=record.actor,
        reason=record.reason,
        unmerged=record.unmerged,
        conversation_ids=record.conversation_ids,
        ticket_ids=record.ticket_ids,
        identifiers=len(record.identifier_ids),
        metric_points=len(record.metric_point_ids),
        workflows_told=told,
        workflows_not_told=missed,
    )


async def merge(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client | None,
    *,
    source_id: str,
    target_id: str,
    reason: str,
    actor: str,
    api_key_id: uuid.UUID | None = None,
) -> MergeResult:
    """Merge, commit, then tell the open workflows that moved (a Temporal outage leaves them untold, logged)."""
    async with transaction(sessions) as session:
        record = await merging.merge_customers(
            session, source_id=source_id, target_id=target_id, actor=actor, reason=reason, api_key_id=api_key_id
        )
    told, missed = await tell_workflows(temporal, record)
    return _result(record, told, missed)


async def unmerge(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client | None,
    *,
    merge_id: str,
    window: timedelta,
    actor: str,
    api_key_id: uuid.UUID | None = None,
) -> MergeResult:
    """Undo a merge within the window, commit, then tell the open workflows that moved back."""
    async with transaction(sessions) as session:
        record = await merging.unmerge(session, merge_id=merge_id, actor=actor, window=window, api_key_id=api_key_id)
    told, missed = await tell_workflows(temporal, record)
    return _result(record, told, missed)


async def export(
    sessions: async_sessionmaker[AsyncSession], *, customer_id: str, actor: str, api_key_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """The customer's data as JSON (the export is audited in the same transaction)."""
    async with transaction(sessions) as session:
        return await merging.export_customer(session, customer_id=customer_id, actor=actor, api_key_id=api_key_id)


def _workflow_query(workflow_id: str) -> str:
    return 'WorkflowId = "' + workflow_id.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def delete_workflows(temporal: Client, workflow_ids: list[str]) -> int:
    """Delete every run of each workflow: its history, memo and search attributes.

    Temporal terminates a running execution itself before deleting it (at once); a closed one is
    deleted by the server shortly after (about half a minute on the dev server). Idempotent: a
    workflow already gone is skipped. Any other Temporal error raises ServiceUnavailable. Returns
    how many executions were asked to be deleted.
    """
    deleted = 0
    for workflow_id in workflow_ids:
        try:
            runs = [execution.run_id async for execution in temporal.list_workflows(_workflow_query(workflow_id))]
            for run_id in runs or [""]:  # "" is the latest run, should visibility not list it yet
                try:
                    await temporal.workflow_service.delete_workflow_execution(
                        DeleteWorkflowExecutionRequest(
                            namespace=temporal.namespace,
                            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                        )
                    )
                    deleted += 1
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
        except RPCError as exc:
            raise ServiceUnavailable(
                f"Temporal refused to delete workflow {workflow_id} ({exc.status.name if exc.status else 'error'}); "
                "nothing was erased in the CRM: retry"
            ) from exc
    return deleted


async def erase(
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    *,
    customer_id: str,
    confirm: str,
    actor: str,
    api_key_id: uuid.UUID | None = None,
) -> ErasureResult:
    """Erase a customer: their workflows deleted in Temporal first, then the CRM redaction in one transaction.

    Refusals (unknown, already erased, merged away, a `confirm` that does not repeat the id) come
    before anything changes. A Temporal failure stops before the CRM is touched; a retry is safe.
    """
    async with sessions() as session:
        plan = await merging.plan_erasure(session, customer_id=customer_id)
    if confirm.strip().lower() != str(plan.customer_id):
        raise ConfirmationMismatch(
            "confirm must repeat the id of the customer to erase", detail={"customer_id": str(plan.customer_id)}
        )
    workflows_deleted = await delete_workflows(temporal, plan.workflow_ids)
    async with transaction(sessions) as session:
        counts = await merging.erase_customer(session, customer_id=plan.customer_id, actor=actor, api_key_id=api_key_id)
    log.info("agents.customer_erased", customer_id=str(plan.customer_id), workflows_deleted=workflows_deleted)
    return ErasureResult(
        customer_id=plan.customer_id,
        customers_erased=counts.get("customers", 0),
        workflows_deleted=workflows_deleted,
        rows=counts,
    )
