"""The SaaS fakes, exercised through the official client libraries they stand in for."""

from __future__ import annotations

import base64
import email.policy
import io
import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser

import google.auth.exceptions
import google.auth.transport.requests
import httplib2
import jwt
import openai
import pytest
import requests
from google.oauth2 import id_token
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient

try:  # repo root on sys.path (root conftest / python -m pytest)
    from tests.fakes import (
        NO_EDGE_ENVIRONMENT,
        ChatError,
        ChatReply,
        GmailFake,
        GoogleCertsFake,
        OpenAIFake,
        SigningKey,
        ToolCall,
        TwilioFake,
        WebhookSink,
        async_wait_for,
        fake_embedding,
        pubsub_push_envelope,
        pubsub_push_headers,
    )
except ModuleNotFoundError:  # only tests/ on sys.path (rootdir-relative import of this module)
    from fakes import (  # type: ignore[no-redef]
        NO_EDGE_ENVIRONMENT,
        ChatError,
        ChatReply,
        GmailFake,
        GoogleCertsFake,
        OpenAIFake,
        SigningKey,
        ToolCall,
        TwilioFake,
        WebhookSink,
        async_wait_for,
        fake_embedding,
        pubsub_push_envelope,
        pubsub_push_headers,
    )

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by id",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "parameters": {"type": "object", "properties": {"priority": {"type": "string"}}},
        },
    },
]
SID_RE = re.compile(r"^SM[0-9a-f]{32}$")
PARSER = BytesParser(policy=email.policy.default)


# ---------------------------------------------------------------------------- fixtures
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


@pytest.fixture(scope="module")
def certs_fake() -> Iterator[GoogleCertsFake]:
    with GoogleCertsFake() as fake:
        yield fake


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as receiver:
        yield receiver


def _port_closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("factory", [OpenAIFake, TwilioFake, GmailFake, GoogleCertsFake, WebhookSink])
def test_fake_starts_fast_and_stops_cleanly(factory: type) -> None:
    before = set(threading.enumerate())
    started = time.perf_counter()
    fake = factory().start()
    startup = time.perf_counter() - started
    try:
        assert startup < 0.5, f"{factory.__name__} took {startup:.3f}s to start"
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert not _port_closed(fake.port)
        thread = fake.server_thread
        assert thread is not None and thread.is_alive()
    finally:
        fake.stop()
    assert not thread.is_alive()
    assert _port_closed(fake.port)
    assert set(threading.enumerate()) - before == set()


async def test_fake_is_an_async_context_manager() -> None:
    async with OpenAIFake() as fake:
        port = fake.port
        async with openai.AsyncOpenAI(api_key="k", base_url=fake.api_base, max_retries=0) as client:
            models = await client.models.list()
        assert "gpt-4o-mini" in [m.id for m in models.data]
    assert _port_closed(port)
    assert not fake.running


# ---------------------------------------------------------------------------- OpenAI
def _client(fake: OpenAIFake, **kwargs: object) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(api_key="test", base_url=fake.base_url + "/v1", **kwargs)  # type: ignore[arg-type]


async def test_openai_tool_calls_are_parsed_by_the_official_client(openai_fake: OpenAIFake) -> None:
    openai_fake.push_tool_calls(
        [ToolCall("lookup_order", {"order_id": "A-17"}, id="call_a"), ("create_ticket", {"priority": "high"})],
        prompt_tokens=321,
        completion_tokens=45,
    )
    async with _client(openai_fake) as client:
        response = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "where is A-17?"}],
            tools=TOOLS,
            tool_choice="auto",
        )

    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["lookup_order", "create_ticket"]
    assert calls[0].id == "call_a" and calls[1].id.startswith("call_")
    assert calls[0].type == "function"
    assert json.loads(calls[0].function.arguments) == {"order_id": "A-17"}
    assert json.loads(calls[1].function.arguments) == {"priority": "high"}
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        321,
        45,
        366,
    )
    assert response.model == "gpt-4o-mini"
    sent = openai_fake.last_chat_request
    assert sent["messages"][1] == {"role": "user", "content": "where is A-17?"}
    assert [t["function"]["name"] for t in sent["tools"]] == ["lookup_order", "create_ticket"]
    assert sent["tool_choice"] == "auto"
    assert openai_fake.requests[-1].header("authorization") == "Bearer test"


