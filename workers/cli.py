"""`crm-fte`: the command line. One sub-command per process, plus operator tools."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from pydantic import ValidationError

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
from workers.terminal import make_console, plain

if TYPE_CHECKING:
    import uvicorn

    from workers.stack import Service

app = typer.Typer(
    rich_markup_mode=None,
    name="crm-fte",
    help="CRM Digital FTE: a 24/7 AI customer-success agent on Temporal, Kafka and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = make_console()
err_console = make_console(stderr=True)

# The long-running processes log as configured; operator commands (agents, kb, migrate, …) and
# `up` (with its app processes) print what they did and stay quiet unless -v, so their output is
# not buried under log lines. An explicit LOG_LEVEL always wins.
_SERVICE_PROCESSES = frozenset({"gateway", "worker", "bridge"})


@dataclass
class CliOptions:
    """The options given before the sub-command (`crm-fte -v --data-dir D agents list`)."""

    data_dir: Path | None = None
    verbose: bool = False


options = CliOptions()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason on stderr and return the Exit to raise."""
    err_console.print(plain(f"crm-fte: {message}", "red"))
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
    level: str = settings.log_level
    log_format: str = settings.log_format
    if process not in _SERVICE_PROCESSES:
        # Lines a person reads beside the command's own output: one human renderer, not JSON.
        log_format = "console" if log_format == "auto" else log_format
        if "log_level" not in settings.model_fields_set:
            level = "INFO" if options.verbose else "WARNING"
    elif options.verbose and "log_level" not in settings.model_fields_set:
        level = "INFO"
    configure_logging(level=level, log_format=log_format, process=process)
    # `up` hands its level to the processes it starts.
    return settings.model_copy(update={"log_level": level}) if level != settings.log_level else settings


def data_dir_option() -> Path:
    """The data directory of this invocation: --data-dir, CRM_FTE_DATA_DIR, or the per-user default."""
    from workers.stack import default_data_dir

    return options.data_dir.expanduser().resolve() if options.data_dir else default_data_dir()


def target_settings(process: str, needs: tuple[Service, ...]) -> Settings:
    """Settings pointed at the services this command needs: environment > running stack > refuse."""
    from workers.stack import StackError, resolve_target

    settings = load_settings(process)
    try:
        target = resolve_target(settings, data_dir_option(), needs)
    except StackError as exc:
        raise fail(str(exc)) from None
    if options.verbose:
        err_console.print(plain(f"crm-fte: {target.description}"))
    return target.settings


def _version(value: bool) -> None:
    if value:
        console.print(f"crm-fte {VERSION}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="CRM_FTE_DATA_DIR",
            help="The data directory of the stack to use (default: the per-user one `up` uses).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say which stack is used; show log lines.")] = False,
) -> None:
    """CRM Digital FTE command line."""
    options.data_dir = data_dir
    options.verbose = verbose


@app.command()
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the CRM, Temporal state and logs live (default: crm-fte --data-dir).", show_default=False
        ),
    ] = None,
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
    directory = data_dir.expanduser().resolve() if data_dir else data_dir_option()
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

    settings = target_settings("migrate", ("database",))
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


