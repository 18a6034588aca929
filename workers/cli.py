"""`crm-fte`: the command line. One sub-command per process, plus operator tools."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import platformdirs
import typer
from pydantic import ValidationError
from rich.console import Console

from core.logging import configure_logging
from core.settings import (
    DEFAULT_DATABASE_PORT,
    DEFAULT_GATEWAY_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_TEMPORAL_PORT,
    DEFAULT_TEMPORAL_UI_PORT,
    Settings,
    get_settings,
)
from core.version import VERSION

if TYPE_CHECKING:
    import uvicorn

app = typer.Typer(
    name="crm-fte",
    help="CRM Digital FTE: a 24/7 AI customer-success agent on Temporal, Kafka and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason on stderr and return the Exit to raise."""
    err_console.print(f"[red]crm-fte: {message}[/red]", highlight=False)
    return typer.Exit(code)


def load_settings(process: str) -> Settings:
    """Read settings once for this process and configure logging; bad config is a one-line error."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise fail(f"invalid configuration: {problems}", 2) from None
    configure_logging(level=settings.log_level, log_format=settings.log_format, process=process)
    return settings


def _version(value: bool) -> None:
    if value:
        console.print(f"crm-fte {VERSION}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """CRM Digital FTE command line."""


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where the CRM, Temporal state and logs live.")] = None,
    port: Annotated[int, typer.Option(help="Gateway HTTP port.", min=1, max=65535)] = DEFAULT_GATEWAY_PORT,
    host: Annotated[str, typer.Option(help="Gateway bind address.")] = "127.0.0.1",
    postgres_port: Annotated[int, typer.Option(min=1, max=65535)] = DEFAULT_DATABASE_PORT,
    temporal_port: Annotated[int, typer.Option(min=1, max=65535)] = DEFAULT_TEMPORAL_PORT,
    temporal_ui_port: Annotated[int, typer.Option(min=1, max=65535)] = DEFAULT_TEMPORAL_UI_PORT,
    kafka_port: Annotated[int, typer.Option(min=1, max=65535)] = DEFAULT_KAFKA_PORT,
) -> None:
    """Start the whole stack on this machine (embedded PostgreSQL, Temporal, Kafka) and supervise it."""
    from workers.up import UpOptions, run_up

    settings = load_settings("up")
    directory = (data_dir or Path(platformdirs.user_data_dir("crm-fte"))).expanduser().resolve()
    options = UpOptions(
        data_dir=directory,
        host=host,
        port=port,
        postgres_port=postgres_port,
        temporal_port=temporal_port,
        temporal_ui_port=temporal_ui_port,
        kafka_port=kafka_port,
    )
    code = run_up(options, settings, console, err_console)
    raise typer.Exit(code)


@app.command()
def gateway(
    port: Annotated[int | None, typer.Option(help="Overrides GATEWAY_PORT.", min=1, max=65535)] = None,
    host: Annotated[str | None, typer.Option(help="Overrides GATEWAY_HOST.")] = None,
) -> None:
    """Run the HTTP gateway (webhooks, web form, API) against the configured services."""
    import uvicorn

    from gateway.app import create_app

    settings = load_settings("gateway")
    server = uvicorn.Server(gateway_server_config(create_app(settings), settings, host=host, port=port))
    server.run()
    if not server.started:  # as uvicorn.run: the port was taken, the app failed to start, ...
        raise typer.Exit(3)


def gateway_server_config(
    app: Any, settings: Settings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    """The uvicorn options of `crm-fte gateway` (tests serve other apps with exactly these)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_config=None,
        access_log=False,
        # X-Forwarded-For/-Proto are believed only from FORWARDED_ALLOW_IPS (loopback by default):
        # from anyone else they would let a client pick the address and scheme the app sees.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=20,
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (conversation workflows and activities)."""
    from workers.worker import run_worker

    asyncio.run(run_worker(load_settings("worker")))


@app.command()
def bridge() -> None:
    """Run the Kafka → Temporal bridge (signal-with-start per inbound message)."""
    from workers.bridge import run_bridge

    asyncio.run(run_bridge(load_settings("bridge")))


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option("--downgrade", help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Apply (or roll back) the CRM database migrations, then exit."""
    from crm import db

    settings = load_settings("migrate")
    try:
        if downgrade:
            db.downgrade(settings.database_dsn, revision)
        else:
            db.upgrade(settings.database_dsn, revision)
    except Exception as exc:
        raise fail(
            f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        ) from None
    console.print(f"database at revision {revision}" if not downgrade else f"database downgraded to {revision}")


def _mount_kb() -> None:
    from workers.kb_cli import kb_app

    app.add_typer(kb_app, name="kb", help="The knowledge base: ingest the docs, search them.")


_mount_kb()


def _mount_agents() -> None:
    from workers.agents_cli import agents_app, escalations_app

    app.add_typer(agents_app, name="agents", help="Human agents' API keys.")
    app.add_typer(escalations_app, name="escalations", help="The escalation queue: list, resolve.")


_mount_agents()

guardrails_app = typer.Typer(
    help="The pre-LLM guardrails, for checking messages by hand or in bulk.", no_args_is_help=True
)
app.add_typer(guardrails_app, name="guardrails")


@guardrails_app.command("check")
def guardrails_check() -> None:
    """JSON lines on stdin ({"text": ..., "channel": ...}) → one decision per line on stdout."""
    import json

    from activities.guardrails import evaluate_inbound

    channels = {"email", "whatsapp", "web_form", None}
    errors = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError('each line must be a JSON object with a string "text"')
            if item.get("channel") not in channels:
                raise ValueError("channel must be one of email, whatsapp, web_form")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            errors += 1
            sys.stdout.write(json.dumps({"line": number, "error": str(exc).splitlines()[0]}) + "\n")
            continue
        decision = evaluate_inbound(item["text"], item.get("channel"))
        out = {
            "action": decision.action,
            "reason": decision.reason,
            "sentiment": round(decision.sentiment, 4),
            "matched": decision.matched,
        }
        sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    if errors:
        raise fail(f"{errors} input line(s) were not valid (see the error lines on stdout)")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