async def test_openai_tool_loop_round_trip(openai_fake: OpenAIFake) -> None:
    openai_fake.push_tool_call("lookup_order", {"order_id": "B-2"})
    openai_fake.push_reply("Your order B-2 ships tomorrow.")
    messages: list[dict] = [{"role": "user", "content": "status of B-2?"}]
    async with _client(openai_fake) as client:
        first = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"eta": "tomorrow"})})
        second = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)

    assert second.choices[0].message.content == "Your order B-2 ships tomorrow."
    assert second.choices[0].finish_reason == "stop"
    assert second.usage is not None and second.usage.prompt_tokens > 0
    replayed = openai_fake.chat_requests[1]["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "tool"]
    assert replayed[1]["tool_calls"][0]["id"] == call.id == replayed[2]["tool_call_id"]
    assert openai_fake.pending == 0


async def test_openai_rejects_unanswered_tool_calls_like_the_real_api(openai_fake: OpenAIFake) -> None:
    bad = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "lookup_order", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "hello?"},
    ]
    async with _client(openai_fake) as client:
        with pytest.raises(openai.BadRequestError) as excinfo:
            await client.chat.completions.create(model="gpt-4o", messages=bad)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as orphan:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}],
            )
    assert "call_x" in excinfo.value.message
    assert excinfo.value.body["param"] == "messages.[1].role"  # type: ignore[index]
    assert orphan.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_openai_rate_limit_raises_rate_limit_error(openai_fake: OpenAIFake) -> None:
    openai_fake.push_rate_limit(retry_after=7)
    async with _client(openai_fake) as client:
        with pytest.raises(openai.RateLimitError) as excinfo:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    error = excinfo.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "7"
    assert set(error.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


async def test_openai_client_retries_after_429_and_500(openai_fake: OpenAIFake) -> None:
    unavailable = ChatError.server_error(503)
    unavailable.headers["retry-after-ms"] = "10"
    openai_fake.push(ChatError.rate_limit(retry_after=0.01), unavailable, ChatReply("finally"))
    async with _client(openai_fake, max_retries=3) as client:
        response = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert response.choices[0].message.content == "finally"
    attempts = openai_fake.requests_to("/v1/chat/completions")
    assert [r.status for r in attempts] == [429, 503, 200]
    assert [r.header("x-stainless-retry-count") for r in attempts] == ["0", "1", "2"]


async def test_openai_error_shapes_map_to_client_exceptions(openai_fake: OpenAIFake) -> None:
    openai_fake.push(ChatError.context_length_exceeded(), ChatError.server_error(), ChatError.insufficient_quota())
    async with _client(openai_fake) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.InternalServerError) as server:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as quota:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert bad.value.code == "context_length_exceeded" and bad.value.param == "messages"
    assert server.value.status_code == 500 and server.value.type == "server_error"
    assert quota.value.code == "insufficient_quota"


async def test_openai_responder_hook_and_default_echo(openai_fake: OpenAIFake) -> None:
    async with _client(openai_fake) as client:
        echoed = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "ping"}])
        openai_fake.responder = lambda body: ChatReply(f"{len(body['messages'])} messages, model {body['model']}")
        answered = await client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        )
    assert echoed.choices[0].message.content == "(fake) ping"
    assert answered.choices[0].message.content == "2 messages, model gpt-4.1"


async def test_openai_streaming_reassembles_tool_calls_and_usage(openai_fake: OpenAIFake) -> None:
    openai_fake.push_tool_call("lookup_order", {"order_id": "C-9", "note": "streamed arguments"})
    openai_fake.push_reply("Streaming text reply that spans several chunks.")
    async with _client(openai_fake) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        names, arguments, finish, usage = [], "", None, None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                for delta_call in choice.delta.tool_calls or []:
                    if delta_call.function and delta_call.function.name:
                        names.append(delta_call.function.name)
                    if delta_call.function and delta_call.function.arguments:
                        arguments += delta_call.function.arguments
                finish = choice.finish_reason or finish
        text_stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in text_stream if c.choices])
    assert names == ["lookup_order"]
    assert json.loads(arguments) == {"order_id": "C-9", "note": "streamed arguments"}
    assert finish == "tool_calls"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert text == "Streaming text reply that spans several chunks."


