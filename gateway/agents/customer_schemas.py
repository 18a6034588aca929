"""Request and response models of the customer endpoints: merge, unmerge, GDPR export and erasure."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from core.vocabulary import Channel, IdentifierType
from crm.merging import REASON_MAX_CHARS


class MergeRequest(BaseModel):
    into: uuid.UUID = Field(description="The customer that remains: this one's records move to it")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REASON_MAX_CHARS)]


class EraseRequest(BaseModel):
    confirm: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] = Field(
        description="The customer's id again: a guard against erasing the wrong customer by a slip"
    )


class PreviewIdentifier(BaseModel):
    type: IdentifierType
    value: str
    channel: Channel | None
    verified: bool = Field(description="Proved by a channel (else a claim someone typed)")


class PreviewCustomer(BaseModel):
    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None
    identifiers: list[PreviewIdentifier]
    conversations: int
    open_conversations: int
    tickets: int


class MergePreviewView(BaseModel):
    source: PreviewCustomer = Field(description="The customer merged away (kept as a tombstone for an unmerge)")
    target: PreviewCustomer = Field(description="The customer that remains")
    conversation_ids: list[uuid.UUID]
    ticket_ids: list[uuid.UUID]
    identifiers: int = Field(description="Identifier rows that move (duplicates are kept once)")
    identity_confirmations: int
    metric_points: int = Field(description="Metric points of the moving conversations (they follow them)")
    open_workflows: int = Field(description="Open conversations whose workflow is told its new customer")
    duplicate_identifiers: list[str]
    profile_filled: list[str] = Field(description="The target's empty profile fields taken from the source")
    conflicts: list[str] = Field(description="Signs these may be two people; look before you merge")


class MergeResult(BaseModel):
    merge_id: uuid.UUID
    source_customer_id: uuid.UUID
    target_customer_id: uuid.UUID
    actor: str
    reason: str
    unmerged: bool
    conversation_ids: list[uuid.UUID]
    ticket_ids: list[uuid.UUID]
    identifiers: int
    metric_points: int
    workflows_told: list[str] = Field(description="Open conversation workflows signalled with their new customer")
    workflows_not_told: list[str] = Field(
        description="Workflows the signal did not reach (closed since, Temporal down)"
    )


class MergeView(BaseModel):
    id: uuid.UUID
    source_customer_id: uuid.UUID
    target_customer_id: uuid.UUID
    actor: str
    reason: str
    merged_at: datetime
    unmerged_at: datetime | None
    unmerged_by: str | None
    unmerge_until: datetime = Field(description="The end of the unmerge window (CUSTOMER_UNMERGE_WINDOW_HOURS)")


class MergeList(BaseModel):
    customer_id: uuid.UUID
    merged_into: uuid.UUID | None = Field(description="Set when this customer was merged away")
    merges: list[MergeView]


class ErasureResult(BaseModel):
    customer_id: uuid.UUID
    customers_erased: int = Field(description="The customer and the records merged into it")
    workflows_deleted: int = Field(description="Conversation workflows terminated if running, then deleted")
    rows: dict[str, int] = Field(description="Rows redacted or deleted, per table")
