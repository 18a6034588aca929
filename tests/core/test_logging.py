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