async def test_openai_embeddings_are_deterministic_and_similarity_aware(openai_fake: OpenAIFake) -> None:
    texts = ["refund for my damaged order", "my order arrived damaged, refund please", "reset my password"]
    async with _client(openai_fake) as client:
        default = await client.embeddings.create(model="text-embedding-3-small", input=texts)  # base64 on the wire
        small = await client.embeddings.create(
            model="text-embedding-3-small", input=texts[0], dimensions=64, encoding_format="float"
        )
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)

    vectors = [d.embedding for d in default.data]
    assert [len(v) for v in vectors] == [1536, 1536, 1536]
    assert openai_fake.embedding_requests[0]["encoding_format"] == "base64"
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.3 > abs(cosine(vectors[0], vectors[2]))
    assert small.data[0].embedding == pytest.approx(fake_embedding(texts[0], 64), abs=1e-6)
    assert vectors[0] == pytest.approx(fake_embedding(texts[0], 1536), abs=1e-6)
    assert default.usage.prompt_tokens > 0 and default.model == "text-embedding-3-small"


def test_openai_sync_client_auth_and_models() -> None:
    with OpenAIFake(api_key="sk-right") as fake:
        good = openai.OpenAI(api_key="sk-right", base_url=fake.api_base, max_retries=0)
        bad = openai.OpenAI(api_key="sk-wrong", base_url=fake.api_base, max_retries=0)
        with good, bad:
            assert good.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
            with pytest.raises(openai.NotFoundError):
                good.models.retrieve("gpt-99")
            with pytest.raises(openai.AuthenticationError) as excinfo:
                bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert excinfo.value.code == "invalid_api_key"


# ---------------------------------------------------------------------------- Twilio
def _twilio(fake: TwilioFake) -> TwilioClient:
    # The whole mechanism: Domain.base_url is read on every request. TWILIO_EDGE/REGION must be unset.
    client = TwilioClient(fake.account_sid, fake.auth_token, environment=NO_EDGE_ENVIRONMENT)
    client.api.base_url = fake.base_url
    return client


def test_twilio_create_message_reaches_fake(twilio_fake: TwilioFake, sink: WebhookSink) -> None:
    client = _twilio(twilio_fake)
    message = client.messages.create(
        from_="whatsapp:+14155550000",
        to="whatsapp:+15551234567",
        body="hi",
        status_callback=sink.url("/twilio/status"),
    )
    assert SID_RE.match(message.sid)
    assert message.status == "queued"
    assert message.account_sid == twilio_fake.account_sid
    assert (message.from_, message.to, message.body) == ("whatsapp:+14155550000", "whatsapp:+15551234567", "hi")
    assert isinstance(message.date_created, datetime) and message.date_created.tzinfo is not None
    assert abs((datetime.now(UTC) - message.date_created).total_seconds()) < 60
    assert message.num_segments == "1" and message.direction == "outbound-api"

    (request,) = twilio_fake.requests_to(f"/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json")
    form = request.form()
    assert form["StatusCallback"] == [sink.url("/twilio/status")]
    assert form["Body"] == ["hi"] and form["From"] == ["whatsapp:+14155550000"]
    expected_auth = base64.b64encode(f"{twilio_fake.account_sid}:{twilio_fake.auth_token}".encode()).decode()
    assert request.header("authorization") == f"Basic {expected_auth}"
    stored = twilio_fake.get_message(message.sid)
    assert stored.status_callback == sink.url("/twilio/status")

    fetched = client.messages(message.sid).fetch()
    assert fetched.sid == message.sid and fetched.body == "hi"
    assert [m.sid for m in client.messages.list(to="whatsapp:+15551234567")] == [message.sid]


def test_twilio_rejects_bad_credentials(twilio_fake: TwilioFake) -> None:
    client = TwilioClient(twilio_fake.account_sid, "wrong-token", environment=NO_EDGE_ENVIRONMENT)
    client.api.base_url = twilio_fake.base_url
    with pytest.raises(TwilioRestException) as excinfo:
        client.messages.create(from_="+14155550000", to="+15551234567", body="x")
    assert excinfo.value.status == 401 and excinfo.value.code == 20003
    assert twilio_fake.messages == []


