"""Merging two customers and undoing it, on the real PostgreSQL (crm.merging), each test rolled back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from crm import merging
from crm.merging import InvalidId, MergeRefused, UnknownCustomer, UnknownMerge
from crm.repositories.merges import TABLES_KEYED_BY_CUSTOMER
from tests.crm import customer_records as rec

WEEK = timedelta(hours=168)


async def two_customers(session: AsyncSession) -> tuple[rec.Seeded, rec.Seeded]:
    t = rec.tag()
    source = await rec.customer(session, name=None, phone="+14155550101")
    target = await rec.customer(session, name=f"Ada {t}", email=f"ada.{t}@example.com")
    phone = f"+1{uuid.uuid4().int % 10**10:010d}"
    await rec.identifier(session, source, kind="phone", value=phone, verified=True, channel="whatsapp")
    await rec.identifier(
        session, source, kind="email", value=f"claimed.{t}@example.com", verified=False, channel="web_form"
    )
    await rec.identifier(session, target, kind="email", value=f"ada.{t}@example.com", verified=True)
    await rec.conversation(session, source, channel="whatsapp", status="active")
    await rec.conversation(session, source, channel="whatsapp", status="closed")
    await rec.conversation(session, target, channel="email", status="active")
    return source, target


async def test_every_table_keyed_by_customer_is_handled_by_the_merge(session: AsyncSession) -> None:
    rows = await session.execute(
        text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name = 'customer_id'"
        )
    )
    assert {r.table_name for r in rows} - {"customer_merges"} == set(TABLES_KEYED_BY_CUSTOMER)


async def test_preview_shows_what_would_move_and_changes_nothing(session: AsyncSession) -> None:
    source, target = await two_customers(session)
    before = await rec.snapshot(session, [source.customer_id, target.customer_id])
    preview = await merging.preview_merge(session, source_id=str(source.customer_id), target_id=str(target.customer_id))
    assert sorted(preview.conversation_ids) == sorted(source.conversation_ids)
    assert sorted(preview.ticket_ids) == sorted(source.ticket_ids)
    assert sorted(preview.identifier_ids) == sorted(source.identifier_ids)
    assert preview.metric_points == 2
    assert preview.open_workflow_ids == [source.workflow_ids[0]]
    assert preview.profile_filled == ["phone"]  # the target has no phone number
    assert preview.source.open_conversations == 1 and preview.target.conversations == 1
    assert {i.verified for i in preview.source.identifiers} == {True, False}
    assert preview.conflicts == []
    assert await rec.snapshot(session, [source.customer_id, target.customer_id]) == before


async def test_merge_moves_everything_and_unmerge_restores_exactly(session: AsyncSession) -> None:
    source, target = await two_customers(session)
    ids = [source.customer_id, target.customer_id]
    before = await rec.snapshot(session, ids)

    record = await merging.merge_customers(
        session,
        source_id=str(source.customer_id),
        target_id=str(target.customer_id),
        actor="Agent Smith",
        reason="same person",
    )
    assert sorted(record.conversation_ids) == sorted(source.conversation_ids)
    assert record.open_workflow_ids == [source.workflow_ids[0]]
    assert record.now_belong_to.customer_id == str(target.customer_id)
    assert record.now_belong_to.phone == "+14155550101"  # the target had none: taken from the source
    assert len(record.metric_point_ids) == 2
    assert await rec.owner_of(session, "conversations", source.conversation_ids) == {target.customer_id}
    assert await rec.owner_of(session, "tickets", source.ticket_ids) == {target.customer_id}
    assert await rec.owner_of(session, "customer_identifiers", source.identifier_ids) == {target.customer_id}
    merged_into = await session.scalar(
        text("SELECT merged_into FROM customers WHERE id = :c"), {"c": source.customer_id}
    )
    assert merged_into == target.customer_id
    # The history follows: messages, escalations, steps and metrics hang off the moved conversations.
    history = await session.scalar(
        text(
            "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.customer_id = :t"
        ),
        {"t": target.customer_id},
    )
    assert history == 6
    audit = (
        await session.execute(
            text(
                "SELECT agent_name, detail FROM human_actions WHERE action = 'customer.merged' AND detail->>'merge_id' = :m"
            ),
            {"m": str(record.merge_id)},
        )
    ).one()
    assert audit.agent_name == "Agent Smith" and audit.detail["conversations"] == 2

    undone = await merging.unmerge(session, merge_id=str(record.merge_id), actor="Agent Jones", window=WEEK)
    assert undone.unmerged and undone.now_belong_to.customer_id == str(source.customer_id)
    assert undone.open_workflow_ids == [source.workflow_ids[0]]
    after = await rec.snapshot(session, ids)
    assert {k: v for k, v in after.items() if k != "merges"} == {k: v for k, v in before.items() if k != "merges"}
    unmerged_by = await session.scalar(
        text("SELECT unmerged_by FROM customer_merges WHERE id = :m"), {"m": record.merge_id}
    )
    assert unmerged_by == "Agent Jones"
    assert (
        await session.scalar(
            text("SELECT count(*) FROM human_actions WHERE action = 'customer.unmerged' AND detail->>'merge_id' = :m"),
            {"m": str(record.merge_id)},
        )
        == 1
    )


async def test_identifiers_both_hold_are_kept_once_verified_first_and_restored(session: AsyncSession) -> None:
    t = rec.tag()
    value = f"shared.{t}@example.com"
    source = await rec.customer(session)
    target = await rec.customer(session)
    verified_on_source = await rec.identifier(session, source, kind="email", value=value, verified=True)
    claim_on_target = await rec.identifier(
        session, target, kind="email", value=value, verified=False, channel="web_form"
    )
    other_claim = f"other.{t}@example.com"
    await rec.identifier(session, source, kind="email", value=other_claim, verified=False, channel="web_form")
    await rec.identifier(session, target, kind="email", value=other_claim, verified=False, channel="web_form")
    before = await rec.snapshot(session, [source.customer_id, target.customer_id])

    preview = await merging.preview_merge(session, source_id=str(source.customer_id), target_id=str(target.customer_id))
    assert sorted(preview.duplicate_identifiers) == sorted([f"email:{value}", f"email:{other_claim}"])
    record = await merging.merge_customers(
        session, source_id=str(source.customer_id), target_id=str(target.customer_id), actor="a", reason="r"
    )
    rows = (
        await session.execute(
            text(
                "SELECT id, identifier_value, verified_at IS NOT NULL AS verified FROM customer_identifiers "
                "WHERE customer_id = :t ORDER BY identifier_value"
            ),
            {"t": target.customer_id},
        )
    ).all()
    assert [(r.identifier_value, r.verified) for r in rows] == [(other_claim, False), (value, True)]
    assert {r.id for r in rows if r.identifier_value == value} == {verified_on_source}
    assert claim_on_target not in {r.id for r in rows}

    await merging.unmerge(session, merge_id=record.merge_id, actor="a", window=WEEK)
    after = await rec.snapshot(session, [source.customer_id, target.customer_id])
    assert after["identifiers"] == before["identifiers"]


async def test_unmerge_past_the_window_or_twice_is_refused_and_changes_nothing(session: AsyncSession) -> None:
    source, target = await two_customers(session)
    record = await merging.merge_customers(
        session, source_id=str(source.customer_id), target_id=str(target.customer_id), actor="a", reason="r"
    )
    await session.execute(
        text("UPDATE customer_merges SET merged_at = now() - interval '3 hours' WHERE id = :m"), {"m": record.merge_id}
    )
    before = await rec.snapshot(session, [source.customer_id, target.customer_id])
    with pytest.raises(MergeRefused, match="unmerge window"):
        await merging.unmerge(session, merge_id=str(record.merge_id), actor="a", window=timedelta(hours=2))
    assert await rec.snapshot(session, [source.customer_id, target.customer_id]) == before

    await merging.unmerge(session, merge_id=str(record.merge_id), actor="a", window=timedelta(hours=4))
    before = await rec.snapshot(session, [source.customer_id, target.customer_id])
    with pytest.raises(MergeRefused, match="already undone"):
        await merging.unmerge(session, merge_id=str(record.merge_id), actor="a", window=WEEK)
    assert await rec.snapshot(session, [source.customer_id, target.customer_id]) == before
    with pytest.raises(UnknownMerge):
        await merging.unmerge(session, merge_id=str(uuid.uuid4()), actor="a", window=WEEK)
    with pytest.raises(InvalidId):
        await merging.unmerge(session, merge_id="not-a-uuid", actor="a", window=WEEK)


async def test_bad_merges_are_refused_with_a_reason_and_change_nothing(session: AsyncSession) -> None:
    source, target = await two_customers(session)
    third = await rec.customer(session, name="Third")
    ids = [source.customer_id, target.customer_id, third.customer_id]
    before = await rec.snapshot(session, ids)

    async def refused(src: object, dst: object, error: type[Exception], match: str) -> None:
        for call in (merging.preview_merge, merging.merge_customers):
            kwargs = {"actor": "a", "reason": "r"} if call is merging.merge_customers else {}
            with pytest.raises(error, match=match):
                await call(session, source_id=str(src), target_id=str(dst), **kwargs)  # type: ignore[operator]
        assert await rec.snapshot(session, ids) == before

    await refused(source.customer_id, source.customer_id, MergeRefused, "into itself")
    await refused(uuid.uuid4(), target.customer_id, UnknownCustomer, "no customer")
    await refused(source.customer_id, uuid.uuid4(), UnknownCustomer, "no customer")
    await refused("nonsense", target.customer_id, InvalidId, "not a valid customer id")

    await merging.merge_customers(
        session, source_id=str(source.customer_id), target_id=str(target.customer_id), actor="a", reason="r"
    )
    before = await rec.snapshot(session, ids)
    # The source is merged away now: neither side of another merge.
    await refused(source.customer_id, third.customer_id, MergeRefused, "already merged")
    await refused(third.customer_id, source.customer_id, MergeRefused, "already merged")
    await refused(source.customer_id, target.customer_id, MergeRefused, "already merged")


async def test_unmerge_after_the_target_was_merged_again_is_refused(session: AsyncSession) -> None:
    a = await rec.customer(session)
    b = await rec.customer(session)
    c = await rec.customer(session)
    await rec.conversation(session, a)
    first = await merging.merge_customers(
        session, source_id=str(a.customer_id), target_id=str(b.customer_id), actor="x", reason="r"
    )
    second = await merging.merge_customers(
        session, source_id=str(b.customer_id), target_id=str(c.customer_id), actor="x", reason="r"
    )
    assert await rec.owner_of(session, "conversations", a.conversation_ids) == {c.customer_id}
    with pytest.raises(MergeRefused, match="undo that merge first"):
        await merging.unmerge(session, merge_id=first.merge_id, actor="x", window=WEEK)
    await merging.unmerge(session, merge_id=second.merge_id, actor="x", window=WEEK)
    await merging.unmerge(session, merge_id=first.merge_id, actor="x", window=WEEK)
    assert await rec.owner_of(session, "conversations", a.conversation_ids) == {a.customer_id}


async def test_erased_customers_take_no_part_in_merges(session: AsyncSession) -> None:
    a = await rec.customer(session, name="A")
    b = await rec.customer(session, name="B")
    c = await rec.customer(session, name="C")
    await rec.conversation(session, a)
    record = await merging.merge_customers(
        session, source_id=str(a.customer_id), target_id=str(b.customer_id), actor="x", reason="r"
    )
    counts = await merging.erase_customer(session, customer_id=str(b.customer_id), actor="dpo")
    assert counts["customers"] == 2  # the record merged into it is the same person
    before = await rec.snapshot(session, [a.customer_id, b.customer_id, c.customer_id])
    with pytest.raises(MergeRefused, match="erased"):
        await merging.unmerge(session, merge_id=record.merge_id, actor="x", window=WEEK)
    with pytest.raises(MergeRefused, match="erased"):
        await merging.merge_customers(
            session, source_id=str(c.customer_id), target_id=str(b.customer_id), actor="x", reason="r"
        )
    with pytest.raises(MergeRefused, match="already erased"):
        await merging.erase_customer(session, customer_id=str(b.customer_id), actor="dpo")
    with pytest.raises(MergeRefused, match="already erased"):
        await merging.export_customer(session, customer_id=str(a.customer_id), actor="dpo")
    with pytest.raises(UnknownCustomer):
        await merging.plan_erasure(session, customer_id=str(uuid.uuid4()))
    assert await rec.snapshot(session, [a.customer_id, b.customer_id, c.customer_id]) == before
    reason = await session.scalar(text("SELECT reason FROM customer_merges WHERE id = :m"), {"m": record.merge_id})
    assert reason == "[erased]"
