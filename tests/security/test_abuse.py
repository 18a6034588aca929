"""Bad input and abuse at the gateway: every answer is a 4xx with a JSON reason (or a legitimate 2xx).

Never a 5xx, never a traceback, never a reflected header. Covers oversized, non-UTF-8, deeply
nested, empty and mistyped bodies; CRLF/header injection and request smuggling sent raw over a
socket to a real uvicorn (configured as `crm-fte gateway` runs it); replayed Twilio signatures;
path traversal in ticket ids; very long query strings; per-sender limits that formatting can't dodge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.kafka import ensure_topics
from core.settings import Settings
from gateway.app import create_app
from tests.security.conftest import (
    PUBLIC,
    STATUS_PATH,
    WHATSAPP_PATH,
    SecurityStack,
    inbound_count,
    new_phone,
    running_stack,
    whatsapp_params,
)
from tests.workflows.helpers import eventually
from workers.embedded import free_port

FORM_PATH = "/api/v1/support/form"
# What a response body must never contain: a traceback, source paths, driver internals.
LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "psycopg", "/work/", "site-packages")


@pytest.fixture(scope="module")
async def stack(
    settings: Settings, client: Client, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> AsyncIterator[SecurityStack]:
    async with running_stack(settings, client, sessions) as running:
        yield running


def _form(**overrides: object) -> dict[str, object]:
    return {
        "name": "Ana Test",
        "email": f"ana.{uuid.uuid4().hex[:8]}@example.com",
        "subject": "Question about boards",
        "category": "how_to",
        "message": "How do I add a checklist to a card?",
        **overrides,
    }


def assert_clean_4xx(response: httpx.Response, *allowed: int) -> dict[str, object]:
    """A 4xx (one of `allowed` when given) with a JSON `error` and `message`, and nothing internal."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    for marker in LEAK_MARKERS:
        assert marker not in response.text, (marker, response.text[:300])
    return body


# ---------------------------------------------------------------------------------------------- bodies


async def test_oversized_bodies_are_413_on_every_endpoint(stack: SecurityStack) -> None:
    limit = stack.settings.gateway_max_body_bytes
    too_big = b"x" * (limit + 1)
    for path, content_type in (
        (FORM_PATH, "application/json"),
        (WHATSAPP_PATH, "application/x-www-form-urlencoded"),
        (STATUS_PATH, "application/x-www-form-urlencoded"),
    ):
        response = await stack.http.post(path, content=too_big, headers={"content-type": content_type})
        assert assert_clean_4xx(response, 413)["error"] == "payload_too_large"
    # A body exactly at the limit is read (and then refused for what it is, not for its size).
    at_limit = await stack.http.post(FORM_PATH, content=b" " * limit, headers={"content-type": "application/json"})
    assert_clean_4xx(at_limit, 400, 422)


@pytest.mark.parametrize("path", [FORM_PATH, WHATSAPP_PATH])
async def test_oversized_streamed_bodies_without_content_length_are_413(stack: SecurityStack, path: str) -> None:
    """Chunked uploads carry no Content-Length: the limit must hold while the body streams in."""
    limit = stack.settings.gateway_max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent <= limit:
            yield b"a" * 65536
            sent += 65536

    headers = {"content-type": "application/json", "X-Twilio-Signature": "not-checked-before-the-body-is-read"}
    response = await stack.http.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert assert_clean_4xx(response, 413)["error"] == "payload_too_large"


async def test_an_invalid_content_length_is_400(stack: SecurityStack) -> None:
    request = stack.http.build_request("POST", FORM_PATH, content=b"{}", headers={"content-type": "application/json"})
    request.headers["content-length"] = "12abc"
    assert_clean_4xx(await stack.http.send(request), 400)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"name": "\xff\xfe\xfd", "email": "a@example.com"}', id="latin1-bytes-in-json"),
        pytest.param(b"\xef\xbb\xbf\xff" + json.dumps(_form()).encode(), id="bom-then-garbage"),
        pytest.param(json.dumps(_form()).encode("utf-16"), id="utf16-json"),
        pytest.param(json.dumps(_form()).encode("utf-32-le"), id="utf32-without-bom"),
        pytest.param(b'{"name": "\xc0\xae\xc0\xae", "email": "a@example.com"}', id="overlong-utf8"),
        pytest.param(b'{"name": "\xed\xa0\x80x", "email": "a@example.com"}', id="encoded-surrogate"),
    ],
)
async def test_non_utf8_json_on_the_form_is_a_clean_4xx_or_accepted(stack: SecurityStack, raw: bytes) -> None:
    response = await stack.http.post(FORM_PATH, content=raw, headers={"content-type": "application/json"})
    if response.status_code != 201:  # UTF-16/32 JSON is valid JSON (RFC 8259 readers may accept it)
        assert_clean_4xx(response, 400, 422)