def test_twilio_validation_errors(twilio_fake: TwilioFake) -> None:
    client = _twilio(twilio_fake)
    ok = client.messages.create(from_="+14155550000", to="+15551234567", body="ж" * 1600)  # UCS-2: 67/segment
    assert ok.num_segments == str(math.ceil(1600 / 67))
    with pytest.raises(TwilioRestException) as too_long:
        client.messages.create(from_="+14155550000", to="+15551234567", body="x" * 1601)
    with pytest.raises(TwilioRestException) as mixed:
        client.messages.create(from_="whatsapp:+14155550000", to="+15551234567", body="x")
    twilio_fake.push_rate_limit()
    with pytest.raises(TwilioRestException) as throttled:
        client.messages.create(from_="+14155550000", to="+15551234567", body="x")
    assert (too_long.value.status, too_long.value.code) == (400, 21617)
    assert "1600" in too_long.value.msg
    assert (mixed.value.status, mixed.value.code) == (400, 21910)
    assert (throttled.value.status, throttled.value.code) == (429, 20429)
    assert len(twilio_fake.messages) == 1


def test_twilio_media_urls(twilio_fake: TwilioFake) -> None:
    message = _twilio(twilio_fake).messages.create(
        from_="whatsapp:+14155550000",
        to="whatsapp:+15551234567",
        media_url=["https://example.com/a.png", "https://example.com/b.pdf"],
    )
    assert message.num_media == "2" and message.sid.startswith("MM")
    assert twilio_fake.get_message(message.sid).media_urls == ["https://example.com/a.png", "https://example.com/b.pdf"]


def test_twilio_status_callbacks_are_signed_and_can_arrive_out_of_order(
    twilio_fake: TwilioFake, sink: WebhookSink
) -> None:
    client = _twilio(twilio_fake)
    callback_url = sink.url("/twilio/status?tenant=acme")
    message = client.messages.create(
        from_="whatsapp:+14155550000", to="whatsapp:+15551234567", body="hi", status_callback=callback_url
    )
    deliveries = twilio_fake.fire_status_callbacks(message.sid, ["delivered", "queued", "sent"])
    assert [d.status_code for d in deliveries] == [200, 200, 200]

    received = sink.requests_to("/twilio/status")
    assert [r.form()["MessageStatus"][0] for r in received] == ["delivered", "queued", "sent"]
    validator = RequestValidator(twilio_fake.auth_token)
    for request in received:
        params = {k: v[0] for k, v in request.form().items()}
        assert params["MessageSid"] == message.sid and params["ChannelPrefix"] == "whatsapp"
        assert validator.validate(callback_url, params, request.header("x-twilio-signature"))
        assert not RequestValidator("other-token").validate(callback_url, params, request.header("x-twilio-signature"))
    # The resource keeps the most advanced status even though "sent" arrived last.
    assert client.messages(message.sid).fetch().status == "delivered"


async def test_twilio_auto_callbacks_and_async_client(sink: WebhookSink) -> None:
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    async with TwilioFake(auto_callbacks=("queued", "sent", "delivered")) as fake:
        http_client = AsyncTwilioHttpClient()
        try:
            client = fake.client(http_client=http_client)
            message = await client.messages.create_async(
                from_="+14155550000", to="+15551234567", body="async hi", status_callback=sink.url("/cb")
            )
            assert SID_RE.match(message.sid) and message.status == "queued"
            await async_wait_for(lambda: len(sink.requests_to("/cb")) == 3)
            fetched = await client.messages(message.sid).fetch_async()
        finally:
            await http_client.close()
    assert [r.form()["SmsStatus"][0] for r in sink.requests_to("/cb")] == ["queued", "sent", "delivered"]
    assert fetched.status == "delivered" and fetched.date_sent is not None
    assert all(d.status_code == 200 for d in fake.get_message(message.sid).callbacks)


