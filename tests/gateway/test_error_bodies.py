"""Error answers a person can act on (issue 12): whole-body problems, wrong media type, the favicon."""

from __future__ import annotations

import asyncio
import struct

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from core.settings import Settings
from gateway.app import create_app

FORM = "/api/v1/support/form"


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) <= {"error", "message", "detail"} and {"error", "message"} <= set(body), body
    return body  # type: ignore[no-any-return]


async def test_an_empty_body_says_so(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"content-type": "application/json"}):
        response = await http.post(FORM, content=b"", headers=headers)
        assert response.status_code == 422, response.text
        body = _error(response)
        assert body["message"] == "the request body is empty: send a JSON object"
        assert body["detail"] == [{"field": "body", "message": body["message"]}]


async def test_malformed_json_says_what_and_where(http: httpx.AsyncClient) -> None:
    response = await http.post(FORM, content=b'{"name": "Ann", ', headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body = _error(response)
    assert (
        body["message"]
        == "the request body is not valid JSON: Expecting property name enclosed in double quotes at character 16"
    )
    assert body["detail"] == [{"field": "body", "message": body["message"]}]


async def test_json_that_is_not_an_object_is_named(http: httpx.AsyncClient) -> None:
    response = await http.post(FORM, json=["a", "list"])
    assert response.status_code == 422, response.text
    assert _error(response)["message"] == "the request body must be a JSON object"


async def test_a_form_encoded_body_on_a_json_endpoint_is_415(http: httpx.AsyncClient) -> None:
    response = await http.post(FORM, data={"name": "Ann", "email": "ann@example.com"})
    assert response.status_code == 415, response.text
    assert _error(response) == {
        "error": "unsupported_media_type",
        "message": "this endpoint takes JSON (Content-Type: application/json), not application/x-www-form-urlencoded",
    }


async def test_field_errors_name_the_fields_in_the_message(http: httpx.AsyncClient) -> None:
    response = await http.post(FORM, json={"name": "Ann", "email": "nope", "subject": "Hi there"})
    assert response.status_code == 422
    body = _error(response)
    fields = [d["field"] for d in body["detail"]]  # type: ignore[union-attr]
    assert {"email", "category", "message"} <= set(fields)
    assert body["message"] == "invalid fields: " + ", ".join(dict.fromkeys(fields))


async def test_the_favicon_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-icon"
    # An ICO directory with one image (reserved 0, type 1, count 1).
    assert response.content[:6] == b"\x00\x00\x01\x00\x01\x00"


# ----------------------------------------------------------------------------- outages are 503, never 500

PUBLIC = "http://gateway.test"
TOKEN = "test-auth-token"
VALID_FORM = {
    "name": "Ann Lee",
    "email": "ann.lee@example.com",
    "subject": "Board export",
    "category": "how_to",
    "message": "How do I export my board to CSV?",
}


async def _starting_up_postgres() -> tuple[asyncio.Server, int]:
    """A server that answers like PostgreSQL while it starts: FATAL 57P03 to every connection."""

    def field(code: bytes, text: str) -> bytes:
        return code + text.encode() + b"\0"

    fields = (
        field(b"S", "FATAL")
        + field(b"V", "FATAL")
        + field(b"C", "57P03")
        + field(b"M", "the database system is starting up")
        + b"\0"
    )
    refusal = b"E" + struct.pack("!I", 4 + len(fields)) + fields

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = struct.unpack("!I", await reader.readexactly(4))[0]
                body = await reader.readexactly(length - 4)
                if body[:4] == struct.pack("!I", 80877103):  # SSLRequest: no TLS here
                    writer.write(b"N")
                    await writer.drain()
                    continue
                writer.write(refusal)  # the StartupMessage
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_postgresql_starting_up_is_503_with_retry_after_not_500(settings: Settings) -> None:
    server, port = await _starting_up_postgres()
    down = settings.model_copy(
        update={
            "database_url": SecretStr(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/crm"),
            "twilio_auth_token": SecretStr(TOKEN),
            "public_base_url": PUBLIC,
        }
    )
    status_params = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/api/v1/webhooks/whatsapp/status", status_params)
    try:
        async with LifespanManager(create_app(down)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
                form = await http.post(FORM, json=VALID_FORM)
                status = await http.post(
                    "/api/v1/webhooks/whatsapp/status",
                    data=status_params,
                    headers={"X-Twilio-Signature": signature},
                )
    finally:
        server.close()
        await server.wait_closed()
    for response in (form, status):
        assert response.status_code == 503, response.text
        assert _error(response) == {
            "error": "service_unavailable",
            "message": "the database is unavailable; retry later",
        }
        assert int(response.headers["retry-after"]) > 0
