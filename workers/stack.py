"""Which running stack a sub-command talks to.

`crm-fte up` records the endpoints it started in DATA_DIR/stack.json (written atomically, removed
on a clean stop) while it holds DATA_DIR/crm-fte.lock. A sub-command resolves each service it needs
in this order: the environment (DATABASE_URL, TEMPORAL_ADDRESS, KAFKA_BOOTSTRAP_SERVERS, or .env),
then the running stack of its data directory, and otherwise refuses: a CLI that quietly used the
default ports could write into some other system listening there.

A stack file whose `up` is gone (killed, machine rebooted) is not trusted: the lock is the proof of
life, since the kernel releases it when its holder dies, whatever the file says.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, SecretStr, ValidationError

from core.settings import Settings

STACK_FILE = "stack.json"
LOCK_FILE = "crm-fte.lock"

Service = Literal["database", "temporal", "kafka"]
# The setting that configures each service explicitly, and its variable's name.
_SERVICE_SETTING: dict[Service, tuple[str, str]] = {
    "database": ("database_url", "DATABASE_URL"),
    "temporal": ("temporal_address", "TEMPORAL_ADDRESS"),
    "kafka": ("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
}


class StackError(RuntimeError):
    """A one-line reason no target could be chosen."""


class StackInfo(BaseModel):
    """What `crm-fte up` started and where (DATA_DIR/stack.json)."""

    pid: int
    data_dir: str
    started_at: datetime
    gateway_url: str
    database_url: str
    temporal_address: str
    temporal_namespace: str
    temporal_ui_url: str | None = None
    kafka_bootstrap_servers: str
    kafka_enable_idempotence: bool = False
    worker_health_url: str | None = None
    bridge_health_url: str | None = None


def default_data_dir() -> Path:
    """The per-user data directory `up` and every sub-command use when none is given."""
    return Path(platformdirs.user_data_dir("crm-fte")).expanduser().resolve()


def write_stack(data_dir: Path, info: StackInfo) -> Path:
    """Write DATA_DIR/stack.json atomically (readers never see half a file), readable by the owner only."""
    target = data_dir / STACK_FILE
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".stack-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(info.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def remove_stack(data_dir: Path) -> None:
    """Forget the stack (on a clean stop)."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STACK_FILE).unlink()


def _lock_is_held(data_dir: Path) -> bool:
    lock_path = data_dir / LOCK_FILE
    try:
        handle = open(lock_path)  # closed in the finally below
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        handle.close()


@dataclass(frozen=True)
class StackLookup:
    """The running stack of a data directory, or why there is none."""

    data_dir: Path
    stack: StackInfo | None
    problem: str | None


def find_stack(data_dir: Path) -> StackLookup:
    """The stack `up` runs from `data_dir`, if its `up` is alive; a stale or unreadable file is ignored."""
    path = data_dir / STACK_FILE
    if not path.exists():
        return StackLookup(data_dir, None, f"no stack is running from {data_dir}")
    try:
        info = StackInfo.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return StackLookup(data_dir, None, f"{path} is unreadable; restart `crm-fte up`")
    if not _lock_is_held(data_dir):
        return StackLookup(
            data_dir, None, f"the stack recorded in {path} is not running (its up, pid {info.pid}, is gone)"
        )
    return StackLookup(data_dir, info, None)


@dataclass(frozen=True)
class Target:
    """The settings a sub-command uses, and a one-line account of where they point."""

    settings: Settings
    description: str
    stack: StackInfo | None


def _where(url: str) -> str:
    """host:port of a DSN or address, without user or password."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0]


def resolve_target(settings: Settings, data_dir: Path, needs: tuple[Service, ...]) -> Target:
    """Explicit environment > the running stack of `data_dir` > refuse (StackError)."""
    explicit = {service for service, (field, _) in _SERVICE_SETTING.items() if field in settings.model_fields_set}
    lookup = find_stack(data_dir) if set(needs) - explicit else StackLookup(data_dir, None, None)
    missing = [s for s in needs if s not in explicit and lookup.stack is None]
    if missing:
        variables = ", ".join(_SERVICE_SETTING[s][1] for s in missing)
        raise StackError(f"{lookup.problem}: start it with `crm-fte up` (or pass --data-dir), or set {variables}")
    update: dict[str, object] = {}
    parts: list[str] = []
    stack = lookup.stack
    for service in needs:
        field, variable = _SERVICE_SETTING[service]
        if service in explicit:
            value = settings.database_dsn if service == "database" else str(getattr(settings, field))
            parts.append(f"{service} {_where(value)} ({variable})")
            continue
        if stack is None:  # unreachable: `missing` refused above
            raise StackError(f"no stack for {service}")
        if service == "database":
            update["database_url"] = SecretStr(stack.database_url)
            parts.append(f"database {_where(stack.database_url)}")
        elif service == "temporal":
            update["temporal_address"] = stack.temporal_address
            if "temporal_namespace" not in settings.model_fields_set:
                update["temporal_namespace"] = stack.temporal_namespace
            parts.append(f"temporal {stack.temporal_address}")
        else:
            update["kafka_bootstrap_servers"] = stack.kafka_bootstrap_servers
            update["kafka_enable_idempotence"] = stack.kafka_enable_idempotence
            parts.append(f"kafka {stack.kafka_bootstrap_servers}")
    source = f"the stack of {data_dir} (up pid {stack.pid})" if stack and update else "the environment"
    return Target(settings.model_copy(update=update), f"using {source}: {', '.join(parts)}", stack)


# What `crm-fte env` exports for the running stack's gateway; clients of the HTTP API read it.
GATEWAY_URL_VARIABLE = "CRM_FTE_GATEWAY_URL"


@dataclass(frozen=True)
class GatewayTarget:
    """The gateway an HTTP client of it talks to, and a one-line account of why that one."""

    url: str
    description: str


def resolve_gateway_url(
    data_dir: Path, *, explicit: str | None = None, environ: Mapping[str, str] = os.environ
) -> GatewayTarget:
    """The gateway's base URL for an HTTP client of it: `explicit` (--api-url) > CRM_FTE_GATEWAY_URL >
    the running stack of `data_dir` > refuse (StackError), as `resolve_target` does for the services."""
    if explicit:
        return GatewayTarget(_checked_url(explicit, "--api-url"), f"gateway {explicit} (--api-url)")
    if environ.get(GATEWAY_URL_VARIABLE):
        url = environ[GATEWAY_URL_VARIABLE]
        return GatewayTarget(_checked_url(url, GATEWAY_URL_VARIABLE), f"gateway {url} ({GATEWAY_URL_VARIABLE})")
    lookup = find_stack(data_dir)
    if lookup.stack is None:
        raise StackError(
            f"{lookup.problem}: start it with `crm-fte up` (or pass --data-dir), "
            f"or give the gateway with --api-url or {GATEWAY_URL_VARIABLE}"
        )
    url = lookup.stack.gateway_url
    return GatewayTarget(url, f"gateway {url} of the stack of {data_dir} (up pid {lookup.stack.pid})")


def _checked_url(url: str, source: str) -> str:
    """`url` without a trailing slash; StackError unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StackError(f"{source} must be an http:// or https:// URL such as http://127.0.0.1:8000, not {url!r}")
    return url.rstrip("/")
