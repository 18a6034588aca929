"""Merging two customer records into one (and undoing it), and a customer's GDPR export and erasure.

A service over `crm.repositories.merges` and `crm.repositories.customer_data`; every function runs
in the caller's transaction and either does all of its work or raises before changing anything
(the caller rolls back). Telling the open conversation workflows (a `customer_changed` signal) and
deleting workflow histories is the caller's part: this layer does not talk to Temporal.

A merge moves the source customer's conversations, tickets, identifiers and pending identity
confirmations to the target (messages, escalations, agent steps and metric points follow their
conversation), fills the target's empty profile fields from the source, and leaves the source as a
tombstone (`merged_into`). The merge record lists exactly what moved, which is what an unmerge
moves back. Identifiers both customers hold are kept once on the target: a verified row wins over a
claim (two customers can never both hold the same verified value), else the target's own row; the
other row is deleted and kept in the record, so an unmerge puts it back as it was.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, CRMError, NotFound
from core.logging import get_logger
from crm.repositories import api_keys, customer_data, merges
from crm.repositories.merges import CustomerState, IdentifierRow

log = get_logger(__name__)

ACTION_MERGED = "customer.merged"
ACTION_UNMERGED = "customer.unmerged"
ACTION_EXPORTED = "customer.exported"
ACTION_ERASED = "customer.erased"
REASON_MAX_CHARS = 500


class InvalidId(CRMError):
    """Text that cannot be a customer's or a merge's id (422, as the API's own validation)."""

    status_code = 422
    code = "validation_error"


class UnknownCustomer(NotFound):
    """No customer with that id."""


class UnknownMerge(NotFound):
    """No merge with that id."""


class MergeRefused(Conflict):
    """The merge, unmerge, export or erasure cannot be done in the records' current state; nothing changed."""


@dataclass(frozen=True)
class Contact:
    """A customer's contact details as the conversation workflows carry them."""

    customer_id: str
    email: str | None
    phone: str | None
    name: str | None


@dataclass(frozen=True)
class MergeRecord:
    """A merge (or an unmerge) done: what moved, and which open workflows must learn their new customer."""

    merge_id: uuid.UUID
    source_customer_id: uuid.UUID
    target_customer_id: uuid.UUID
    actor: str
    reason: str
    conversation_ids: list[uuid.UUID]
    ticket_ids: list[uuid.UUID]
    identifier_ids: list[uuid.UUID]
    metric_point_ids: list[int]
    # Workflow ids of the conversations that moved and are not closed: send them `customer_changed`.
    open_workflow_ids: list[str]
    # The record those conversations belong to now (the target after a merge, the source after an unmerge).
    now_belong_to: Contact
    unmerged: bool = False


@dataclass(frozen=True)
class IdentifierView:
    type: str
    value: str
    channel: str | None
    verified: bool


@dataclass(frozen=True)
class CustomerSide:
    """One customer of a merge preview."""

    id: uuid.UUID
    name: str | None
    email: str | None
    phone: str | None
    identifiers: list[IdentifierView]
    conversations: int
    open_conversations: int
    tickets: int


@dataclass(frozen=True)
class MergePreview:
    """What a merge of `source` into `target` would move, and what an agent should look at first."""

    source: CustomerSide
    target: CustomerSide
    conversation_ids: list[uuid.UUID]
    ticket_ids: list[uuid.UUID]
    identifier_ids: list[uuid.UUID]
    identity_confirmation_ids: list[uuid.UUID]
    metric_points: int
    open_workflow_ids: list[str]
    # Identifiers both hold (kept once on the target) and profile fields the target takes from the source.
    duplicate_identifiers: list[str]
    profile_filled: list[str]
    # Things that may mean these are two people: e.g. both have a verified email address (different ones).
    conflicts: list[str] = field(default_factory=list)


def parse_id(value: str | uuid.UUID, what: str = "customer") -> uuid.UUID:
    """A UUID from text; InvalidId (422) for text that cannot be one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise InvalidId(f"{str(value)[:80]!r} is not a valid {what} id (a UUID)") from None


def _contact(state: CustomerState) -> Contact:
    return Contact(customer_id=str(state.id), email=state.email, phone=state.phone, name=state.name)


def _standing(state: CustomerState | None, customer_id: uuid.UUID, role: str) -> CustomerState:
    """The customer, refusing an unknown, merged-away or erased one."""
    if state is None:
        raise UnknownCustomer(f"no customer {customer_id}")
    if state.merged_into is not None:
        raise MergeRefused(
            f"the {role} customer {customer_id} was already merged into {state.merged_into}",
            detail={"reason": "already_merged", "customer_id": str(customer_id), "merged_into": str(state.merged_into)},
        )
    if state.erased_at is not None:
        raise MergeRefused(
            f"the {role} customer {customer_id} was erased",
            detail={"reason": "erased", "customer_id": str(customer_id)},
        )
    return state


def _check_pair(source_id: uuid.UUID, target_id: uuid.UUID) -> None:
    if source_id == target_id:
        raise MergeRefused(
            "a customer cannot be merged into itself", detail={"reason": "same_customer", "customer_id": str(source_id)}
        )


def _identifier_plan(
    source: list[IdentifierRow], target: list[IdentifierRow]
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[str]]:
    """(source rows to move, rows to delete, duplicate values): one row per value on the target, verified first."""
    on_target = {(i.type, i.value): i for i in target}
    move: list[uuid.UUID] = []
    drop: list[uuid.UUID] = []
    duplicates: list[str] = []
    for row in source:
        twin = on_target.get((row.type, row.value))
        if twin is None:
            move.append(row.id)
            continue
        duplicates.append(f"{row.type}:{row.value}")
        if row.verified and not twin.verified:
            drop.append(twin.id)
            move.append(row.id)
        else:
            drop.append(row.id)
    return move, drop, duplicates


def _profile_fill(source: CustomerState, target: CustomerState) -> dict[str, str | None]:
    """The target's empty profile fields the source has a value for."""
    return {
        name: getattr(source, name)
        for name in merges.PROFILE_FIELDS
        if getattr(target, name) is None and getattr(source, name) is not None
    }


def _conflicts(source: list[IdentifierRow], target: list[IdentifierRow]) -> list[str]:
    found = []
    for kind in ("email", "phone"):
        mine = {i.value for i in source if i.verified and i.type == kind}
        theirs = {i.value for i in target if i.verified and i.type == kind}
        if mine and theirs and mine != theirs:
            found.append(f"both customers have a verified {kind}, and they differ")
    return found


async def _side(session: AsyncSession, state: CustomerState) -> CustomerSide:
    idents = await merges.identifiers(session, customer_id=state.id)
    convs = await merges.conversations(session, customer_id=state.id)
    tickets = await merges.ids_keyed_by_customer(session, table="tickets", customer_id=state.id)
    return CustomerSide(
        id=state.id,
        name=state.name,
        email=state.email,
        phone=state.phone,
        identifiers=[IdentifierView(i.type, i.value, i.channel, i.verified) for i in idents],
        conversations=len(convs),
        open_conversations=sum(1 for c in convs if c.open),
        tickets=len(tickets),
    )


async def preview_merge(
    session: AsyncSession, *, source_id: str | uuid.UUID, target_id: str | uuid.UUID
) -> MergePreview:
    """What merging `source_id` into `target_id` would move; refuses exactly what `merge_customers` refuses."""
    source_uuid, target_uuid = parse_id(source_id), parse_id(target_id)
    _check_pair(source_uuid, target_uuid)
    source = _standing(await merges.customer_state(session, customer_id=source_uuid), source_uuid, "source")
    target = _standing(await merges.customer_state(session, customer_id=target_uuid), target_uuid, "target")
    source_idents = await merges.identifiers(session, customer_id=source.id)
    target_idents = await merges.identifiers(session, customer_id=target.id)
    move, _, duplicates = _identifier_plan(source_idents, target_idents)
    convs = await merges.conversations(session, customer_id=source.id)
    return MergePreview(
        source=await _side(session, source),
        target=await _side(session, target),
        conversation_ids=[c.id for c in convs],
        ticket_ids=await merges.ids_keyed_by_customer(session, table="tickets", customer_id=source.id),
        identifier_ids=move,
        identity_confirmation_ids=await merges.ids_keyed_by_customer(
            session, table="identity_confirmations", customer_id=source.id
        ),
        metric_points=len(await merges.metric_point_ids(session, conversation_ids=[c.id for c in convs])),
        open_workflow_ids=[c.workflow_id for c in convs if c.open],
        duplicate_identifiers=duplicates,
        profile_filled=sorted(_profile_fill(source, target)),
        conflicts=_conflicts(source_idents, target_idents),
    )


async def merge_customers(
    session: AsyncSession,
    *,
    source_id: str,
    target_id: str,
    actor: str,
    reason: str,
    api_key_id: uuid.UUID | None = None,
) -> MergeRecord:
    """Merge customer `source_id` into `target_id` (one transaction: the caller's), recorded and audited.

    UnknownCustomer (404) for an unknown customer; MergeRefused (409) for a customer merged into
    itself, or a source or target already merged away or erased. The caller signals
    `customer_changed` to `open_workflow_ids` after it commits.
    """
    source_uuid, target_uuid = parse_id(source_id), parse_id(target_id)
    _check_pair(source_uuid, target_uuid)
    reason = " ".join(reason.split())[:REASON_MAX_CHARS]
    locked = await merges.lock_customers(session, customer_ids=[source_uuid, target_uuid])
    source = _standing(locked.get(source_uuid), source_uuid, "source")
    target = _standing(locked.get(target_uuid), target_uuid, "target")

    source_idents = await merges.identifiers(session, customer_id=source.id)
    target_idents = await merges.identifiers(session, customer_id=target.id)
    move_idents, drop_idents, _ = _identifier_plan(source_idents, target_idents)
    # Deleted first: the unique (customer, type, value) would refuse the moved twin otherwise.
    dropped = await merges.delete_identifiers(session, identifier_ids=drop_idents)
    moved_idents = await merges.reassign(
        session, table="customer_identifiers", ids=move_idents, from_customer=source.id, to_customer=target.id
    )
    convs = await merges.conversations(session, customer_id=source.id)
    moved_convs = await merges.reassign(
        session, table="conversations", ids=[c.id for c in convs], from_customer=source.id, to_customer=target.id
    )
    tickets = await merges.ids_keyed_by_customer(session, table="tickets", customer_id=source.id)
    moved_tickets = await merges.reassign(
        session, table="tickets", ids=tickets, from_customer=source.id, to_customer=target.id
    )
    confirmations = await merges.ids_keyed_by_customer(session, table="identity_confirmations", customer_id=source.id)
    moved_confirmations = await merges.reassign(
        session, table="identity_confirmations", ids=confirmations, from_customer=source.id, to_customer=target.id
    )
    metric_points = await merges.metric_point_ids(session, conversation_ids=moved_convs)
    filled = _profile_fill(source, target)
    await merges.set_profile(session, customer_id=target.id, values=filled)
    await merges.set_merged_into(session, customer_id=source.id, target_id=target.id)
    moved: dict[str, Any] = {
        "conversations": [str(i) for i in moved_convs],
        "tickets": [str(i) for i in moved_tickets],
        "identifiers": [str(i) for i in moved_idents],
        "identity_confirmations": [str(i) for i in moved_confirmations],
        # Follow their conversations; listed so the record says everything that changed hands.
        "metric_points": metric_points,
        # Rows deleted as duplicates (either customer's), as they were: an unmerge inserts them again.
        "dropped_identifiers": dropped,
        "profile_filled": sorted(filled),
    }
    stored = await merges.insert_merge(
        session, source_customer_id=source.id, target_customer_id=target.id, actor=actor, reason=reason, moved=moved
    )
    await api_keys.record_human_action(
        session,
        agent_name=actor,
        api_key_id=api_key_id,
        action=ACTION_MERGED,
        detail={
            "merge_id": str(stored.id),
            "source_customer_id": str(source.id),
            "target_customer_id": str(target.id),
            "conversations": len(moved_convs),
            "tickets": len(moved_tickets),
            "identifiers": len(moved_idents),
        },
    )
    after = {**{f: getattr(target, f) for f in merges.PROFILE_FIELDS}, **filled}
    open_ids = {c.id for c in convs if c.open}
    log.info("crm.customers_merged", merge_id=str(stored.id), source=str(source.id), target=str(target.id), actor=actor)
    return MergeRecord(
        merge_id=stored.id,
        source_customer_id=source.id,
        target_customer_id=target.id,
        actor=actor,
        reason=reason,
        conversation_ids=moved_convs,
        ticket_ids=moved_tickets,
        identifier_ids=moved_idents,
        metric_point_ids=metric_points,
        open_workflow_ids=[c.workflow_id for c in convs if c.id in open_ids],
        now_belong_to=Contact(str(target.id), after["email"], after["phone"], after["name"]),
    )


async def unmerge(
    session: AsyncSession,
    *,
    merge_id: str | uuid.UUID,
    actor: str,
    window: timedelta,
    api_key_id: uuid.UUID | None = None,
) -> MergeRecord:
    """Undo a merge within `window` of it: exactly the rows it moved go back, the source stands again.

    UnknownMerge (404) for an unknown merge; MergeRefused (409) when it was already undone, the
    window has passed, the target was merged away since (undo that merge first) or either was erased.
    """
    merge_uuid = parse_id(merge_id, "merge")
    stored = await merges.get_merge(session, merge_id=merge_uuid, lock=True)
    if stored is None:
        raise UnknownMerge(f"no merge {merge_uuid}")
    if stored.unmerged_at is not None:
        raise MergeRefused(
            f"merge {merge_uuid} was already undone by {stored.unmerged_by}", detail={"reason": "already_unmerged"}
        )
    now = await merges.database_now(session)
    if now - stored.merged_at > window:
        raise MergeRefused(
            f"merge {merge_uuid} is older than the unmerge window ({window.total_seconds() / 3600:g} hours)",
            detail={"reason": "window_passed", "merged_at": stored.merged_at.isoformat()},
        )
    source_id, target_id = stored.source_customer_id, stored.target_customer_id
    locked = await merges.lock_customers(session, customer_ids=[source_id, target_id])
    source, target = locked[source_id], locked[target_id]
    if source.erased_at is not None or target.erased_at is not None:
        raise MergeRefused(f"merge {merge_uuid} involves an erased customer", detail={"reason": "erased"})
    if target.merged_into is not None:
        raise MergeRefused(
            f"the target {target_id} was merged into {target.merged_into} since; undo that merge first",
            detail={"reason": "target_merged_since", "merged_into": str(target.merged_into)},
        )
    moved = stored.moved

    def ids(key: str) -> list[uuid.UUID]:
        return [uuid.UUID(i) for i in moved.get(key, [])]

    back_idents = await merges.reassign(
        session, table="customer_identifiers", ids=ids("identifiers"), from_customer=target_id, to_customer=source_id
    )
    await merges.restore_identifiers(session, rows=moved.get("dropped_identifiers", []))
    back_convs = await merges.reassign(
        session, table="conversations", ids=ids("conversations"), from_customer=target_id, to_customer=source_id
    )
    back_tickets = await merges.reassign(
        session, table="tickets", ids=ids("tickets"), from_customer=target_id, to_customer=source_id
    )
    await merges.reassign(
        session,
        table="identity_confirmations",
        ids=ids("identity_confirmations"),
        from_customer=target_id,
        to_customer=source_id,
    )
    # Profile fields the merge filled in go back to empty, unless someone changed them since.
    await merges.set_profile(
        session,
        customer_id=target_id,
        values={f: None for f in moved.get("profile_filled", []) if getattr(target, f) == getattr(source, f)},
    )
    await merges.set_merged_into(session, customer_id=source_id, target_id=None)
    await merges.mark_unmerged(session, merge_id=merge_uuid, actor=actor)
    await api_keys.record_human_action(
        session,
        agent_name=actor,
        api_key_id=api_key_id,
        action=ACTION_UNMERGED,
        detail={
            "merge_id": str(merge_uuid),
            "source_customer_id": str(source_id),
            "target_customer_id": str(target_id),
            "conversations": len(back_convs),
            "tickets": len(back_tickets),
            "identifiers": len(back_idents),
        },
    )
    convs = await merges.conversations_by_id(session, conversation_ids=back_convs)
    log.info("crm.customers_unmerged", merge_id=str(merge_uuid), actor=actor)
    return MergeRecord(
        merge_id=merge_uuid,
        source_customer_id=source_id,
        target_customer_id=target_id,
        actor=actor,
        reason=stored.reason,
        conversation_ids=back_convs,
        ticket_ids=back_tickets,
        identifier_ids=back_idents,
        metric_point_ids=await merges.metric_point_ids(session, conversation_ids=back_convs),
        open_workflow_ids=[c.workflow_id for c in convs if c.open],
        now_belong_to=_contact(source),
        unmerged=True,
    )


async def merges_of(
    session: AsyncSession, *, customer_id: str | uuid.UUID
) -> tuple[CustomerState, list[merges.StoredMerge]]:
    """The customer and the merges it took part in, latest first; UnknownCustomer for no such customer."""
    customer_uuid = parse_id(customer_id)
    state = await merges.customer_state(session, customer_id=customer_uuid)
    if state is None:
        raise UnknownCustomer(f"no customer {customer_uuid}")
    return state, await merges.merges_of(session, customer_id=customer_uuid)


# ----------------------------------------------------------------------------- GDPR


def _erasable(state: CustomerState | None, customer_uuid: uuid.UUID) -> CustomerState:
    """The customer, refusing an unknown, erased or merged-away one (its data lives on its target)."""
    if state is None:
        raise UnknownCustomer(f"no customer {customer_uuid}")
    if state.erased_at is not None:
        raise MergeRefused(f"customer {customer_uuid} was already erased", detail={"reason": "already_erased"})
    if state.merged_into is not None:
        raise MergeRefused(
            f"customer {customer_uuid} was merged into {state.merged_into}: export or erase that customer",
            detail={"reason": "already_merged", "merged_into": str(state.merged_into)},
        )
    return state


async def export_customer(
    session: AsyncSession, *, customer_id: str | uuid.UUID, actor: str, api_key_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Everything the CRM holds about a customer (and the records merged into it), as JSON; audited.

    UnknownCustomer (404) for no such customer; MergeRefused (409) for an erased or merged-away one.
    """
    customer_uuid = parse_id(customer_id)
    state = _erasable(await merges.customer_state(session, customer_id=customer_uuid), customer_uuid)
    customer_ids = await customer_data.customer_and_merged_away(session, customer_id=state.id)
    rows = await customer_data.export_rows(session, customer_ids=customer_ids)
    await api_keys.record_human_action(
        session, agent_name=actor, api_key_id=api_key_id, action=ACTION_EXPORTED, detail={"customer_id": str(state.id)}
    )
    return {"customer_id": str(state.id), "exported_at": (await merges.database_now(session)).isoformat(), **rows}


@dataclass(frozen=True)
class ErasurePlan:
    """Who an erasure covers and which workflow executions hold their data (histories, search attributes)."""

    customer_id: uuid.UUID
    customer_ids: list[uuid.UUID]
    workflow_ids: list[str]


async def plan_erasure(session: AsyncSession, *, customer_id: str | uuid.UUID) -> ErasurePlan:
    """What erasing this customer covers; refuses as `erase_customer` does, changing nothing."""
    customer_uuid = parse_id(customer_id)
    state = _erasable(await merges.customer_state(session, customer_id=customer_uuid), customer_uuid)
    customer_ids = await customer_data.customer_and_merged_away(session, customer_id=state.id)
    return ErasurePlan(
        customer_id=state.id,
        customer_ids=customer_ids,
        workflow_ids=await customer_data.workflow_ids(session, customer_ids=customer_ids),
    )


async def erase_customer(
    session: AsyncSession, *, customer_id: str | uuid.UUID, actor: str, api_key_id: uuid.UUID | None = None
) -> dict[str, int]:
    """Erase the customer's personal data in the CRM (their tombstone row stays); returns counts per table.

    The audit row says that an erasure happened, of which customer id, by whom and when, and nothing
    else. The caller deletes the workflow histories (`plan_erasure`) before it commits this.
    """
    customer_uuid = parse_id(customer_id)
    locked = await merges.lock_customers(session, customer_ids=[customer_uuid])
    state = _erasable(locked.get(customer_uuid), customer_uuid)
    customer_ids = await customer_data.customer_and_merged_away(session, customer_id=state.id)
    counts = await customer_data.erase(session, customer_ids=customer_ids, erased_by=actor)
    await api_keys.record_human_action(
        session, agent_name=actor, api_key_id=api_key_id, action=ACTION_ERASED, detail={"customer_id": str(state.id)}
    )
    log.info("crm.customer_erased", customer_id=str(state.id), actor=actor)
    return counts