def _tcp_check(address: str, timeout: float = 2.0) -> str | None:
    """None when something accepts a TCP connection at host:port, else why not."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:120]


def _http_check(url: str, timeout: float = 3.0) -> str | None:
    """None when `url` answers 200, else why not."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """What runs where, and whether it is healthy (exit 1: nothing runs; exit 3: something is unhealthy)."""
    import json

    from workers.stack import StackError, find_stack, resolve_target

    settings = load_settings("status")
    directory = data_dir_option()
    lookup = find_stack(directory)
    try:
        target = resolve_target(settings, directory, ("database", "temporal", "kafka"))
    except StackError:
        raise fail(
            f"{lookup.problem}, and DATABASE_URL, TEMPORAL_ADDRESS, KAFKA_BOOTSTRAP_SERVERS are not set"
        ) from None
    resolved = target.settings
    stack = lookup.stack
    rows: list[tuple[str, str, str | None]] = []  # component, where, problem (None: healthy)
    if stack is not None:
        rows.append(("gateway", stack.gateway_url, _http_check(stack.gateway_url + "/api/v1/health")))
        for name, url in (("worker", stack.worker_health_url), ("bridge", stack.bridge_health_url)):
            if url:
                rows.append((name, url.removesuffix("/readyz"), _http_check(url)))
    database = resolved.database_dsn.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
    rows.append(("postgresql", database, _tcp_check(database)))
    rows.append(("temporal", resolved.temporal_address, _tcp_check(resolved.temporal_address)))
    if stack is not None and stack.temporal_ui_url:
        rows.append(("temporal ui", stack.temporal_ui_url, _http_check(stack.temporal_ui_url)))
    first_broker = resolved.kafka_bootstrap_servers.split(",", 1)[0].strip()
    rows.append(("kafka", resolved.kafka_bootstrap_servers, _tcp_check(first_broker)))
    healthy = all(problem is None for _, _, problem in rows)
    if as_json:
        body = {
            "data_dir": str(directory),
            "stack": {"pid": stack.pid, "started_at": stack.started_at.isoformat()} if stack else None,
            "healthy": healthy,
            "components": [
                {"name": name, "address": where, "healthy": problem is None, "problem": problem}
                for name, where, problem in rows
            ],
        }
        sys.stdout.write(json.dumps(body) + "\n")
    else:
        from rich.table import Table

        if stack is not None:
            console.print(
                plain(f"stack of {directory} (up pid {stack.pid}, since {stack.started_at:%Y-%m-%d %H:%M UTC})")
            )
        else:
            console.print(plain(f"no stack runs from {directory}; services from the environment"))
        table = Table("component", "address", "state")
        for name, where, problem in rows:
            table.add_row(name, where, plain("healthy", "green") if problem is None else plain(problem, "red"))
        console.print(table)
    if not healthy:
        raise typer.Exit(3)


@app.command("env")
def env_command() -> None:
    """Print `export` lines for the running stack: eval "$(crm-fte env)" points other tools at it."""
    import shlex

    from workers.stack import find_stack

    load_settings("env")
    lookup = find_stack(data_dir_option())
    stack = lookup.stack
    if stack is None:
        raise fail(f"{lookup.problem}: start it with `crm-fte up` (or pass --data-dir)")
    variables = {
        "CRM_FTE_DATA_DIR": stack.data_dir,
        "DATABASE_URL": stack.database_url,
        "TEMPORAL_ADDRESS": stack.temporal_address,
        "TEMPORAL_NAMESPACE": stack.temporal_namespace,
        "TEMPORAL_UI_URL": stack.temporal_ui_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(stack.kafka_enable_idempotence).lower(),
        "CRM_FTE_GATEWAY_URL": stack.gateway_url,
    }
    sys.stdout.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in variables.items() if v))


def _mount_kb() -> None:
    from workers.kb_cli import kb_app

    app.add_typer(kb_app, name="kb", help="The knowledge base: ingest the docs, search them.")


_mount_kb()


def _mount_agents() -> None:
    from workers.agents_cli import agents_app, conversations_app, escalations_app

    app.add_typer(agents_app, name="agents", help="Human agents' API keys.")
    app.add_typer(escalations_app, name="escalations", help="The escalation queue: list, resolve.")
    app.add_typer(
        conversations_app,
        name="conversations",
        help="Who answers a conversation: claim, release, assign, take-over, reply, hand-back, close; notes.",
    )


_mount_agents()


def _mount_customers() -> None:
    from workers.customers_cli import customers_app

    app.add_typer(customers_app, name="customers", help="Customer records: merge, unmerge, GDPR export and erase.")


_mount_customers()


def _mount_notify() -> None:
    from workers.notify_cli import notify_app

    app.add_typer(notify_app, name="notify", help="Team notifications: send a test to one sink.")


_mount_notify()


def _mount_report() -> None:
    from workers.report_cli import report_app

    app.add_typer(report_app, name="report", help="The daily support report: run it for any day.")


_mount_report()


@app.command("mcp")
def mcp_command(
    transport: Annotated[
        Literal["stdio", "http"],
        typer.Option("--transport", help="stdio (an assistant starts this command) or http (streamable HTTP)."),
    ] = "stdio",
    host: Annotated[str, typer.Option(help="With --transport http: a loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="With --transport http: the port.")] = 8765,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="The gateway, e.g. http://127.0.0.1:8000 (default: CRM_FTE_GATEWAY_URL, else the running stack's).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the agent API to your own assistants over MCP, as the agent whose key is in CRM_FTE_AGENT_KEY."""
    import os

    from workers.mcp_server import AgentApi, KeyProblem, agent_key_from, check_http_host, run
    from workers.stack import StackError, resolve_gateway_url

    load_settings("mcp")  # logging on stderr only: with stdio, stdout belongs to the protocol
    try:
        key = agent_key_from(os.environ)
        if transport == "http":
            check_http_host(host)
        gateway = resolve_gateway_url(data_dir_option(), explicit=api_url)
    except (KeyProblem, ValueError, StackError) as exc:
        raise fail(str(exc)) from None
    if options.verbose:
        err_console.print(plain(f"crm-fte: {gateway.description}"))
    run(api=AgentApi(gateway.url, key), transport=transport, host=host, port=port)


guardrails_app = typer.Typer(
    rich_markup_mode=None,
    help="The pre-LLM guardrails, for checking messages by hand or in bulk.",
    no_args_is_help=True,
)
app.add_typer(guardrails_app, name="guardrails")


@guardrails_app.command("check")
def guardrails_check() -> None:
    """JSON lines on stdin ({"text": ..., "channel": ...}) → one decision per line on stdout."""
    import json

    from activities.guardrails import evaluate_inbound

    # Log lines go to stderr (structlog's unconfigured default is stdout, which would break the JSON lines).
    load_settings("guardrails")

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
    from core.temporal import client_connected

    try:
        app()
    except KeyboardInterrupt:
        code: str | int | None = 130
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if client_connected():
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: str | int | None) -> NoReturn:
    """Leave without the interpreter's finalization, having done what it would have done for us.

    The Temporal client's Rust runtime keeps threads that can call into Python while the interpreter
    finalizes, and that aborts the process (temporalio/sdk-python#300: "Fatal Python error:
    PyGILState_Release", SIGABRT, exit -6) after the command already finished: a script would read a
    crash where `crm-fte customers merge` refused with its own code 3 (seen once in CI). So, once a
    connection was tried (the runtime runs from the first attempt), print what SystemExit would print,
    flush the spans, logs and output, and `os._exit` with the command's code.
    """
    import logging
    import os

    from core.observability import flush_tracing

    if isinstance(code, str):
        sys.stderr.write(f"{code}\n")
    status = code if isinstance(code, int) else 0 if code is None else 1
    flush_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    # Run the one `workers.cli` module the sub-command modules import (they read `options` from
    # it), not this `__main__` copy of it.
    from workers.cli import main as _main

    _main()
