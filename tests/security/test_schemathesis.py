"""Schemathesis against the gateway's own OpenAPI schema, in-process (ASGI) on the real services.

Three runs, each bounded so the file takes about a minute and a half:

* every operation, positive and negative data: no 5xx, documented status codes, documented content
  types, bodies that match the documented schemas, and every error a JSON `{error, message}`;
* the WhatsApp webhooks with Twilio's form fields and a *valid* signature on every generated
  request, so the fuzzing gets past the signature check into the parser, the rate limiter, Kafka and
  PostgreSQL (unsigned, they can only ever answer 403);
* a stateful run that follows the link from a submitted web form to its ticket.

The OpenAPI document is the product's (`create_app(...).openapi()`); what the tests add to their own
copy is marked: the form-body description of Twilio's webhooks and the form → ticket link.
"""

from __future__ import annotations

import copy
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine
from twilio.request_validator import RequestValidator

from core.kafka import ensure_topics
from core.settings import Settings
from crm import db
from gateway.app import create_app
from workers.embedded import EmbeddedPostgres, free_port

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (a dev dependency)")

from hypothesis import HealthCheck, Phase  # noqa: E402  (hypothesis comes with schemathesis)
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402
from schemathesis import checks  # noqa: E402
from schemathesis.python import asgi as schemathesis_asgi  # noqa: E402

# Hypothesis keeps caches in ./.hypothesis by default; nothing of this suite belongs in the work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "crm-fte-hypothesis")

TOKEN = "schemathesis-twilio-token".ljust(32, "0")
GMAIL_PUSH_TOKEN = "schemathesis-pubsub-push-token"
MAILBOX = "support@techcorp.example"
# The host the ASGI test client sends; PUBLIC_BASE_URL is set to it so signatures line up.
PUBLIC = f"http://{schemathesis_asgi.HOST}"
FORM = "/api/v1/support/form"
TICKET = "/api/v1/tickets/{ticket_id}"
WHATSAPP = "/api/v1/webhooks/whatsapp"
STATUS = "/api/v1/webhooks/whatsapp/status"
GMAIL = "/api/v1/webhooks/gmail"
# Per operation (about 50 of them; each example is a real request through the gateway to PostgreSQL and
# the broker). The validly signed webhooks, the run that gets past the signature check into the
# parsers, get more.
MAX_EXAMPLES = 40
SIGNED_EXAMPLES = 100
# Time is spent on generation; a failure is reported with a reproducible curl, unshrunk.
FAST = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)


def json_error_reason(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx is the gateway's JSON error: `{"error": str, "message": str}`, no traceback."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"{response.status_code} is {content_type!r}, not JSON"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str), (
        f"{response.status_code} body is not {{error, message}}: {response.text[:200]}"
    )
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text[:300]


CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    json_error_reason,
]


def _product_openapi() -> dict[str, Any]:
    # Building the app opens nothing (resources live in the lifespan); defaults, no environment read.
    return create_app(Settings.model_construct()).openapi()


def _with_form_to_ticket_link(raw: dict[str, Any]) -> dict[str, Any]:
    """Test-side: the OpenAPI link a submitted form's ticket is read by (unless the product declares it)."""
    raw = copy.deepcopy(raw)
    created = raw["paths"][FORM]["post"]["responses"]["201"]
    if not created.get("links"):
        created["links"] = {
            "GetTicket": {
                "operationId": raw["paths"][TICKET]["get"]["operationId"],
                "parameters": {"ticket_id": "$response.body#/ticket_id", "email": "$request.body#/email"},
            }
        }
    return raw


