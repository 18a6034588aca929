"""`crm-fte notify test --sink …` as an operator runs it: a real subprocess, the Slack fake."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import Settings
from tests.fakes.slack_fake import SlackFake


def _notify(sink: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "notify", "test", "--sink", sink],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
    )


def test_notify_test_sends_one_notification_and_reports_a_refusal(settings: Settings) -> None:
    with SlackFake() as slack:
        env = {"DATABASE_URL": settings.database_dsn, "NOTIFY_SLACK_WEBHOOK_URL": slack.webhook_url}
        sent = _notify("slack", env)
        assert sent.returncode == 0, sent.stderr
        assert "slack: delivered" in sent.stdout and len(slack.posts) == 1
        assert "TKT-TEST" in slack.posts[0]["text"]

        slack.revoke()
        refused = _notify("slack", env)
        assert refused.returncode == 1
        assert "slack refused: Slack answered HTTP 404: no_service" in refused.stderr
        assert slack.path not in refused.stderr + refused.stdout and "Traceback" not in refused.stderr

        missing = _notify("webhook", env)
        assert missing.returncode == 1 and "the webhook sink is not configured" in missing.stderr
        assert _notify("pager", env).returncode == 2