async def test_twilio_delivery_failure_reports_error_code(twilio_fake: TwilioFake, sink: WebhookSink) -> None:
    twilio_fake.set_delivery_failure("whatsapp:+15550000000", error_code=63016)
    message = _twilio(twilio_fake).messages.create(
        from_="whatsapp:+14155550000", to="whatsapp:+15550000000", body="late", status_callback=sink.url("/s")
    )
    deliveries = await twilio_fake.afire_status_callbacks(message.sid)
    assert [d.params["MessageStatus"] for d in deliveries] == ["queued", "sent", "undelivered"]
    assert deliveries[-1].params["ErrorCode"] == "63016"
    fetched = _twilio(twilio_fake).messages(message.sid).fetch()
    assert fetched.status == "undelivered" and fetched.error_code == 63016


def test_twilio_inbound_webhook_is_signed(twilio_fake: TwilioFake, sink: WebhookSink) -> None:
    url = sink.url("/webhooks/whatsapp")
    response = twilio_fake.post_inbound_message(
        url, from_="whatsapp:+15551234567", to="whatsapp:+14155550000", body="I need help", profile_name="Ana"
    )
    assert response.status_code == 200
    (request,) = sink.requests_to("/webhooks/whatsapp")
    params = {k: v[0] for k, v in request.form().items()}
    assert params["Body"] == "I need help" and params["WaId"] == "15551234567" and params["ProfileName"] == "Ana"
    assert RequestValidator(twilio_fake.auth_token).validate(url, params, request.header("x-twilio-signature"))


# ---------------------------------------------------------------------------- Gmail
def _gmail(fake: GmailFake, token: str = "test"):  # type: ignore[no-untyped-def]
    from google.oauth2.credentials import Credentials

    return build(
        "gmail",
        "v1",
        credentials=Credentials(token=token),
        client_options={"api_endpoint": fake.base_url},
        static_discovery=True,
        cache_discovery=False,
    )


@pytest.fixture
def gmail(gmail_fake: GmailFake) -> Iterator:
    """The official Gmail client bound to ``gmail_fake``; its HTTP connections are closed afterwards."""
    with _gmail(gmail_fake) as service:
        yield service


def _decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_gmail_history_list_pages_and_messages_get_full(gmail_fake: GmailFake, gmail) -> None:  # type: ignore[no-untyped-def]
    service = gmail
    start = int(service.users().getProfile(userId="me").execute()["historyId"])
    first = gmail_fake.inject_email(
        from_="Ana <ana@example.org>",
        subject="Order late",
        text="Where is my order #42?\n",
        html="<p>Where is my order <b>#42</b>?</p>",
    )
    second = gmail_fake.inject_email(
        from_="ana@example.org",
        subject="Re: Order late",
        text="Any news?",
        in_reply_to=first.message_id,
    )
    gmail_fake.inject_email(from_="bob@example.org", subject="Invoice", text="Please send the invoice.")

    records, token, pages = [], None, 0
    while True:
        page = (
            service.users()
            .history()
            .list(userId="me", startHistoryId=str(start), historyTypes="messageAdded", maxResults=2, pageToken=token)
            .execute()
        )
        pages += 1
        records.extend(page.get("history", []))
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 2
    assert page["historyId"] == str(gmail_fake.history_id) == str(start + 3)
    added = [r["messagesAdded"][0]["message"] for r in records]
    assert [a["id"] for a in added][:2] == [first.id, second.id]
    assert added[1]["threadId"] == first.thread_id == first.id
    assert added[0]["labelIds"] == ["INBOX", "UNREAD"]
    assert "history" not in service.users().history().list(userId="me", startHistoryId=page["historyId"]).execute()

    full = service.users().messages().get(userId="me", id=first.id, format="full").execute()
    headers = {h["name"]: h["value"] for h in full["payload"]["headers"]}
    assert headers["From"] == "Ana <ana@example.org>" and headers["Subject"] == "Order late"
    assert headers["To"] == gmail_fake.email_address and headers["Message-ID"] == first.message_id
    assert full["payload"]["mimeType"] == "multipart/alternative"
    plain, html = full["payload"]["parts"]
    assert (plain["mimeType"], html["mimeType"]) == ("text/plain", "text/html")
    assert plain["partId"] == "0" and "=" not in plain["body"]["data"]
    assert _decode(plain["body"]["data"]).decode() == "Where is my order #42?\n"
    assert b"<b>#42</b>" in _decode(html["body"]["data"])
    assert full["threadId"] == first.thread_id and full["labelIds"] == ["INBOX", "UNREAD"]
    assert full["historyId"] == str(first.history_id) and full["snippet"] == "Where is my order #42?"

    reply = service.users().messages().get(userId="me", id=second.id).execute()
    reply_headers = {h["name"]: h["value"] for h in reply["payload"]["headers"]}
    assert reply_headers["In-Reply-To"] == first.message_id == reply_headers["References"]
    assert reply["threadId"] == first.thread_id
    assert _decode(reply["payload"]["body"]["data"]).decode().strip() == "Any news?"

    raw = service.users().messages().get(userId="me", id=second.id, format="raw").execute()
    assert PARSER.parsebytes(_decode(raw["raw"]))["Subject"] == "Re: Order late"
    meta = (
        service.users()
        .messages()
        .get(userId="me", id=second.id, format="metadata", metadataHeaders=["Subject"])
        .execute()
    )
    assert meta["payload"]["headers"] == [{"name": "Subject", "value": "Re: Order late"}]