def _with_twilio_form_bodies(raw: dict[str, Any]) -> dict[str, Any]:
    """Test-side: Twilio's form fields for the two webhooks (the product schema declares no body)."""
    raw = copy.deepcopy(raw)
    text: dict[str, Any] = {"type": "string", "maxLength": 300}

    def body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
        return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}

    raw["paths"][WHATSAPP]["post"].setdefault(
        "requestBody",
        body(
            {
                "MessageSid": {"type": "string", "pattern": "^SM[0-9a-f]{32}$"},
                "From": {"type": "string", "pattern": r"^whatsapp:\+1555[0-9]{7}$"},
                "To": text,
                "Body": text,
                "NumMedia": {"type": "string", "pattern": "^[0-9]{1,2}$"},
                "MediaUrl0": text,
                "MediaContentType0": text,
                "ProfileName": text,
                "WaId": text,
            },
            ["MessageSid", "From"],
        ),
    )
    statuses = ["queued", "sending", "sent", "failed", "undelivered", "delivered", "read"]
    raw["paths"][STATUS]["post"].setdefault(
        "requestBody",
        body({"MessageSid": text, "MessageStatus": {"type": "string", "enum": statuses}, "ErrorCode": text}, []),
    )
    if GMAIL in raw["paths"]:  # a Pub/Sub push envelope (`data` is base64 of Gmail's notification)
        message = {
            "type": "object",
            "properties": {"data": text, "messageId": text, "publishTime": text, "attributes": {"type": "object"}},
            "required": ["data"],
        }
        envelope = {"type": "object", "properties": {"message": message, "subscription": text}, "required": ["message"]}
        raw["paths"][GMAIL]["post"].setdefault(
            "requestBody", {"required": True, "content": {"application/json": {"schema": envelope}}}
        )
    return raw


schema = schemathesis.openapi.from_dict(_with_form_to_ticket_link(_product_openapi()))
signed_schema = schemathesis.openapi.from_dict(_with_twilio_form_bodies(_product_openapi())).include(
    path_regex="^/api/v1/webhooks/"
)


@pytest.fixture(scope="module")
async def own_database(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database of its own on the session's PostgreSQL: the fuzzer sees only what it created.

    (In the shared database it would find other tests' open escalations, whose workers are gone, and
    every resolve of one waits 30 s for a worker before a legitimate 503.)
    """
    name = f"crm_fte_schemathesis_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host=postgres.host, port=postgres.port, user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = postgres.url(name)
        await db.upgrade_async(url)
        yield url
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def gateway_settings(settings: Settings, own_database: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={
            "database_url": SecretStr(own_database),
            # Nobody consumes this topic: the web form's messages stop at Kafka.
            "kafka_topic_inbound": f"test.schemathesis.{tag}",
            "kafka_topic_dead_letter": f"test.schemathesis.dlq.{tag}",
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_account_sid": "AC" + "5" * 32,
            "public_base_url": PUBLIC,
            # Gmail pushes authenticated by an (opted-in) static token; Google itself unreachable.
            "gmail_user_email": MAILBOX,
            "gmail_client_id": "schemathesis-client",
            "gmail_refresh_token": SecretStr("schemathesis-refresh-token"),
            "gmail_pubsub_static_token": SecretStr(GMAIL_PUSH_TOKEN),
            "gmail_api_base_url": f"http://127.0.0.1:{free_port()}",
            "gmail_token_uri": f"http://127.0.0.1:{free_port()}/token",
            # The walks submit the same generated addresses again and again: a limiter that trips
            # midway makes Hypothesis replay a different machine (FlakyStrategyDefinition). The
            # limits have their own tests; here they stay out of the way.
            "rate_limit_web_form": "10000/minute",
        }
    )
    await ensure_topics(own)
    return own


@pytest.fixture(scope="module")
async def agent_headers(gateway_settings: Settings) -> dict[str, str]:
    """A human agent's API key (both scopes), so the agent API is fuzzed past its 401."""
    try:
        from gateway.agents import create_api_key
    except ImportError:  # the agent API is not part of this build
        return {}
    engine = create_async_engine(gateway_settings.database_dsn)
    try:
        async with db.transaction(db.create_sessionmaker(engine)) as session:
            _, key = await create_api_key(session, name=f"schemathesis {uuid.uuid4().hex[:8]}")
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gateway_app(gateway_settings: Settings) -> Iterator[FastAPI]:
    """The gateway on the session's PostgreSQL, Kafka and Temporal; Schemathesis runs its lifespan."""
    app = create_app(gateway_settings)
    yield app
    schemathesis_asgi.shutdown_lifespans()


def test_the_product_schema_covers_every_route_the_gateway_serves() -> None:
    """Schemathesis only fuzzes what the document lists: every public API route must be in it."""
    app = create_app(Settings.model_construct())
    documented = set(_product_openapi()["paths"])
    served = {getattr(route, "path", "") for route in app.routes if getattr(route, "include_in_schema", False)}
    assert served <= documented
    assert {FORM, TICKET, WHATSAPP, STATUS} <= documented


@schema.parametrize()
@FAST
def test_every_operation_conforms_to_the_schema(case: Any, gateway_app: FastAPI, agent_headers: dict[str, str]) -> None:
    # A copy: Schemathesis adds the request's own headers to the mapping it is given.
    case.call_and_validate(app=gateway_app, headers=dict(agent_headers), checks=CONFORMANCE)


@signed_schema.parametrize()
@hypothesis_settings(FAST, max_examples=SIGNED_EXAMPLES)
def test_signed_webhooks_never_5xx(case: Any, gateway_app: FastAPI) -> None:
    """Crash hunting past the authentication (documented statuses are the next test's job)."""
    if case.operation.path == GMAIL:
        headers = {"Authorization": f"Bearer {GMAIL_PUSH_TOKEN}"}
    else:
        params = {str(k): str(v) for k, v in case.body.items()} if isinstance(case.body, dict) else {}
        headers = {
            "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{case.formatted_path}", params)
        }
    case.call_and_validate(app=gateway_app, headers=headers, checks=[checks.not_a_server_error, json_error_reason])


