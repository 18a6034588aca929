"""Per-sender rate limits: a flood from one sender is refused with 429; other senders are unaffected."""

from __future__ import annotations

import uuid

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from core.settings import Settings
from gateway.app import create_app

PUBLIC = "http://gateway.test"
TOKEN = "e" * 32


def _form(email: str) -> dict[str, str]:
    return {
        "name": "Flo",
        "email": email,
        "subject": "Help please",
        "category": "other",
        "message": "This is a question about boards.",
    }


def _whatsapp(phone: str) -> dict[str, object]:
    params = {"MessageSid": f"SM{uuid.uuid4().hex}", "From": f"whatsapp:{phone}", "Body": "hi there"}
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/api/v1/webhooks/whatsapp", params)
    return {"url": "/api/v1/webhooks/whatsapp", "data": params, "headers": {"X-Twilio-Signature": signature}}


async def test_a_flooding_sender_gets_429_and_others_are_still_served(settings: Settings) -> None:
    limited = settings.model_copy(
        update={
            "rate_limit_web_form": "2/minute",
            "rate_limit_whatsapp": "3/minute",
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_account_sid": "AC" + "1" * 32,
            "public_base_url": PUBLIC,
        }
    )
    async with LifespanManager(create_app(limited)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            flood = f"flood.{uuid.uuid4().hex[:6]}@example.com"
            codes = [(await http.post("/api/v1/support/form", json=_form(flood))).status_code for _ in range(3)]
            assert codes == [201, 201, 429]
            refused = await http.post("/api/v1/support/form", json=_form(flood.upper()))  # same sender, any case
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"] == "rate_limited" and "try again" in refused.json()["message"]
            other = await http.post("/api/v1/support/form", json=_form(f"calm.{uuid.uuid4().hex[:6]}@example.com"))
            assert other.status_code == 201

            phone, calm = f"+1555{uuid.uuid4().int % 10**7:07d}", f"+1556{uuid.uuid4().int % 10**7:07d}"
            statuses = [(await http.post(**_whatsapp(phone))).status_code for _ in range(4)]  # type: ignore[arg-type]
            assert statuses == [200, 200, 200, 429]
            assert (await http.post(**_whatsapp(calm))).status_code == 200  # type: ignore[arg-type]


async def test_failed_ticket_lookups_are_limited_per_client_address(settings: Settings) -> None:
    """Walking ticket numbers for an email gets an address 429; the right answer stays open to others."""
    limited = settings.model_copy(update={"rate_limit_ticket_lookup_failures": "3/minute"})
    app = create_app(limited)
    async with LifespanManager(app) as manager:
        prober = httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 40000))
        owner = httpx.ASGITransport(app=manager.app, client=("198.51.100.9", 40000))
        async with (
            httpx.AsyncClient(transport=prober, base_url=PUBLIC) as attacker,
            httpx.AsyncClient(transport=owner, base_url=PUBLIC) as customer,
        ):
            email = f"owner.{uuid.uuid4().hex[:6]}@example.com"
            created = await customer.post("/api/v1/support/form", json=_form(email))
            assert created.status_code == 201
            ticket = created.json()["ticket_id"]
            number = int(ticket.removeprefix("TKT-"))

            # Successful look-ups never count: a customer's status page polls.
            for _ in range(5):
                assert (await customer.get(f"/api/v1/tickets/{ticket}", params={"email": email})).status_code == 200

            guesses = [f"TKT-{n:04d}" for n in range(number + 1000, number + 1003)]
            codes = [(await attacker.get(f"/api/v1/tickets/{g}", params={"email": email})).status_code for g in guesses]
            assert codes == [404, 404, 404]
            refused = await attacker.get(f"/api/v1/tickets/{ticket}", params={"email": email})
            assert refused.status_code == 429  # even the right guess, once the address used its failures up
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"] == "rate_limited"
            # A look-up without an email counts as a failure too; other addresses are unaffected.
            assert (await customer.get(f"/api/v1/tickets/{ticket}")).status_code == 404
            assert (await customer.get(f"/api/v1/tickets/{ticket}", params={"email": email})).status_code == 200