@pytest.mark.parametrize("field", ["name", "subject", "message"])
@pytest.mark.parametrize("value", ["\\ud800 lone high surrogate", "lone low \\udfff surrogate", "nul \\u0000 byte"])
async def test_unencodable_characters_in_form_fields_are_refused_not_500(
    stack: SecurityStack, field: str, value: str
) -> None:
    """JSON escapes can smuggle lone surrogates and NUL into Python strings PostgreSQL cannot store."""
    body = json.dumps(_form(**{field: "PLACEHOLDER and some padding text"})).replace("PLACEHOLDER", value)
    response = await stack.http.post(FORM_PATH, content=body.encode(), headers={"content-type": "application/json"})
    assert_clean_4xx(response, 422)


async def test_non_utf8_form_bodies_on_the_webhooks_are_clean(stack: SecurityStack) -> None:
    raw = b"MessageSid=SM\xff\xfe&From=whatsapp%3A%2B15551230000&Body=caf\xe9+%FF%FE"
    for path in (WHATSAPP_PATH, STATUS_PATH):
        response = await stack.http.post(
            path,
            content=raw,
            headers={"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
        )
        assert_clean_4xx(response, 400, 403)


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "object", "inside-a-field"])
async def test_deeply_nested_json_is_refused_cleanly(stack: SecurityStack, depth: int, shape: str) -> None:
    if shape == "array":
        raw = "[" * depth + "]" * depth
    elif shape == "object":
        raw = '{"a":' * depth + "1" + "}" * depth
    else:
        raw = json.dumps(_form()).replace('"Ana Test"', "[" * depth + "]" * depth)
    response = await stack.http.post(FORM_PATH, content=raw.encode(), headers={"content-type": "application/json"})
    assert_clean_4xx(response, 400, 413, 422)


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b'""', b"0", b"{}", b"   ", b"\x00"])
async def test_empty_and_degenerate_form_bodies_are_422(stack: SecurityStack, body: bytes) -> None:
    response = await stack.http.post(FORM_PATH, content=body, headers={"content-type": "application/json"})
    assert_clean_4xx(response, 400, 422)


async def test_empty_webhook_bodies_are_403_unsigned_and_400_signed(stack: SecurityStack) -> None:
    for path in (WHATSAPP_PATH, STATUS_PATH):
        assert_clean_4xx(await stack.http.post(path), 403)
        signed_empty = await stack.http.post(path, headers={"X-Twilio-Signature": stack.sign({}, path)})
        assert_clean_4xx(signed_empty, 400)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/xml",
        "application/json; charset=ebcdic",
        "",
        "a" * 5000,
    ],
)
async def test_wrong_content_types_on_the_form_are_4xx(stack: SecurityStack, content_type: str) -> None:
    response = await stack.http.post(
        FORM_PATH, content=json.dumps(_form()).encode(), headers={"content-type": content_type}
    )
    if content_type in ("", "application/json; charset=ebcdic") and response.status_code == 201:
        return  # a missing or odd charset on a UTF-8 JSON body is read as JSON: legitimate
    assert_clean_4xx(response, 400, 415, 422)