def test_every_error_the_gateway_gives_is_documented(gateway_app: FastAPI) -> None:
    """The errors clients meet most (bad body, too large, unsigned, signed but malformed) are in the schema."""
    documented = {
        (method.upper(), path): {int(code) for code in op["responses"] if code.isdigit()}
        for path, ops in _product_openapi()["paths"].items()
        for method, op in ops.items()
    }
    too_big = b"x" * (16 * 1024 * 1024)
    form_json = {"content-type": "application/json"}
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    triggers: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", FORM, {"data": b"\xff{", "headers": form_json}),
        ("POST", FORM, {"data": too_big, "headers": form_json}),
        ("GET", TICKET.format(ticket_id="TKT-0001"), {"params": {"email": "not-an-email"}}),
        ("GET", TICKET.format(ticket_id="TKT-0001"), {"params": {"email": "nobody@example.com"}}),
    ]
    for path in (WHATSAPP, STATUS):
        empty_signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", {})
        triggers += [
            ("POST", path, {"data": b"", "headers": urlencoded}),
            ("POST", path, {"data": b"", "headers": {**urlencoded, "X-Twilio-Signature": empty_signature}}),
            ("POST", path, {"data": too_big, "headers": urlencoded}),
        ]
    for path in {p for (_, p) in documented if p.startswith("/api/v1/webhooks/")} - {WHATSAPP, STATUS}:
        pushed = {**form_json, "Authorization": f"Bearer {GMAIL_PUSH_TOKEN}"}
        triggers += [
            ("POST", path, {"data": b"{}", "headers": form_json}),
            ("POST", path, {"data": b"{}", "headers": pushed}),
            ("POST", path, {"data": too_big, "headers": form_json}),
        ]
    undocumented = []
    with schemathesis_asgi.get_client(gateway_app) as http:
        for method, url, kwargs in triggers:
            response = http.request(method, url, **kwargs)
            assert response.status_code < 500, (method, url, response.status_code, response.text[:200])
            template = TICKET if url.startswith("/api/v1/tickets/") else url
            if response.status_code not in documented[(method, template)]:
                undocumented.append(f"{method} {template} -> {response.status_code} ({response.text[:80]})")
    assert not undocumented, "answers missing from the OpenAPI responses:\n" + "\n".join(sorted(set(undocumented)))


def test_stateful_form_then_ticket(gateway_app: FastAPI, agent_headers: dict[str, str]) -> None:
    """Submit forms, then follow the link to each ticket: it must exist for the email that filed it."""
    # Only the two linked operations: the stateless tests above fuzz every endpoint, and with all of them
    # in the machine its fixed-seed walk may never take the form → ticket link.
    linked = schema.include(path_regex=r"^/api/v1/(support/form|tickets/\{ticket_id\})$")
    linked.app = gateway_app
    machine = linked.as_state_machine()
    tickets_found: list[str] = []

    class FormThenTicket(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": dict(agent_headers)}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            if case.operation.path == TICKET and response.status_code == 200:
                tickets_found.append(response.json()["ticket_id"])
            case.validate_response(
                response, checks=[*CONFORMANCE, checks.ensure_resource_availability], transport_kwargs=kwargs or None
            )

    FormThenTicket.run(
        settings=hypothesis_settings(
            max_examples=25,
            stateful_step_count=5,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
    )
    # The link was followed: tickets created by the form were read back by the email that filed them.
    assert tickets_found, "no GET of a ticket created by a submitted form succeeded"