def test_gmail_send_reply_threads_and_shows_in_history(gmail_fake: GmailFake, gmail) -> None:  # type: ignore[no-untyped-def]
    service = gmail
    inbound = gmail_fake.inject_email(from_="ana@example.org", subject="Refund", text="I want a refund")
    before = gmail_fake.history_id

    reply = EmailMessage()
    reply["To"] = "ana@example.org"
    reply["From"] = gmail_fake.email_address
    reply["Subject"] = "Re: Refund"
    reply["In-Reply-To"] = inbound.message_id
    reply["References"] = inbound.message_id
    reply.set_content("Your refund is on its way.")
    raw = base64.urlsafe_b64encode(reply.as_bytes()).decode()
    sent = service.users().messages().send(userId="me", body={"raw": raw, "threadId": inbound.thread_id}).execute()
    assert sent["threadId"] == inbound.thread_id and sent["labelIds"] == ["SENT"]
    (stored,) = gmail_fake.sent
    assert stored.id == sent["id"] and stored.text == "Your refund is on its way.\n"
    assert stored.in_reply_to == inbound.message_id and stored.message_id  # Gmail adds a Message-ID if missing

    history = service.users().history().list(userId="me", startHistoryId=str(before)).execute()
    (record,) = history["history"]
    assert record["messagesAdded"][0]["message"] == {
        "id": sent["id"],
        "threadId": inbound.thread_id,
        "labelIds": ["SENT"],
    }
    inbox_only = service.users().history().list(userId="me", startHistoryId=str(before), labelId="INBOX").execute()
    assert "history" not in inbox_only
    thread = service.users().threads().get(userId="me", id=inbound.thread_id).execute()
    assert [m["id"] for m in thread["messages"]] == [inbound.id, sent["id"]]

    # Gmail only honours threadId when the reply references the thread and the subject matches.
    unrelated = EmailMessage()
    unrelated["To"] = "ana@example.org"
    unrelated["Subject"] = "Something else"
    unrelated.set_content("x")
    other = (
        service.users()
        .messages()
        .send(
            userId="me",
            body={"raw": base64.urlsafe_b64encode(unrelated.as_bytes()).decode(), "threadId": inbound.thread_id},
        )
        .execute()
    )
    assert other["threadId"] != inbound.thread_id
    assert gmail_fake.get_message(other["id"]).sender == gmail_fake.email_address

    no_recipient = EmailMessage()
    no_recipient["Subject"] = "nobody"
    no_recipient.set_content("x")
    with pytest.raises(HttpError) as excinfo:
        service.users().messages().send(
            userId="me", body={"raw": base64.urlsafe_b64encode(no_recipient.as_bytes()).decode()}
        ).execute()
    assert excinfo.value.resp.status == 400 and "Recipient address required" in str(excinfo.value)