async def test_wrong_content_types_on_the_webhooks_are_4xx(stack: SecurityStack) -> None:
    """Signed, so the body parser (not the signature check) is what refuses them."""
    as_json = await stack.http.post(
        WHATSAPP_PATH, json=whatsapp_params(new_phone(), "hi"), headers={"X-Twilio-Signature": stack.sign({})}
    )
    assert_clean_4xx(as_json, 400)
    with_a_file = await stack.http.post(
        WHATSAPP_PATH,
        files={"upload": ("x.txt", b"hello", "text/plain")},
        data={"MessageSid": "SM1"},
        headers={"X-Twilio-Signature": "AAAA"},
    )
    assert_clean_4xx(with_a_file, 400, 403)
    many_fields = "&".join(f"f{i}=v" for i in range(5000))
    response = await stack.http.post(
        WHATSAPP_PATH,
        content=many_fields.encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
    )
    assert_clean_4xx(response, 400, 403)


# ---------------------------------------------------------------------------------------------- signatures


async def test_a_replayed_signature_on_a_changed_request_is_403_and_changes_nothing(stack: SecurityStack) -> None:
    phone = new_phone()
    params = whatsapp_params(phone, "How do I add a checklist to a card?")
    signature = stack.sign(params)
    original = await stack.http.post(WHATSAPP_PATH, data=params, headers={"X-Twilio-Signature": signature})
    assert original.status_code == 200, original.text
    other_host = stack.sign(params, base="http://attacker.example")
    replays = {
        "changed body": (WHATSAPP_PATH, {**params, "Body": "Send me the phone number of every customer"}, signature),
        "added field": (WHATSAPP_PATH, {**params, "NumMedia": "1", "MediaUrl0": "https://evil.example/x"}, signature),
        "removed field": (WHATSAPP_PATH, {k: v for k, v in params.items() if k != "ProfileName"}, signature),
        "other sender": (WHATSAPP_PATH, {**params, "From": f"whatsapp:{new_phone()}"}, signature),
        "other endpoint": (STATUS_PATH, {**params, "MessageStatus": "read"}, signature),
        "query added": (f"{WHATSAPP_PATH}?replay=1", params, signature),
        "signed for another host": (WHATSAPP_PATH, params, other_host),
        "case-folded signature": (WHATSAPP_PATH, params, signature.swapcase()),
        "truncated signature": (WHATSAPP_PATH, params, signature[:-2]),
    }
    for name, (path, data, sig) in replays.items():
        response = await stack.http.post(path, data=data, headers={"X-Twilio-Signature": sig})
        assert assert_clean_4xx(response, 403)["error"] == "forbidden", name

    async def stored() -> list[str] | None:
        async with stack.sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT content FROM messages WHERE channel = 'whatsapp' AND direction = 'inbound' "
                        "AND external_message_id = :e"
                    ),
                    {"e": params["MessageSid"]},
                )
            ).all()
        return [r.content for r in rows] or None

    assert await eventually(stored, timeout=30) == [params["Body"]]


async def test_an_identical_replay_is_accepted_but_stored_and_answered_once(stack: SecurityStack) -> None:
    """Twilio retries with the same signature; so can an attacker. Both are harmless: one row, one reply."""
    phone = new_phone()
    request = stack.signed(whatsapp_params(phone, "How do I rename a board?"))
    codes = [(await stack.http.post(**request)).status_code for _ in range(3)]
    assert codes == [200, 200, 200]

    async def replied() -> int | None:
        sent = [m for m in stack.twilio.messages if m.to == f"whatsapp:{phone}"]
        return len(sent) or None

    await eventually(replied, timeout=45)
    await asyncio.sleep(2)  # a duplicate turn, if any, would have answered by now
    assert await inbound_count(stack.sessions, "whatsapp", request["data"]["MessageSid"]) == 1
    assert len([m for m in stack.twilio.messages if m.to == f"whatsapp:{phone}"]) == 1


async def test_signed_status_callbacks_with_unstorable_values_are_not_500(stack: SecurityStack) -> None:
    """NUL cannot be stored in PostgreSQL text/jsonb; a signed callback carrying one must not 500."""
    for params in (
        {"MessageSid": "SM\x00abc", "MessageStatus": "delivered"},
        {"MessageSid": f"SM{uuid.uuid4().hex}", "MessageStatus": "failed", "ErrorCode": "63016\x00"},
    ):
        response = await stack.http.post(**stack.signed(params, STATUS_PATH))
        assert response.status_code < 500, (params, response.status_code, response.text[:200])
        if response.status_code != 204:
            assert_clean_4xx(response, 400)


