"""`crm-fte agents ...` (human agents' API keys) and `crm-fte escalations ...` (the human queue).

Both work directly against the configured PostgreSQL and Temporal, through the same service
functions as the HTTP API (gateway.agents), so a resolution from here is audited and validated
exactly like one from the console.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from core.vocabulary import CHANNELS, ESCALATION_REASONS, PRIORITIES, OwnershipAction, ResolutionAction
from workers.terminal import make_console

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from core.settings import Settings
    from gateway.agents import ApiKeyInfo
    from gateway.agents.ownership_schemas import OwnershipResult
    from gateway.agents.schemas import QueueItem, ResolveResult
    from gateway.agents.workspace_schemas import NoteList
    from workers.stack import Service

T = TypeVar("T")
W = TypeVar("W", bound=str)

agents_app = typer.Typer(
    rich_markup_mode=None, help="Human agents' API keys (for the agent console and API).", no_args_is_help=True
)
escalations_app = typer.Typer(
    rich_markup_mode=None, help="The queue of conversations waiting for a human.", no_args_is_help=True
)
conversations_app = typer.Typer(
    rich_markup_mode=None,
    help="Who answers a conversation (claim, release, assign, take over, reply, hand back, close) and its notes.",
    no_args_is_help=True,
)

out = make_console(markup=False)
err = make_console(stderr=True, markup=False)


def _run(
    process: str,
    work: Callable[[Settings, async_sessionmaker[AsyncSession]], Awaitable[T]],
    needs: tuple[Service, ...] = ("database",),
) -> T:
    """Settings aimed at the right stack, an engine for the duration of `work`, CRM errors as one-line exits."""
    from core.errors import CRMError
    from crm.db import create_engine, create_sessionmaker
    from workers.cli import fail, target_settings

    settings = target_settings(process, needs)

    async def main() -> T:
        engine = create_engine(settings)
        try:
            return await work(settings, create_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except CRMError as exc:
        raise fail(exc.message, 3 if exc.status_code == 409 else 1) from None
    except (OSError, ConnectionError) as exc:
        raise fail(f"cannot reach the database: {type(exc).__name__}: {_first_line(exc)}") from None
    except Exception as exc:
        # Driver errors (e.g. the api_keys table is missing before `crm-fte migrate`): one line, no trace.
        if type(exc).__module__.startswith(("sqlalchemy", "asyncpg")):
            raise fail(f"database error: {type(exc).__name__}: {_first_line(exc)}") from None
        raise


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


# ----------------------------------------------------------------------------- agents


@agents_app.command("create")
def create_agent(
    name: Annotated[str, typer.Argument(help="The person's name; their replies are signed with it.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Repeat for several; default: escalations:read and escalations:write."),
    ] = None,
) -> None:
    """Create an API key for NAME and print it once (only its hash is stored)."""
    from crm.db import transaction
    from gateway.agents import SCOPES, create_api_key

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> str:
        async with transaction(sessions) as session:
            info, key = await create_api_key(session, name=name, scopes=tuple(scope or SCOPES))
        err.print(f"API key for {info.name} (scopes: {', '.join(info.scopes)}). It is shown only this once:")
        return key

    key = _run("cli", work)
    # The key alone on stdout, so `KEY=$(crm-fte agents create NAME)` works.
    out.print(key, soft_wrap=True)


@agents_app.command("list")
def list_agents(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List API keys (prefix, scopes, created, last used, revoked); never the keys themselves."""
    from gateway.agents import list_api_keys

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> list[ApiKeyInfo]:
        async with sessions() as session:
            return await list_api_keys(session)

    keys = _run("cli", work)
    if as_json:
        for key in keys:
            out.print(key.model_dump_json(), soft_wrap=True)
        return
    if not keys:
        err.print("no API keys yet: crm-fte agents create NAME")
        return
    table = Table("name", "prefix", "scopes", "created", "last used", "revoked")
    for key in keys:
        table.add_row(
            key.name,
            key.key_prefix,
            ", ".join(key.scopes),
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at) if key.revoked_at else "",
        )
    out.print(table)


