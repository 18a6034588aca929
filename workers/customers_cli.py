"""`crm-fte customers ...`: merge two customer records (after a preview), unmerge, GDPR export and erase.

Like `crm-fte escalations`, these work directly against the configured PostgreSQL and Temporal
through the same functions as the HTTP API (gateway.agents.customer_service), so a merge from here
is validated, audited and signalled to the open conversations exactly like one from the console.
Errors are one line on stderr; exit 1 (not found, invalid), 3 (refused: a conflict).
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from workers.agents_cli import _first_line, _run, _when, err, out

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from temporalio.client import Client

    from core.settings import Settings
    from gateway.agents.customer_schemas import ErasureResult, MergeList, MergePreviewView, MergeResult

customers_app = typer.Typer(
    rich_markup_mode=None,
    help="Customer records: merge two into one (and undo it), GDPR export and erasure.",
    no_args_is_help=True,
)

AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Who is doing this (the audit trail's name); default: your user name.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def _who(agent: str | None) -> str:
    return " ".join((agent or getpass.getuser()).split())


async def _connect(settings: Settings, who: str) -> Client:
    """A Temporal client; ServiceUnavailable (one line) when it does not answer."""
    from core.errors import ServiceUnavailable
    from core.temporal import connect_temporal

    try:
        return await connect_temporal(settings, identity=f"crm-fte-cli:{who}")
    except Exception as exc:
        raise ServiceUnavailable(f"cannot reach Temporal at {settings.temporal_address}: {_first_line(exc)}") from exc


async def _temporal_or_none(settings: Settings, who: str) -> Client | None:
    """For a merge: without Temporal it still holds, and the open conversations are reported as not told."""
    from core.errors import ServiceUnavailable

    try:
        return await _connect(settings, who)
    except ServiceUnavailable as exc:
        err.print(f"crm-fte: {exc.message}; open conversations will not be told")
        return None


def _window(settings: Settings) -> timedelta:
    return timedelta(hours=settings.customer_unmerge_window_hours)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_preview(preview: MergePreviewView) -> None:
    for role, side in (("merged away", preview.source), ("remains", preview.target)):
        who = side.name or side.email or side.phone or "—"
        out.print(
            f"{role:>12}: {side.id}  {who}  ({_count(side.conversations, 'conversation')}, "
            f"{side.open_conversations} open; {_count(side.tickets, 'ticket')})"
        )
        for ident in side.identifiers:
            out.print(f"{'':>14}{ident.type} {ident.value} ({'verified' if ident.verified else 'claim'})")
    out.print(
        f"moves: {_count(len(preview.conversation_ids), 'conversation')}, "
        f"{_count(len(preview.ticket_ids), 'ticket')}, {_count(preview.identifiers, 'identifier')}, "
        f"{_count(preview.metric_points, 'metric point')}; "
        f"{_count(preview.open_workflows, 'open conversation')} will be told"
    )
    if preview.duplicate_identifiers:
        out.print("kept once: " + ", ".join(preview.duplicate_identifiers))
    if preview.profile_filled:
        out.print("the remaining record takes: " + ", ".join(preview.profile_filled))
    for conflict in preview.conflicts:
        out.print(f"warning: {conflict}")


def _print_result(result: MergeResult, as_json: bool) -> None:
    if as_json:
        out.print(json.dumps(result.model_dump(mode="json")), soft_wrap=True)
        return
    verb = "unmerged" if result.unmerged else "merged"
    out.print(
        f"{verb} {result.source_customer_id} {'from' if result.unmerged else 'into'} {result.target_customer_id} "
        f"(merge {result.merge_id}): {_count(len(result.conversation_ids), 'conversation')}, "
        f"{_count(len(result.ticket_ids), 'ticket')}, {_count(result.identifiers, 'identifier')} moved; "
        f"{_count(len(result.workflows_told), 'open conversation')} told"
    )
    if result.workflows_not_told:
        err.print(f"not told (closed since, or Temporal down): {', '.join(result.workflows_not_told)}")


@customers_app.command("merge-preview")
def merge_preview(
    source: Annotated[str, typer.Argument(help="The customer id to merge away.")],
    target: Annotated[str, typer.Argument(help="The customer id that remains.")],
    as_json: JsonOption = False,
) -> None:
    """Show what merging SOURCE into TARGET would move (nothing changes)."""
    from gateway.agents import customer_service

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> MergePreviewView:
        return await customer_service.preview(sessions, source_id=source, target_id=target)

    preview = _run("cli", work)
    if as_json:
        out.print(json.dumps(preview.model_dump(mode="json")), soft_wrap=True)
    else:
        _print_preview(preview)


@customers_app.command("merge")
def merge(
    source: Annotated[str, typer.Argument(help="The customer id to merge away.")],
    target: Annotated[str, typer.Argument(help="The customer id that remains.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the merge record).")],
    yes: Annotated[bool, typer.Option("--yes", help="Merge without showing the preview and asking.")] = False,
    agent: AgentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Merge SOURCE into TARGET after a preview; open conversations learn their new customer."""
    from workers.cli import fail

    if not reason.strip():
        raise fail("--reason must not be empty")
    if not yes:
        merge_preview(source, target, as_json=False)
        if not sys.stdin.isatty():
            raise fail("not merged: pass --yes to merge without a question")
        typer.confirm("Merge?", abort=True, err=True)
    from gateway.agents import customer_service

    who = _who(agent)

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> MergeResult:
        temporal = await _temporal_or_none(settings, who)
        return await customer_service.merge(
            sessions, temporal, source_id=source, target_id=target, reason=reason, actor=who
        )

    _print_result(_run("cli", work, needs=("database", "temporal")), as_json)