async def test_control_characters_in_a_signed_whatsapp_message_do_not_poison_the_conversation(
    stack: SecurityStack,
) -> None:
    """A NUL in Body/ProfileName must be refused (4xx) or stored sanitised, never accepted and then lost."""
    phone = new_phone()
    params = {**whatsapp_params(phone, "How do I add a checklist?\x00 thanks"), "ProfileName": "Sam\x00"}
    response = await stack.http.post(**stack.signed(params))
    if response.status_code != 200:
        assert_clean_4xx(response, 400, 422)
        return

    async def recorded() -> int | None:
        return await inbound_count(stack.sessions, "whatsapp", params["MessageSid"]) or None

    # 200 means "Kafka has it": the message must then reach the CRM (the workflow retries a failing
    # insert for 30 minutes and then fails the conversation, so waiting longer proves nothing).
    assert await eventually(recorded, timeout=20) == 1


# ---------------------------------------------------------------------------------------------- identity


async def test_a_web_form_cannot_claim_someone_elses_phone_to_read_their_tickets(stack: SecurityStack) -> None:
    """The form's `phone` is unverified: typing a customer's number must not open their WhatsApp tickets."""
    phone = new_phone()
    await stack.http.post(**stack.signed(whatsapp_params(phone, "How do I rename a board? My PIN hint is 'otter'.")))

    async def victims_ticket() -> str | None:
        async with stack.sessions() as session:
            return await session.scalar(
                text(
                    "SELECT t.ticket_number FROM tickets t JOIN conversations c ON c.id = t.conversation_id "
                    "WHERE c.channel = 'whatsapp' AND c.conversation_key = :p"
                ),
                {"p": phone},
            )

    ticket = await eventually(victims_ticket, timeout=45)
    impostor = f"mallory.{uuid.uuid4().hex[:8]}@example.com"
    filed = await stack.http.post(FORM_PATH, json=_form(email=impostor, phone=phone))
    assert filed.status_code == 201, filed.text
    response = await stack.http.get(f"/api/v1/tickets/{ticket}", params={"email": impostor})
    assert response.status_code == 404, f"{impostor} read {phone}'s WhatsApp ticket {ticket}: {response.text[:300]}"


# ---------------------------------------------------------------------------------------------- ids, queries


@pytest.mark.parametrize(
    "ticket_path",
    [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%252F..%252Fetc%252Fpasswd",
        "%c0%ae%c0%ae%2f%c0%ae%c0%ae%2fetc%2fpasswd",
        "TKT-0001%2F..%2F..%2Fhealth",
        "TKT-0001%00",
        "TKT-0001%0d%0aSet-Cookie:%20pwned=1",
        "TKT-0001'%20OR%20'1'%3D'1",
        "TKT-0001;DROP%20TABLE%20tickets",
        "TKT-%D9%A0%D9%A1%D9%A2%D9%A3",  # Arabic-Indic digits: \d matches them in Unicode regexes
        "TKT-" + "9" * 5000,
        "%FF%FE",
    ],
)
async def test_path_traversal_and_injection_in_ticket_ids_are_404_or_422(
    stack: SecurityStack, ticket_path: str
) -> None:
    response = await stack.http.get(f"/api/v1/tickets/{ticket_path}?email=ana%40example.com")
    assert_clean_4xx(response, 404, 422)
    assert "set-cookie" not in response.headers
    assert "root:" not in response.text


async def test_injection_in_the_ticket_email_is_422(stack: SecurityStack) -> None:
    for email in ("a@example.com' OR '1'='1", "a@example.com\r\nSet-Cookie: x=1", "%", "a" * 10_000 + "@x.com"):
        response = await stack.http.get("/api/v1/tickets/TKT-0001", params={"email": email})
        assert_clean_4xx(response, 404, 422)
        assert "set-cookie" not in response.headers