@agents_app.command("revoke")
def revoke_agent(name: Annotated[str, typer.Argument(help="Whose active key to revoke.")]) -> None:
    """Revoke NAME's active API key; it stops working on its next request."""
    from crm.db import transaction
    from gateway.agents import revoke_api_key

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> str:
        async with transaction(sessions) as session:
            info = await revoke_api_key(session, name=name)
        return info.key_prefix

    prefix = _run("cli", work)
    out.print(f"revoked the API key of {' '.join(name.split())} (prefix {prefix})")


# ----------------------------------------------------------------------------- escalations


def _words(given: list[str] | None, known: tuple[W, ...], option: str) -> tuple[W, ...]:
    """The vocabulary's words among `given`; a usage error naming any other (exit 2, nothing listed)."""
    unknown = [g for g in given or () if g not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(known)}", param_hint=option)
    return tuple(w for w in known if w in (given or ()))


@escalations_app.command("list")
def list_escalations(
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 100,
    breached: Annotated[
        bool | None,
        typer.Option("--breached/--within-sla", help="Only those past their SLA due time (or only those within it)."),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", metavar="CHANNEL", help=f"Repeat for several: {', '.join(CHANNELS)}."),
    ] = None,
    reason: Annotated[
        list[str] | None,
        typer.Option("--reason", metavar="REASON", help=f"Repeat for several: {', '.join(ESCALATION_REASONS)}."),
    ] = None,
    priority: Annotated[
        list[str] | None,
        typer.Option("--priority", metavar="PRIORITY", help=f"Repeat for several: {', '.join(PRIORITIES)}."),
    ] = None,
    assignee: Annotated[str | None, typer.Option("--assignee", help="Only those this person owns.")] = None,
    unassigned: Annotated[bool, typer.Option("--unassigned", help="Only those nobody has claimed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Open escalations, most urgent first, then SLA due soonest: ticket, reason, priority, SLA, channel, customer."""
    from crm.repositories.escalations import QueueFilters
    from gateway.agents import open_escalations

    filters = QueueFilters(
        channels=_words(channel, CHANNELS, "--channel"),
        reasons=_words(reason, ESCALATION_REASONS, "--reason"),
        priorities=_words(priority, PRIORITIES, "--priority"),
        breached=breached,
        assignee=" ".join(assignee.split()) if assignee else None,
        unassigned=unassigned,
    )
    if assignee and unassigned:
        from workers.cli import fail

        raise fail("choose one of --assignee and --unassigned")

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> list[QueueItem]:
        async with sessions() as session:
            return await open_escalations(session, limit=limit, filters=filters)

    items = _run("cli", work)
    if as_json:
        for item in items:
            out.print(item.model_dump_json(), soft_wrap=True)
        return
    if not items:
        err.print("no open escalations")
        return
    table = Table("ticket", "reason", "priority", "SLA due", "channel", "owner", "customer", "last message")
    for item in items:
        who = item.customer.name or item.customer.email or item.customer.phone or "—"
        due = _when(item.sla_due_at) + (" (overdue)" if item.overdue else "")
        table.add_row(
            item.ticket_id or "—",
            item.reason,
            item.priority,
            due,
            item.channel,
            item.assignee or "—",
            who,
            (item.last_customer_message or "")[:60],
        )
    out.print(table)


@escalations_app.command("resolve")
def resolve_ticket(
    ticket: Annotated[str, typer.Argument(help="The ticket number, e.g. TKT-0001.")],
    reply: Annotated[str, typer.Option("--reply", help="What the customer receives from you.")],
    action: Annotated[
        ResolutionAction, typer.Option("--action", help="Hand back to the AI, or close the conversation.")
    ],
    agent: Annotated[
        str | None, typer.Option("--agent", help="Who is answering (signs the reply); default: your user name.")
    ] = None,
    wait: Annotated[float, typer.Option(min=1, max=600, help="Seconds to wait for the reply to be sent.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Reply to TICKET's customer and resume the AI or close the conversation (exit 3 if already resolved)."""
    from core.temporal import connect_temporal
    from gateway.agents import resolve_escalation

    who = " ".join((agent or getpass.getuser()).split())

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> ResolveResult:
        from core.errors import ServiceUnavailable

        try:
            client = await connect_temporal(settings, identity=f"crm-fte-cli:{who}")
        except Exception as exc:
            raise ServiceUnavailable(
                f"cannot reach Temporal at {settings.temporal_address}: {_first_line(exc)}"
            ) from exc
        return await resolve_escalation(
            sessions=sessions,
            temporal=client,
            ticket_number=ticket,
            reply=reply,
            action=action,
            agent_name=who,
            via="cli",
            wait_seconds=wait,
        )

    result = _run("cli", work, needs=("database", "temporal"))
    if as_json:
        out.print(json.dumps(result.model_dump(mode="json")), soft_wrap=True)
    else:
        out.print(f"{result.ticket_id}: {_reply_outcome(result)}")
        if result.delivery_status in ("failed", "undelivered", "not_configured"):
            raise typer.Exit(4)  # resolved, but the customer did not get the reply: scripts must notice


def _reply_outcome(result: ResolveResult) -> str:
    """What became of the reply, in words (the console says the same)."""
    status = result.delivery_status
    after = f"; conversation {result.conversation_status}" if result.conversation_status else ""
    if not result.reply_sent or status in (None, "pending"):
        return "accepted; the reply is still being sent"
    if status in ("sent", "queued", "delivered", "read"):
        return f"reply {'delivered' if status in ('delivered', 'read') else 'sent'} by {result.resolved_by}{after}"
    if status == "not_configured":
        return f"the reply was recorded but NOT sent: the channel is not configured on this server{after}"
    return f"the reply could not be delivered ({status}){after}"


# ----------------------------------------------------------------------------- conversations

_TICKET = re.compile(r"^(?:TKT-)?\d{1,12}$", re.IGNORECASE)


async def _conversation_of(sessions: async_sessionmaker[AsyncSession], which: str) -> str:
    """A conversation id from an id or a ticket number (TKT-0042, or 42)."""
    from core.errors import NotFound
    from crm.repositories import tickets
    from gateway.agents.service import normalise_ticket_number

    if not _TICKET.match(which.strip()):
        return which.strip()
    number = normalise_ticket_number(which)
    async with sessions() as session:
        target = await tickets.resolution_target(session, ticket_number=number)
    if target is None:
        raise NotFound(f"no ticket {number}")
    return str(target.conversation_id)


def _agent_name(agent: str | None) -> str:
    return " ".join((agent or getpass.getuser()).split())


Which = Annotated[str, typer.Argument(help="A ticket number (TKT-0042) or a conversation id.")]
Agent = Annotated[str | None, typer.Option("--agent", help="Who acts (signs replies); default: your user name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def _ownership(
    which: str, action: OwnershipAction, agent: str | None, as_json: bool, wait: float = 30.0, **fields: str | None
) -> None:
    """Send one ownership action through the service the API uses; exit 3 when the workflow refuses it."""
    from core.temporal import connect_temporal
    from gateway.agents.ownership_service import Actor, change_ownership
    from workflows.contracts import OwnershipChange

    who = _agent_name(agent)
    try:
        change = OwnershipChange(action=action, agent=who, **fields)
    except ValueError as exc:
        from workers.cli import fail

        raise fail(_first_line(exc)) from None

    async def work(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> OwnershipResult:
        from core.errors import ServiceUnavailable

        conversation_id = await _conversation_of(sessions, which)
        try:
            client = await connect_temporal(settings, identity=f"crm-fte-cli:{who}")
        except Exception as exc:
            raise ServiceUnavailable(
                f"cannot reach Temporal at {settings.temporal_address}: {_first_line(exc)}"
            ) from exc
        return await change_ownership(
            sessions=sessions,
            temporal=client,
            conversation_id=conversation_id,
            change=change,
            actor=Actor(name=who, api_key_id=None, via="cli"),
            wait_seconds=wait,
        )

    result = _run("cli", work, needs=("database", "temporal"))
    if as_json:
        out.print(json.dumps(result.model_dump(mode="json")), soft_wrap=True)
        return
    where = result.ticket_id or str(result.conversation_id)
    if not result.done:
        out.print(f"{where}: accepted; still being carried out")
        return
    owner = {"ai": "the AI answers", "waiting": "waiting for someone to claim it", "closed": "closed"}.get(
        result.ownership or "", f"owned by {result.assignee}"
    )
    delivery = f"; reply {result.delivery_status}" if action == "reply" else ""
    out.print(f"{where}: {owner}{delivery}")
    if action == "reply" and result.delivery_status in ("failed", "undelivered", "not_configured"):
        raise typer.Exit(4)


@conversations_app.command("claim")
def claim(which: Which, agent: Agent = None, as_json: AsJson = False) -> None:
    """Take a conversation that waits for a person (exit 3 when someone else holds it)."""
    _ownership(which, "claim", agent, as_json)


@conversations_app.command("release")
def release(which: Which, agent: Agent = None, as_json: AsJson = False) -> None:
    """Put a conversation you hold back in the queue."""
    _ownership(which, "release", agent, as_json)


@conversations_app.command("assign")
def assign(
    which: Which,
    to: Annotated[str, typer.Option("--to", help="The colleague (the name on their API key).")],
    agent: Agent = None,
    as_json: AsJson = False,
) -> None:
    """Give a waiting or held conversation to a named colleague."""
    _ownership(which, "assign", agent, as_json, to=" ".join(to.split()) or None)


@conversations_app.command("take-over")
def take_over(which: Which, agent: Agent = None, as_json: AsJson = False) -> None:
    """Take a conversation from the AI (it stops answering it)."""
    _ownership(which, "take_over", agent, as_json)


@conversations_app.command("reply")
def reply(
    which: Which,
    text: Annotated[str, typer.Option("--reply", help="What the customer receives from you.")],
    agent: Agent = None,
    wait: Annotated[float, typer.Option(min=1, max=600, help="Seconds to wait for the reply to be sent.")] = 30.0,
    as_json: AsJson = False,
) -> None:
    """Reply to the customer and keep the conversation (exit 4 when the channel did not deliver it)."""
    _ownership(which, "reply", agent, as_json, wait, reply=text.strip() or None)


@conversations_app.command("hand-back")
def hand_back(
    which: Which,
    note: Annotated[str | None, typer.Option("--note", help="What you did; the AI reads it.")] = None,
    agent: Agent = None,
    as_json: AsJson = False,
) -> None:
    """Give the conversation back to the AI, with a note of what you did."""
    _ownership(which, "hand_back", agent, as_json, note=(note or "").strip() or None)


@conversations_app.command("close")
def close(which: Which, agent: Agent = None, as_json: AsJson = False) -> None:
    """Close a conversation you hold (or one waiting for a person) without another reply."""
    _ownership(which, "close", agent, as_json)


@conversations_app.command("note")
def add_note(
    which: Which,
    body: Annotated[str, typer.Option("--body", help="The note (never sent to the customer; the AI never reads it).")],
    agent: Agent = None,
) -> None:
    """Add an internal note to a conversation."""
    from crm.db import transaction
    from gateway.agents.workspace_service import add_note as store

    who = _agent_name(agent)
    text = body.strip()
    if not text or len(text) > 5000:
        from workers.cli import fail

        raise fail("a note has 1 to 5,000 characters")

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> str:
        conversation_id = await _conversation_of(sessions, which)
        async with transaction(sessions) as session:
            note = await store(
                session, author=who, api_key_id=None, conversation_id=conversation_id, body=text, via="cli"
            )
        return str(note.id)

    out.print(f"note {_run('cli', work)} added")


@conversations_app.command("notes")
def list_notes(which: Which, as_json: AsJson = False) -> None:
    """The conversation's internal notes, oldest first (hand-back notes are the ones the AI reads)."""
    from gateway.agents.workspace_service import list_notes as notes_of

    async def work(_: Settings, sessions: async_sessionmaker[AsyncSession]) -> NoteList:
        conversation_id = await _conversation_of(sessions, which)
        async with sessions() as session:
            return await notes_of(session, conversation_id=conversation_id)

    found = _run("cli", work)
    if as_json:
        for note in found.notes:
            out.print(note.model_dump_json(), soft_wrap=True)
        return
    if not found.notes:
        err.print("no notes")
        return
    for note in found.notes:
        kind = " (for the AI)" if note.kind == "hand_back" else ""
        out.print(f"{_when(note.created_at)} · {note.author}{kind}: {note.body}", soft_wrap=True)
