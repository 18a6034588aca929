"""`crm-fte up`: the embedded single-machine stack, started in order and supervised.

Order: PostgreSQL (+migrations) → Temporal dev server (+search attributes) → Kafka broker
(+topics) → worker, bridge, gateway. Anything configured externally (DATABASE_URL,
TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE, KAFKA_BOOTSTRAP_SERVERS) is used instead of the embedded
service. Ctrl-C / SIGTERM stops everything in reverse order; no child outlives the supervisor.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.status import Status
from rich.text import Text

from core.kafka import ensure_topics
from core.settings import DEFAULT_GATEWAY_PORT, Settings
from core.temporal import connect_temporal
from crm import db
from workers.embedded import (
    EmbeddedError,
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedTemporal,
    ManagedProcess,
    free_port,
    port_is_free,
)
from workers.stack import StackInfo, remove_stack, write_stack
from workers.temporal_setup import ensure_search_attributes
from workers.terminal import plain

APP_PROCESSES = ("worker", "bridge", "gateway")
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class UpError(RuntimeError):
    """A one-line reason `up` could not start or keep running."""


@dataclass
class UpOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_GATEWAY_PORT
    postgres_port: int = 5433
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    kafka_port: int = 9092
    ready_timeout: float = 120.0


@dataclass
class _AppProcess:
    process: ManagedProcess
    health_url: str
    restarts: list[float] = field(default_factory=list)


class Stack:
    """Starts, supervises and stops the stack; every started child is tracked for shutdown."""

    def __init__(self, options: UpOptions, settings: Settings, console: Console) -> None:
        self.options = options
        self.settings = settings
        self.console = console
        self.logs = options.data_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: EmbeddedTemporal | None = None
        self.kafka: EmbeddedKafka | None = None
        self.apps: dict[str, _AppProcess] = {}
        self.child_env: dict[str, str] = {}
        self.stopping = False
        self._lock_file: IO[str] | None = None
        self._health_ports: dict[str, int] = {}

    # ------------------------------------------------------------------ what is embedded
    def _external(self, *fields: str) -> bool:
        return any(name in self.settings.model_fields_set for name in fields)

    @property
    def embedded_database(self) -> bool:
        return not self._external("database_url")

    @property
    def embedded_temporal(self) -> bool:
        return not self._external("temporal_address")

    @property
    def embedded_kafka(self) -> bool:
        return not self._external("kafka_bootstrap_servers")

    # ------------------------------------------------------------------ start
    def _lock_data_dir(self) -> None:
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.options.data_dir / "crm-fte.lock"
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UpError(f"data directory {self.options.data_dir} is in use by crm-fte up (pid {owner})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _check_ports(self) -> None:
        wanted: list[tuple[str, int, str]] = [("gateway", self.options.port, "--port")]
        if self.embedded_database:
            wanted.append(("postgres", self.options.postgres_port, "--postgres-port"))
        if self.embedded_temporal:
            wanted.append(("temporal", self.options.temporal_port, "--temporal-port"))
            wanted.append(("temporal ui", self.options.temporal_ui_port, "--temporal-ui-port"))
        if self.embedded_kafka:
            wanted.append(("kafka", self.options.kafka_port, "--kafka-port"))
        for name, port, flag in wanted:
            host = self.options.host if name == "gateway" else "127.0.0.1"
            if not port_is_free(port, host):
                raise UpError(f"port {port} ({name}) is already in use; choose another with {flag}")

    def _step(self, label: str) -> Status:
        return self.console.status(f"[bold]starting {label}…", spinner="dots")

    def _ok(self, text: str) -> None:
        self.console.print(Text.assemble(("✓", "green"), " ", text))

    def start(self) -> None:
        self._lock_data_dir()
        self._check_ports()
        env: dict[str, str] = {
            "LOG_LEVEL": self.settings.log_level,
            "LOG_FORMAT": "console" if self.settings.log_format == "auto" else self.settings.log_format,
        }
        started = time.monotonic()

        # PostgreSQL
        if self.embedded_database:
            with self._step("PostgreSQL + pgvector"):
                self.postgres = EmbeddedPostgres(self.options.data_dir, self.options.postgres_port, self.logs)
                self.postgres.start()
                database_url = self.postgres.url()
            self._ok(
                f"PostgreSQL 18 + pgvector on 127.0.0.1:{self.options.postgres_port} (data: {self.postgres.pgdata})"
            )
        else:
            database_url = self.settings.database_dsn
            self._ok("PostgreSQL: using DATABASE_URL (external)")
        env["DATABASE_URL"] = database_url
        with self._step("migrations"):
            try:
                db.upgrade(database_url)
            except Exception as exc:
                raise UpError(f"migrations failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
        self._ok("CRM schema migrated to head")
        with self._step("knowledge base (bundled TechCorp docs)"):
            try:
                summary = asyncio.run(self._ingest_knowledge_base(database_url))
            except Exception as exc:
                raise UpError(f"knowledge-base ingest failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        self._ok(f"knowledge base: {summary}")

        # Temporal
        if self.embedded_temporal:
            with self._step("Temporal dev server"):
                self.temporal = EmbeddedTemporal(
                    self.options.data_dir,
                    self.options.temporal_port,
                    self.options.temporal_ui_port,
                    self.logs,
                    namespace=self.settings.temporal_namespace,
                )
                self.temporal.start()
            env["TEMPORAL_ADDRESS"] = self.temporal.address
            env["TEMPORAL_UI_URL"] = self.temporal.ui_url
            self._ok(
                f"Temporal on {self.temporal.address}, namespace {self.settings.temporal_namespace} "
                f"(data: {self.options.data_dir / 'temporal' / 'temporal.db'})"
            )
        else:
            self._ok(f"Temporal: using {self.settings.temporal_address} (external)")
        with self._step("Temporal search attributes"):
            added = asyncio.run(self._register_search_attributes(env.get("TEMPORAL_ADDRESS")))
        self._ok("search attributes registered" + (f": {', '.join(added)}" if added else " (already present)"))

        # Kafka
        if self.embedded_kafka:
            with self._step("Kafka-compatible broker (tansu)"):
                self.kafka = EmbeddedKafka(self.options.kafka_port, self.logs)
                self.kafka.start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap_servers
            # tansu has no idempotent producer (InitProducerId); dedupe downstream covers it.
            env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
            self._ok(f"Kafka broker (tansu, in-memory) on {self.kafka.bootstrap_servers}")
        else:
            self._ok(f"Kafka: using {self.settings.kafka_bootstrap_servers} (external)")
        with self._step("Kafka topics"):
            created = asyncio.run(self._create_topics(env.get("KAFKA_BOOTSTRAP_SERVERS")))
        self._ok(
            "topics ready: "
            + ", ".join([self.settings.kafka_topic_inbound, self.settings.kafka_topic_dead_letter])
            + (f" (created {', '.join(created)})" if created else "")
        )

        if self.settings.ticket_link_secret is None:
            # The ticket page's links (reply box, rating) need a signing key: one per data directory,
            # kept across restarts so links already emailed keep working.
            env["TICKET_LINK_SECRET"] = self._ticket_link_secret()

        # Application processes
        self.child_env = {
            **os.environ,
            **env,
            "GATEWAY_HOST": self.options.host,
            "GATEWAY_PORT": str(self.options.port),
            "PYTHONUNBUFFERED": "1",
        }
        for name in APP_PROCESSES:
            with self._step(name):
                self._spawn(name)
                self._wait_ready(name)
            self._ok(
                f"{name} ready" + (f" on http://{self.options.host}:{self.options.port}" if name == "gateway" else "")
            )
        ui = env.get("TEMPORAL_UI_URL") or self.settings.temporal_ui_url
        base = f"http://{self._client_host()}:{self.options.port}"
        stack_file = self._record_stack(env, base, ui)
        self.console.print()
        self.console.print(
            Text.assemble(("CRM Digital FTE is up", "bold green"), f" in {time.monotonic() - started:.1f}s")
        )
        for line in (
            f"  gateway        {base}  (health: /api/v1/health, API docs: /docs)",
            f"  support form   {base}/support",
            f"  ticket status  {base}/support/status",
            f"  agent console  {base}/agent  (API key: crm-fte agents create NAME)",
            *([f"  Temporal UI    {ui}"] if ui else []),
            f"  data           {self.options.data_dir}  (service logs in {self.logs})",
            f"  endpoints      {stack_file}  (crm-fte status, crm-fte env)",
            "  Ctrl-C stops everything.",
        ):
            self.console.print(plain(line))

    def _ticket_link_secret(self) -> str:
        """DATA/ticket-link.secret (owner-only), created on the first `up`."""
        path = self.options.data_dir / "ticket-link.secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def _record_stack(self, env: dict[str, str], gateway_url: str, ui: str | None) -> Path:
        """Write DATA_DIR/stack.json, so sub-commands talk to this stack and no other."""
        worker, bridge = self.apps.get("worker"), self.apps.get("bridge")
        info = StackInfo(
            pid=os.getpid(),
            data_dir=str(self.options.data_dir),
            started_at=datetime.now(UTC),
            gateway_url=gateway_url,
            database_url=env["DATABASE_URL"],
            temporal_address=env.get("TEMPORAL_ADDRESS") or self.settings.temporal_address,
            temporal_namespace=self.settings.temporal_namespace,
            temporal_ui_url=ui,
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or self.settings.kafka_bootstrap_servers,
            kafka_enable_idempotence=env.get("KAFKA_ENABLE_IDEMPOTENCE", "").lower() != "false"
            and self.settings.kafka_enable_idempotence,
            worker_health_url=worker.health_url if worker else None,
            bridge_health_url=bridge.health_url if bridge else None,
        )
        return write_stack(self.options.data_dir, info)

    async def _ingest_knowledge_base(self, database_url: str) -> str:
        """Idempotent: unchanged chunks are neither re-embedded nor rewritten on a restart."""
        from kb.embeddings import create_embedder
        from kb.ingest import default_docs_path, ingest_path

        engine = db.create_engine(self.settings, url=database_url)
        try:
            report = await ingest_path(
                default_docs_path(), sessions=db.create_sessionmaker(engine), embedder=create_embedder(self.settings)
            )
        finally:
            await engine.dispose()
        return report.summary()

    async def _register_search_attributes(self, address: str | None) -> list[str]:
        settings = self.settings.model_copy(update={"temporal_address": address} if address else {})
        client = await connect_temporal(settings)
        return await ensure_search_attributes(client)

    async def _create_topics(self, bootstrap: str | None) -> list[str]:
        update: dict[str, object] = {}
        if bootstrap:
            update = {"kafka_bootstrap_servers": bootstrap, "kafka_enable_idempotence": False}
        return await ensure_topics(self.settings.model_copy(update=update))

    def _spawn(self, name: str) -> None:
        env = dict(self.child_env)
        if name == "gateway":
            health_url = f"http://{self._client_host()}:{self.options.port}/api/v1/health"
        else:
            # A restarted process keeps its port: stack.json and `crm-fte status` point at it.
            port = self._health_ports.setdefault(name, free_port())
            env[f"{name.upper()}_HEALTH_PORT"] = str(port)
            health_url = f"http://127.0.0.1:{port}/readyz"
        process = ManagedProcess(
            name=name, argv=[sys.executable, "-m", "workers.cli", name], env=env, stop_timeout=45.0
        )
        process.start()
        previous = self.apps.get(name)
        self.apps[name] = _AppProcess(process, health_url, previous.restarts if previous else [])

    def _client_host(self) -> str:
        return "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host

    def _wait_ready(self, name: str) -> None:
        app = self.apps[name]
        deadline = time.monotonic() + self.options.ready_timeout
        last = "no answer"
        with httpx.Client(timeout=3.0) as http:
            while time.monotonic() < deadline:
                if not app.process.alive():
                    raise UpError(f"{name} exited with code {app.process.returncode()} while starting")
                try:
                    response = http.get(app.health_url)
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.2)
        raise UpError(f"{name} did not become ready within {self.options.ready_timeout:.0f}s ({last})")

    # ------------------------------------------------------------------ supervise
    def supervise(self) -> None:
        """Restart an app process that dies (bounded); stop everything if a service dies."""
        while not self.stopping:
            time.sleep(0.5)
            for service in (self.postgres, self.temporal, self.kafka):
                if service is not None and service.process is not None and not service.process.alive():
                    if self.stopping:
                        return
                    proc = service.process
                    raise UpError(
                        f"{proc.name} exited unexpectedly (code {proc.returncode()}): "
                        f"{proc.log_tail(1) or 'see ' + str(proc.log_path)}"
                    )
            for name, app in list(self.apps.items()):
                if self.stopping or app.process.alive():
                    continue
                now = time.monotonic()
                app.restarts = [t for t in app.restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(app.restarts) > MAX_RESTARTS:
                    raise UpError(f"{name} keeps exiting (code {app.process.returncode()}); giving up")
                self.console.print(f"[yellow]![/yellow] {name} exited with code {app.process.returncode()}; restarting")
                self._spawn(name)

    def stop(self) -> None:
        """Stop in reverse order: gateway and bridge first (drain), then the worker, then services."""
        self.stopping = True
        if self._lock_file is not None:  # only the owner of the data directory forgets its stack
            remove_stack(self.options.data_dir)
        for name in ("gateway", "bridge", "worker"):
            app = self.apps.get(name)
            if app is not None:
                app.process.stop()
        for service in (self.kafka, self.temporal, self.postgres):
            if service is not None:
                service.stop()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def run_up(options: UpOptions, settings: Settings, console: Console, err_console: Console) -> int:
    """Start, supervise until a signal, stop; returns the process exit code."""
    stack = Stack(options, settings, console)

    def on_signal(signum: int, _frame: object) -> None:
        if not stack.stopping:
            stack.stopping = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        stack.start()
        stack.supervise()
    except KeyboardInterrupt:
        console.print("\nstopping…")
    except (UpError, EmbeddedError) as exc:
        err_console.print(plain(f"crm-fte up: {exc}", "red"))
        code = 1
    finally:
        # A second signal during shutdown must not abort the shutdown itself.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        console.print("stopped.")
    return code