async def test_very_long_query_strings_are_handled(stack: SecurityStack) -> None:
    long_email = "a" * 60_000 + "@example.com"  # httpx caps a URL at 64 KiB; uvicorn is tested raw below
    assert_clean_4xx(await stack.http.get("/api/v1/tickets/TKT-0001", params={"email": long_email}), 422)
    many = "&".join(f"p{i}={i}" for i in range(5_000))
    response = await stack.http.get(f"/api/v1/metrics/channels?window_hours=1&{many}")
    assert response.status_code == 200  # unknown parameters are ignored
    for window in ("nan", "inf", "-inf", "1e309", "-0", "0x10", "1" * 400):
        assert_clean_4xx(await stack.http.get("/api/v1/metrics/channels", params={"window_hours": window}), 422)


async def test_per_sender_limits_cannot_be_dodged_by_reformatting_the_sender(
    stack: SecurityStack, settings: Settings
) -> None:
    limited = stack.settings.model_copy(
        update={
            "rate_limit_whatsapp": "3/minute",
            "rate_limit_web_form": "2/minute",
            "kafka_topic_inbound": f"test.security.unconsumed.{uuid.uuid4().hex[:8]}",
        }
    )
    await ensure_topics(limited)
    digits = f"{uuid.uuid4().int % 10**7:07d}"
    spellings = [
        f"whatsapp:+1555{digits}",
        f"whatsapp:+1 555 {digits[:3]} {digits[3:]}",
        f"whatsapp:+1 (555) {digits[:3]}-{digits[3:]}",
        f"whatsapp:001555{digits}",
    ]
    async with LifespanManager(create_app(limited)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            codes = []
            for sender in spellings:
                params = {**whatsapp_params("+15550000000", "hello there"), "From": sender}
                codes.append((await http.post(**stack.signed(params))).status_code)
            assert codes == [200, 200, 200, 429]
            email = f"flood.{uuid.uuid4().hex[:6]}@example.com"
            variants = [email, email.upper(), f"  {email}  "]
            form_codes = [(await http.post(FORM_PATH, json=_form(email=v))).status_code for v in variants]
            assert form_codes[:2] == [201, 201] and form_codes[2] in (422, 429)
            other = await http.post(**stack.signed(whatsapp_params(new_phone(), "hello there")))
            assert other.status_code == 200


# ---------------------------------------------------------------------------------------------- raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process owns its signals


@pytest.fixture(scope="module")
def live_gateway(stack: SecurityStack) -> Iterator[int]:
    """The gateway served by uvicorn with the options `crm-fte gateway` uses, on a free local port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(stack.settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="*",
        lifespan="on",
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, name="uvicorn-security", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(30)


def _exchange(port: int, payload: bytes, timeout: float = 15.0) -> list[RawResponse]:
    """Send raw bytes, read until the server closes (or goes quiet), parse every response in order."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    responses = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
        if length is None:
            body, rest = rest, b""
        else:
            body, rest = rest[:length], rest[length:]
        responses.append(RawResponse(status, headers, body, head + sep + body))
    return responses


async def exchange(port: int, payload: bytes) -> list[RawResponse]:
    return await asyncio.to_thread(_exchange, port, payload)


def _request(method: str, target: str, headers: list[str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _assert_safe(response: RawResponse) -> None:
    assert response.status < 500, response.raw[:400]
    for marker in LEAK_MARKERS:
        assert marker.encode() not in response.body, (marker, response.raw[:400])
    for name, _ in response.headers:
        assert name.lower() not in {"x-injected", "set-cookie"}, response.raw[:400]


async def test_a_plain_request_through_uvicorn_works(live_gateway: int) -> None:
    (response,) = await exchange(live_gateway, _request("GET", "/livez", ["Connection: close"]))
    assert response.status == 200 and json.loads(response.body) == {"status": "alive"}


@pytest.mark.parametrize(
    "header_lines",
    [
        pytest.param(["X-Twilio-Signature: abc\rX-Injected: 1"], id="bare-CR-in-value"),
        pytest.param(["X-Twilio-Signature: abc\nX-Injected: 1"], id="bare-LF-in-value"),
        pytest.param(["X-Twilio-Signature: abc\x00X-Injected: 1"], id="NUL-in-value"),
        pytest.param(["X-Twilio-Signature: abc", " X-Injected: 1"], id="obs-fold-continuation"),
        pytest.param(["X-Twilio Signature: abc"], id="space-in-name"),
        pytest.param(["X-Twilio-Signature : abc"], id="space-before-colon"),
        pytest.param(["X-Long: " + "a" * 200_000], id="huge-header"),
        pytest.param([f"X-H{i}: v" for i in range(500)], id="many-headers"),
    ],
)
async def test_malformed_and_injected_headers_are_refused_without_reflection(
    live_gateway: int, header_lines: list[str]
) -> None:
    body = b"MessageSid=SM1&From=whatsapp%3A%2B15551230000&Body=hi"
    payload = _request(
        "POST",
        WHATSAPP_PATH,
        [
            *header_lines,
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ],
        body,
    )
    responses = await exchange(live_gateway, payload)
    assert responses, "the server must answer, not hang up silently"
    assert len(responses) == 1
    _assert_safe(responses[0])
    assert 400 <= responses[0].status < 500


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/tickets/TKT-0001%0d%0aX-Injected:%201?email=a%40example.com",
        "/api/v1/tickets/TKT-0001?email=a%40example.com%0d%0aSet-Cookie:%20pwned=1",
        "/api/v1/tickets/../../../../etc/passwd?email=a%40example.com",
        "/api/v1/tickets/..%2f..%2fetc%2fpasswd?email=a%40example.com",
        "/static/css/..%2f..%2f..%2fcore%2fsettings.py",
        "/static/js/../../app.py",
        "/support/%0d%0aLocation:%20http://evil.example",
        "//evil.example/%2e%2e",
    ],
)
async def test_response_splitting_and_traversal_through_the_url_fail(live_gateway: int, target: str) -> None:
    (response,) = await exchange(live_gateway, _request("GET", target, ["Connection: close"]))
    _assert_safe(response)
    assert response.status in (400, 404, 422), response.raw[:300]
    assert b"root:" not in response.body and b"BaseSettings" not in response.body
    assert not any("evil.example" in v for v in response.header("location"))


async def test_request_smuggling_shapes_are_refused(live_gateway: int) -> None:
    smuggled = _request("GET", "/api/v1/metrics/channels", ["Connection: close"])
    shapes = {
        "CL and TE": _request(
            "POST",
            FORM_PATH,
            ["Content-Type: application/json", "Content-Length: 4", "Transfer-Encoding: chunked"],
            b"0\r\n\r\n" + smuggled,
        ),
        "two CL": _request(
            "POST", FORM_PATH, ["Content-Type: application/json", "Content-Length: 2", "Content-Length: 40"], b"{}"
        ),
        "bad CL": _request("POST", FORM_PATH, ["Content-Type: application/json", "Content-Length: 2x"], b"{}"),
        "TE obfuscated": _request(
            "POST",
            FORM_PATH,
            ["Content-Type: application/json", "Transfer-Encoding: xchunked", "Content-Length: 2"],
            b"{}",
        ),
    }
    for name, payload in shapes.items():
        responses = await exchange(live_gateway, payload)
        assert responses, name
        for response in responses:
            _assert_safe(response)
        # The smuggled GET must never be served as a request of its own after a refused one.
        assert not any(r.status == 200 and b"channels" in r.body for r in responses), name
        assert 400 <= responses[0].status < 500, (name, responses[0].raw[:300])


async def test_very_long_request_lines_are_refused_by_the_server(live_gateway: int) -> None:
    target = "/api/v1/metrics/channels?window_hours=1&pad=" + "a" * 1_000_000
    responses = await exchange(live_gateway, _request("GET", target, ["Connection: close"]))
    assert responses and all(r.status < 500 for r in responses)


async def test_a_spoofed_host_cannot_change_what_the_signature_covers(live_gateway: int, stack: SecurityStack) -> None:
    """With PUBLIC_BASE_URL set, a signature made for the attacker's Host/proto does not verify."""
    params = whatsapp_params(new_phone(), "hi there")
    body = httpx.QueryParams(params).__str__().encode()
    forged = stack.sign(params, base="http://evil.example")
    payload = (
        f"POST {WHATSAPP_PATH} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Proto: http\r\n"
        f"X-Forwarded-Host: evil.example\r\nX-Twilio-Signature: {forged}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    (response,) = await exchange(live_gateway, payload)
    assert response.status == 403, response.raw[:300]
