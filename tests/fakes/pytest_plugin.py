"""Pytest fixtures for the fakes.  Enable with ``pytest_plugins = ["tests.fakes.pytest_plugin"]``
in the root ``conftest.py``.

Function-scoped fixtures start a fresh fake per test (each starts in milliseconds);
the ``*_session`` variants share one fake per session - call ``.reset()`` between uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .gmail_fake import GmailFake
from .google_certs_fake import GoogleCertsFake
from .openai_fake import OpenAIFake
from .twilio_fake import TwilioFake
from .webhook_sink import WebhookSink


@pytest.fixture
def openai_fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def twilio_fake() -> Iterator[TwilioFake]:
    with TwilioFake() as fake:
        yield fake


@pytest.fixture
def gmail_fake() -> Iterator[GmailFake]:
    with GmailFake() as fake:
        yield fake


@pytest.fixture
def google_certs_fake() -> Iterator[GoogleCertsFake]:
    with GoogleCertsFake() as fake:
        yield fake


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def openai_fake_session() -> Iterator[OpenAIFake]:
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture(scope="session")
def google_certs_fake_session() -> Iterator[GoogleCertsFake]:
    with GoogleCertsFake() as fake:
        yield fake
