"""The command line as a user runs it: real subprocesses, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.settings import Settings


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