def test_gmail_send_via_media_upload_over_tls() -> None:
    # googleapiclient keeps rootUrl's https scheme for /upload/ URLs, so uploads need the fake's TLS mode;
    # build_service() then uses AuthorizedHttp over httplib2.Http(ca_certs=fake.ca_cert_path).
    message = EmailMessage()
    message["To"] = "ana@example.org"
    message["Subject"] = "Uploaded"
    message.set_content("sent through /upload")
    with GmailFake(tls=True) as gmail_fake, gmail_fake.build_service() as service:
        assert gmail_fake.base_url.startswith("https://")
        assert service.users().getProfile(userId="me").execute()["emailAddress"] == gmail_fake.email_address
        media = MediaIoBaseUpload(io.BytesIO(message.as_bytes()), mimetype="message/rfc822")
        sent = service.users().messages().send(userId="me", body={}, media_body=media).execute()
        assert gmail_fake.get_message(sent["id"]).subject == "Uploaded"
        assert gmail_fake.sent[0].text == "sent through /upload\n"
        (upload,) = gmail_fake.requests_to("/upload/gmail/v1/users/me/messages/send")
        assert upload.query["uploadType"] == ["multipart"]


def test_gmail_checks_the_bearer_token(gmail_fake: GmailFake) -> None:
    with _gmail(gmail_fake, token="wrong") as wrong, pytest.raises(google.auth.exceptions.RefreshError):
        wrong.users().getProfile(userId="me").execute()  # 401 -> the credentials refresh attempt fails
    endpoint = {"api_endpoint": gmail_fake.base_url}
    with (
        build("gmail", "v1", http=httplib2.Http(), client_options=endpoint) as anonymous,
        pytest.raises(HttpError) as excinfo,
    ):
        anonymous.users().getProfile(userId="me").execute()
    assert excinfo.value.resp.status == 401
    assert json.loads(excinfo.value.content)["error"]["status"] == "UNAUTHENTICATED"
    assert [r.status for r in gmail_fake.requests] == [401, 401]
    assert gmail_fake.requests[0].header("authorization") == "Bearer wrong"


def test_gmail_watch_profile_modify_and_expired_history(gmail_fake: GmailFake, gmail) -> None:  # type: ignore[no-untyped-def]
    service = gmail
    watch = (
        service.users()
        .watch(userId="me", body={"topicName": "projects/crm-test/topics/gmail", "labelIds": ["INBOX"]})
        .execute()
    )
    assert watch["historyId"] == str(gmail_fake.history_id)
    assert int(watch["expiration"]) > time.time() * 1000 + 6 * 86400 * 1000
    assert gmail_fake.watch_requests[0]["labelIds"] == ["INBOX"] and gmail_fake.watching
    with pytest.raises(HttpError) as bad_topic:
        service.users().watch(userId="me", body={"topicName": "gmail"}).execute()
    assert bad_topic.value.resp.status == 400

    message = gmail_fake.inject_email(from_="ana@example.org", subject="Hi", text="hello")
    added_at = message.history_id
    profile = service.users().getProfile(userId="me").execute()
    assert profile == {
        "emailAddress": gmail_fake.email_address,
        "messagesTotal": 1,
        "threadsTotal": 1,
        "historyId": str(added_at),
    }
    modified = (
        service.users().messages().modify(userId="me", id=message.id, body={"removeLabelIds": ["UNREAD"]}).execute()
    )
    assert modified["labelIds"] == ["INBOX"]
    changes = (
        service.users().history().list(userId="me", startHistoryId=str(added_at), historyTypes="labelRemoved").execute()
    )
    assert changes["history"][0]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    listed = service.users().messages().list(userId="me", labelIds=["INBOX"]).execute()
    assert listed["messages"] == [{"id": message.id, "threadId": message.thread_id}]

    gmail_fake.expire_history()
    with pytest.raises(HttpError) as expired:
        service.users().history().list(userId="me", startHistoryId=str(message.history_id - 1)).execute()
    assert expired.value.resp.status == 404
    with pytest.raises(HttpError) as missing:
        service.users().messages().get(userId="me", id="ffffffffffffffff").execute()
    assert missing.value.resp.status == 404


# ---------------------------------------------------------------------------- Google certs / Pub/Sub push
AUDIENCE = "https://crm.example.com/webhooks/gmail/push"
PUSH_SA = "gmail-push@crm-test.iam.gserviceaccount.com"


def _verify(fake: GoogleCertsFake, token: str, audience: str = AUDIENCE, url: str | None = None) -> dict:
    with requests.Session() as session:
        request = google.auth.transport.requests.Request(session)
        return dict(id_token.verify_token(token, request, audience=audience, certs_url=url or fake.certs_url))


