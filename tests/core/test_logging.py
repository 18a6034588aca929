"""No secret reaches the logs: secret-named fields, credentials in URLs and bearer tokens are masked."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from core.logging import configure_logging, get_logger


def test_secrets_are_masked_in_structlog_and_stdlib_records(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()  # other tests configured it already; start from scratch
    configure_logging(level="INFO", log_format="json", process="test")
    get_logger("t").info(
        "connecting to postgresql://crm:hunter2@db:5432/crm",
        database_url="postgresql://crm:hunter2@db:5432/crm",
        twilio_auth_token="abcdef0123456789",
        headers={"Authorization": "Bearer sk-live-123"},
        note="used Bearer eyJhbGciOi.secret.sig to call",
    )
    logging.getLogger("uvicorn.error").warning("upstream https://user:topsecret@example.com failed")
    out = capsys.readouterr().err
    for secret in ("hunter2", "abcdef0123456789", "sk-live-123", "eyJhbGciOi.secret.sig", "topsecret"):
        assert secret not in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert records[0]["database_url"] == "***" and records[0]["process"] == "test"
    assert "postgresql://crm:***@db:5432/crm" in records[0]["event"]
    assert records[1]["logger"] == "uvicorn.error"  # third-party logs share the same JSON renderer


def test_a_call_below_the_level_returns_before_any_processor_and_per_logger_levels_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    structlog.reset_defaults()
    configure_logging(level="WARNING", log_format="json", process="test")
    seen: list[str] = []

    def spy(_: object, __: str, event_dict: dict[str, object]) -> dict[str, object]:
        seen.append(str(event_dict.get("event")))
        return event_dict

    structlog.get_config()["processors"].insert(0, spy)  # the list the loggers use
    try:
        quiet = get_logger("quiet.module")
        quiet.info("filtered.out", value=1)
        quiet.debug("filtered.out", value=2)
        quiet.log(logging.INFO, "filtered.out")
        assert seen == [] and capsys.readouterr().err == ""  # dropped before the processor chain
        quiet.warning("kept", token="s3cr3t-value")
        logging.getLogger("chatty.module").setLevel(logging.DEBUG)  # a per-logger level still wins
        get_logger("chatty.module").info("kept.too")
        logging.getLogger("chatty.module").setLevel(logging.NOTSET)
        records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        assert [r["event"] for r in records] == ["kept", "kept.too"]
        assert records[0]["token"] == "***" and records[0]["level"] == "warning"
        assert seen == ["kept", "kept.too"]
    finally:
        structlog.get_config()["processors"].remove(spy)
