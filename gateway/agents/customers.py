"""The customer endpoints of the human-agent API: merge preview, merge, merges, unmerge, GDPR export and erase.

Reading (the preview, the list of merges) needs `escalations:read`; everything that changes or
hands out a customer's data (merge, unmerge, export, erase) needs `escalations:write`. Every one of
those is written to the `human_actions` audit trail.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from temporalio.client import Client

from core.errors import ServiceUnavailable
from core.logging import get_logger
from gateway.agents import customer_service
from gateway.agents.auth import ReadingAgent, WritingAgent
from gateway.agents.customer_schemas import (
    EraseRequest,
    ErasureResult,
    MergeList,
    MergePreviewView,
    MergeRequest,
    MergeResult,
)
from gateway.deps import ResourcesDep
from gateway.resources import Resources

log = get_logger(__name__)
router = APIRouter(tags=["customers"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, malformed, unknown or revoked API key"},
    403: {"description": "The key lacks the required scope"},
    422: {"description": "An id that is not a UUID, or a body that does not validate"},
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "No such customer"}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "Refused in the records' current state (the reason says why); nothing changed"}
}


def unmerge_window(resources: Resources) -> timedelta:
    return timedelta(hours=resources.settings.customer_unmerge_window_hours)


async def _temporal_or_none(resources: Resources) -> Client | None:
    try:
        return await resources.temporal.get()
    except Exception as exc:  # the merge still holds; the open workflows are reported as not told
        log.warning("agents.temporal_unreachable", error_type=type(exc).__name__)
        return None


@router.get(
    "/api/v1/customers/{customer_id}/merge-preview",
    response_model=MergePreviewView,
    responses={**_AUTH, **_UNKNOWN, **_REFUSED},
)
async def merge_preview(
    customer_id: uuid.UUID,
    into: Annotated[uuid.UUID, Query(description="The customer that would remain")],
    agent: ReadingAgent,
    resources: ResourcesDep,
) -> MergePreviewView:
    """What merging this customer into `into` would move: conversations, tickets, identifiers, and conflicts."""
    return await customer_service.preview(resources.sessions, source_id=str(customer_id), target_id=str(into))


@router.post(
    "/api/v1/customers/{customer_id}/merge",
    response_model=MergeResult,
    responses={**_AUTH, **_UNKNOWN, **_REFUSED},
)
async def merge(
    customer_id: uuid.UUID, body: MergeRequest, agent: WritingAgent, resources: ResourcesDep
) -> MergeResult:
    """Merge this customer into `into`; its open conversations' workflows learn their new customer."""
    return await customer_service.merge(
        resources.sessions,
        await _temporal_or_none(resources),
        source_id=str(customer_id),
        target_id=str(body.into),
        reason=body.reason,
        actor=agent.name,
        api_key_id=agent.key_id,
    )


@router.get("/api/v1/customers/{customer_id}/merges", response_model=MergeList, responses={**_AUTH, **_UNKNOWN})
async def merges(customer_id: uuid.UUID, agent: ReadingAgent, resources: ResourcesDep) -> MergeList:
    """The merges this customer took part in (either side), latest first, with each unmerge deadline."""
    return await customer_service.list_merges(
        resources.sessions, customer_id=str(customer_id), window=unmerge_window(resources)
    )


@router.post(
    "/api/v1/merges/{merge_id}/unmerge",
    response_model=MergeResult,
    responses={**_AUTH, 404: {"description": "No such merge"}, **_REFUSED},
)
async def unmerge(merge_id: uuid.UUID, agent: WritingAgent, resources: ResourcesDep) -> MergeResult:
    """Undo a merge within CUSTOMER_UNMERGE_WINDOW_HOURS: exactly what it moved goes back."""
    return await customer_service.unmerge(
        resources.sessions,
        await _temporal_or_none(resources),
        merge_id=str(merge_id),
        window=unmerge_window(resources),
        actor=agent.name,
        api_key_id=agent.key_id,
    )


@router.get(
    "/api/v1/customers/{customer_id}/export",
    responses={**_AUTH, **_UNKNOWN, **_REFUSED, 200: {"description": "The customer's data as JSON"}},
)
async def export(customer_id: uuid.UUID, agent: WritingAgent, resources: ResourcesDep) -> JSONResponse:
    """GDPR export: the customer record, identifiers, conversations, messages, tickets, escalations, agent steps."""
    data = await customer_service.export(
        resources.sessions, customer_id=str(customer_id), actor=agent.name, api_key_id=agent.key_id
    )
    return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'})


@router.post(
    "/api/v1/customers/{customer_id}/erase",
    response_model=ErasureResult,
    responses={**_AUTH, **_UNKNOWN, **_REFUSED, 503: {"description": "Temporal is unreachable; nothing was erased"}},
)
async def erase(
    customer_id: uuid.UUID, body: EraseRequest, agent: WritingAgent, resources: ResourcesDep
) -> ErasureResult:
    """GDPR erasure: workflow histories deleted, message bodies redacted, identifiers removed; audited."""
    try:
        temporal = await resources.temporal.get()
    except Exception as exc:
        raise ServiceUnavailable("Temporal is not reachable; nothing was erased: retry") from exc
    return await customer_service.erase(
        resources.sessions,
        temporal,
        customer_id=str(customer_id),
        confirm=body.confirm,
        actor=agent.name,
        api_key_id=agent.key_id,
    )