def test_google_certs_token_verifies_with_official_library(certs_fake: GoogleCertsFake) -> None:
    token = certs_fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA)
    for url in (certs_fake.certs_url, certs_fake.jwks_url):  # x509 PEM map and JWK Set
        claims = _verify(certs_fake, token, url=url)
        assert claims["aud"] == AUDIENCE and claims["email"] == PUSH_SA and claims["email_verified"] is True
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["sub"] == claims["azp"] and claims["sub"].isdigit()
        assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": certs_fake.key.kid, "typ": "JWT"}
    with requests.Session() as session:
        certs = google.auth.transport.requests.Request(session)(certs_fake.certs_url)
    assert certs.status == 200 and "max-age" in certs.headers["Cache-Control"]


def test_google_certs_rejects_bad_tokens(certs_fake: GoogleCertsFake) -> None:
    with pytest.raises(ValueError, match="audience"):
        _verify(certs_fake, certs_fake.sign_pubsub_jwt("https://other.example.com", PUSH_SA))
    with pytest.raises(ValueError, match="expired"):
        _verify(certs_fake, certs_fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA, issued_at=time.time() - 7200))
    rogue = SigningKey.generate()
    with pytest.raises(ValueError, match="not found"):
        _verify(certs_fake, certs_fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA, key=rogue))
    forged = certs_fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA, kid=certs_fake.key.kid, key=rogue)
    with pytest.raises(ValueError, match="signature"):
        _verify(certs_fake, forged)
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(certs_fake, forged, url=certs_fake.jwks_url)
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(certs_fake, certs_fake.sign_pubsub_jwt("https://other.example.com", PUSH_SA), url=certs_fake.jwks_url)


def test_google_certs_key_rotation() -> None:
    with GoogleCertsFake() as fake:
        old = fake.key
        old_token = fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA)
        new = fake.rotate_key()
        new_token = fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA)
        assert jwt.get_unverified_header(new_token)["kid"] == new.kid != old.kid
        assert _verify(fake, old_token)["email"] == _verify(fake, new_token)["email"] == PUSH_SA
        fake.retire_key(old.kid)
        with pytest.raises(ValueError, match="not found"):
            _verify(fake, old_token)
        fake.fail_status = 503
        with pytest.raises(google.auth.exceptions.TransportError):
            _verify(fake, new_token)


def test_pubsub_push_envelope_shape() -> None:
    envelope = pubsub_push_envelope("support@example.com", 4242, message_id="123456")
    message = envelope["message"]
    assert envelope["subscription"] == "projects/test-project/subscriptions/gmail-push"
    assert json.loads(base64.b64decode(message["data"])) == {"emailAddress": "support@example.com", "historyId": 4242}
    assert message["messageId"] == message["message_id"] == "123456"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["publishTime"])
    assert message["publish_time"] == message["publishTime"]
    assert pubsub_push_headers("tok")["Authorization"] == "Bearer tok"


def test_push_notification_drives_gmail_history_sync(  # type: ignore[no-untyped-def]
    gmail_fake: GmailFake, gmail, certs_fake: GoogleCertsFake
) -> None:
    """The whole inbound-email path, as the gateway will run it, through the official libraries."""
    service = gmail
    last_seen = service.users().watch(userId="me", body={"topicName": "projects/p/topics/gmail"}).execute()["historyId"]
    inbound = gmail_fake.inject_email(from_="ana@example.org", subject="Help", text="My login fails")

    envelope = pubsub_push_envelope(gmail_fake.email_address, gmail_fake.history_id)
    token = pubsub_push_headers(certs_fake.sign_pubsub_jwt(AUDIENCE, PUSH_SA))["Authorization"].removeprefix("Bearer ")
    assert _verify(certs_fake, token)["email"] == PUSH_SA
    notification = json.loads(base64.b64decode(envelope["message"]["data"]))
    assert notification["historyId"] == inbound.history_id

    history = (
        service.users()
        .history()
        .list(userId="me", startHistoryId=last_seen, historyTypes="messageAdded", labelId="INBOX")
        .execute()
    )
    (new_id,) = [a["message"]["id"] for r in history["history"] for a in r["messagesAdded"]]
    fetched = service.users().messages().get(userId="me", id=new_id).execute()
    assert _decode(fetched["payload"]["body"]["data"]).decode().strip() == "My login fails"