@customers_app.command("merges")
def list_merges(
    customer: Annotated[str, typer.Argument(help="The customer id.")],
    as_json: JsonOption = False,
) -> None:
    """The merges CUSTOMER took part in, latest first, with each one's unmerge deadline."""
    from gateway.agents import customer_service

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> MergeList:
        return await customer_service.list_merges(sessions, customer_id=customer, window=_window(settings))

    listing = _run("cli", work)
    if as_json:
        out.print(json.dumps(listing.model_dump(mode="json")), soft_wrap=True)
        return
    if listing.merged_into:
        out.print(f"{listing.customer_id} was merged into {listing.merged_into}")
    if not listing.merges:
        err.print("no merges")
    for m in listing.merges:
        state = (
            f"unmerged {_when(m.unmerged_at)} by {m.unmerged_by}"
            if m.unmerged_at
            else f"unmerge until {_when(m.unmerge_until)}"
        )
        out.print(
            f"{m.id}  {m.source_customer_id} → {m.target_customer_id}  {_when(m.merged_at)} by {m.actor}  "
            f"({state})  {m.reason}"
        )


@customers_app.command("unmerge")
def unmerge(
    merge_id: Annotated[str, typer.Argument(help="The merge's id (crm-fte customers merges CUSTOMER).")],
    agent: AgentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Undo a merge within CUSTOMER_UNMERGE_WINDOW_HOURS: exactly what it moved goes back."""
    from gateway.agents import customer_service

    who = _who(agent)

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> MergeResult:
        temporal = await _temporal_or_none(settings, who)
        return await customer_service.unmerge(
            sessions, temporal, merge_id=merge_id, window=_window(settings), actor=who
        )

    _print_result(_run("cli", work, needs=("database", "temporal")), as_json)


@customers_app.command("export")
def export(
    customer: Annotated[str, typer.Argument(help="The customer id.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here (default: stdout).", show_default=False)
    ] = None,
    agent: AgentOption = None,
) -> None:
    """GDPR export: everything the CRM holds about CUSTOMER, as one JSON document (audited)."""
    from gateway.agents import customer_service
    from workers.cli import fail

    who = _who(agent)

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        return await customer_service.export(sessions, customer_id=customer, actor=who)

    data = _run("cli", work)
    document = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out_file is None:
        sys.stdout.write(document)
        return
    try:
        out_file.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out_file}: {exc.strerror or exc}") from None
    err.print(f"exported customer {data['customer_id']} to {out_file}")


@customers_app.command("erase")
def erase(
    customer: Annotated[str, typer.Argument(help="The customer id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Required: erasure cannot be undone.")] = False,
    agent: AgentOption = None,
    as_json: JsonOption = False,
) -> None:
    """GDPR erasure of CUSTOMER: workflow histories deleted, messages redacted, identifiers removed (audited)."""
    from gateway.agents import customer_service
    from workers.cli import fail

    if not yes:
        raise fail("erasure cannot be undone: pass --yes to erase this customer's data")
    who = _who(agent)

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> ErasureResult:
        return await customer_service.erase(
            sessions, await _connect(settings, who), customer_id=customer, confirm=customer, actor=who
        )

    result = _run("cli", work, needs=("database", "temporal"))
    if as_json:
        out.print(json.dumps(result.model_dump(mode="json")), soft_wrap=True)
        return
    out.print(
        f"erased customer {result.customer_id} ({_count(result.customers_erased, 'record')}, "
        f"{_count(result.rows.get('messages', 0), 'message')} redacted, "
        f"{_count(result.workflows_deleted, 'workflow execution')} deleted)"
    )
