"""Local HTTP fakes for the SaaS the agent talks to (OpenAI, Twilio, Gmail, Google certs).

Each fake is a small Starlette app served by uvicorn on 127.0.0.1 (free port) in a
background thread; the official client libraries are pointed at ``fake.base_url``.
Use them as context managers (``with OpenAIFake() as fake: ...``) or through the
fixtures in ``tests.fakes.pytest_plugin``.
"""

from ._server import FakeServer, RecordedRequest, async_wait_for, wait_for
from .gmail_fake import GmailFake, GmailMessage
from .google_certs_fake import GoogleCertsFake, SigningKey, pubsub_push_envelope, pubsub_push_headers
from .openai_fake import ChatError, ChatReply, OpenAIFake, ToolCall, fake_embedding
from .twilio_fake import NO_EDGE_ENVIRONMENT, CallbackDelivery, FakeMessage, TwilioError, TwilioFake
from .webhook_sink import WebhookSink

__all__ = [
    "NO_EDGE_ENVIRONMENT",
    "CallbackDelivery",
    "ChatError",
    "ChatReply",
    "FakeMessage",
    "FakeServer",
    "GmailFake",
    "GmailMessage",
    "GoogleCertsFake",
    "OpenAIFake",
    "RecordedRequest",
    "SigningKey",
    "ToolCall",
    "TwilioError",
    "TwilioFake",
    "WebhookSink",
    "async_wait_for",
    "fake_embedding",
    "pubsub_push_envelope",
    "pubsub_push_headers",
    "wait_for",
]
