"""`POST /api/v1/tickets/{id}/rating`: the gateway's half of the rating contract, on real services.

The gateway (ASGI, its real lifespan) talks to the session's real Temporal server and PostgreSQL.
The conversation on the other side is `RatingContractWorkflow`, a test-only workflow implementing
the same update (`RATE_UPDATE`, `Rating` in, `RatingOutcome` out) with a validator that refuses
with the reason it is told to: a contract test of the gateway (what it sends, how it maps every
answer), independent of when ConversationWorkflow asks. The end-to-end run through the real
ConversationWorkflow is in tests/gateway/test_ticket_rating_e2e.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.settings import Settings
from core.ticket_links import rating_link, ticket_link
from core.vocabulary import Channel
from gateway.app import create_app
from tests.gateway import rating_helpers
from tests.gateway.rating_helpers import ClosedTicket, NoRatingWorkflow, RatingContractWorkflow, contract_worker
from workflows.contracts import Rating

SECRET = "test-rating-link-secret-0123456789abcdef"
PUBLIC = "http://support.example"


@dataclass
class RatingApi:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
async def rating_api(
    settings: Settings, client: Client, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[RatingApi]:
    own = settings.model_copy(
        update={
            "temporal_task_queue": f"rating-contract-{uuid.uuid4().hex[:8]}",
            "ticket_link_secret": SecretStr(SECRET),
            "public_base_url": PUBLIC,
            "rate_limit_ticket_lookup_failures": "5/minute",
        }
    )
    async with contract_worker(client, own.temporal_task_queue), LifespanManager(create_app(own)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
            yield RatingApi(http, client, own, sessions)


async def closed_ticket(api: RatingApi, *, channel: Channel = "web_form", refusal: str | None = None) -> ClosedTicket:
    return await rating_helpers.closed_ticket(
        api.client,
        api.sessions,
        task_queue=api.settings.temporal_task_queue,
        secret=SECRET,
        channel=channel,
        refusal=refusal,
    )


async def test_a_good_rating_is_stored_once_and_thanked(rating_api: RatingApi) -> None:
    ticket = await closed_ticket(rating_api)
    body = {"score": 5, "comment": "  Quick and clear, thanks!\nWould ask again.  "}
    rated = await rating_api.http.post(ticket.path, json=body, headers=ticket.auth)
    assert rated.status_code == 200, rated.text
    assert rated.json() == {
        "ticket_id": ticket.number,
        "score": 5,
        "reopened": False,
        "message": "Thank you! Your rating helps us improve.",
    }
    (received,) = await ticket.handle.query(RatingContractWorkflow.received)
    # Trimmed; the page's own buttons are the default `via`.
    assert received == Rating(score=5, comment="Quick and clear, thanks!\nWould ask again.", via="ticket_page")

    # Once only: the workflow's refusal is a 409 with its word and a sentence for the customer.
    again = await rating_api.http.post(ticket.path, json={"score": 1}, headers=ticket.auth)
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == {"reason": "already_rated", "workflow_reason": "already_rated"}
    assert again.json()["message"] == "This conversation has already been rated. Thank you!"
    assert len(await ticket.handle.query(RatingContractWorkflow.received)) == 1

    # The workflow has ended (the rating window closed): 410.
    await ticket.handle.signal(RatingContractWorkflow.finish)
    assert await ticket.handle.result() == 1
    gone = await rating_api.http.post(ticket.path, json={"score": 4}, headers=ticket.auth)
    assert gone.status_code == 410, gone.text
    assert gone.json()["error"] == "gone" and "time to rate" in gone.json()["message"]


async def test_a_low_rating_from_an_email_link_reopens_and_says_a_person_follows_up(rating_api: RatingApi) -> None:
    # An email ticket: its customer reaches the page through the rating email's link.
    ticket = await closed_ticket(rating_api, channel="email")
    link = rating_link(PUBLIC, ticket.number, ticket.token, 1)
    assert link == f"{ticket_link(PUBLIC, ticket.number, ticket.token)}&score=1"
    body = {"score": 1, "comment": "It did not answer my question.", "via": "email_link"}
    rated = await rating_api.http.post(ticket.path, json=body, headers=ticket.auth)
    assert rated.status_code == 200, rated.text
    assert rated.json()["reopened"] is True
    assert rated.json()["message"] == "Sorry to hear that — a person from our team will follow up."
    (received,) = await ticket.handle.query(RatingContractWorkflow.received)
    assert received.via == "email_link" and received.comment == "It did not answer my question."


@pytest.mark.parametrize(
    ("refusal", "reason", "message"),
    [
        ("not_closed", "not_closed", "This conversation is still open: you can rate it once it is closed."),
        ("not_waiting", "not_waiting", "This conversation cannot be rated any more."),
        # A reason the gateway does not know (an older workflow, say): not waiting, text kept.
        ("Update handler for 'rate_conversation' expected", "not_waiting", None),
    ],
)
async def test_the_workflows_refusals_are_409_with_a_reason(
    rating_api: RatingApi, refusal: str, reason: str, message: str | None
) -> None:
    ticket = await closed_ticket(rating_api, refusal=refusal)
    refused = await rating_api.http.post(ticket.path, json={"score": 3}, headers=ticket.auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == {"reason": reason, "workflow_reason": refusal}
    if message:
        assert refused.json()["message"] == message
    await ticket.handle.signal(RatingContractWorkflow.finish)
    assert await ticket.handle.result() == 0


async def test_a_conversation_without_the_rating_update_is_not_waiting(rating_api: RatingApi) -> None:
    """A conversation whose workflow has no rating update (older code) is refused with 409, not a 5xx."""
    ticket = await closed_ticket(rating_api)
    await ticket.handle.signal(RatingContractWorkflow.finish)
    await ticket.handle.result()
    older = await rating_api.client.start_workflow(
        NoRatingWorkflow.run,
        id=ticket.handle.id,  # the same workflow id the conversation row names
        task_queue=rating_api.settings.temporal_task_queue,
        execution_timeout=timedelta(minutes=10),
    )
    refused = await rating_api.http.post(ticket.path, json={"score": 3}, headers=ticket.auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["reason"] == "not_waiting"
    await older.signal(NoRatingWorkflow.finish)


async def test_bad_fields_are_422_and_nothing_reaches_the_workflow(rating_api: RatingApi) -> None:
    ticket = await closed_ticket(rating_api)
    for body in (
        {},
        {"score": 0},
        {"score": 6},
        {"score": "four"},
        {"score": 4, "comment": "x" * 1001},
        {"score": 4, "comment": "bell \x07 character"},
        {"score": 4, "via": "whatsapp"},  # WhatsApp ratings are replies in the chat, never this endpoint
    ):
        invalid = await rating_api.http.post(ticket.path, json=body, headers=ticket.auth)
        assert invalid.status_code == 422, (body, invalid.text)
        assert invalid.json()["error"] == "validation_error"
    assert await ticket.handle.query(RatingContractWorkflow.received) == []
    # The longest comment, and an empty one (no comment), are fine.
    rated = await rating_api.http.post(ticket.path, json={"score": 4, "comment": "x" * 1000}, headers=ticket.auth)
    assert rated.status_code == 200, rated.text
    blank = await closed_ticket(rating_api)
    rated = await rating_api.http.post(blank.path, json={"score": 3, "comment": "   "}, headers=blank.auth)
    assert rated.status_code == 200, rated.text
    assert (await blank.handle.query(RatingContractWorkflow.received))[0].comment is None


async def test_tokens_are_checked_and_failures_counted_like_the_other_ticket_endpoints(
    rating_api: RatingApi, settings: Settings
) -> None:
    ticket = await closed_ticket(rating_api)
    missing = await rating_api.http.post(ticket.path, json={"score": 4})
    assert missing.status_code == 403 and missing.json()["detail"]["reason"] == "missing_token"
    other = await closed_ticket(rating_api)
    assert other.token != ticket.token
    forged = await rating_api.http.post(ticket.path, json={"score": 4}, headers=other.auth)
    assert forged.status_code == 403 and forged.json()["detail"]["reason"] == "invalid_token"
    unknown = await rating_api.http.post("/api/v1/tickets/TKT-99999999/rating", json={"score": 4}, headers=ticket.auth)
    assert unknown.status_code == 403 and unknown.json()["detail"]["reason"] == "invalid_token"
    assert (await rating_api.http.post("/api/v1/tickets/nope/rating", json={"score": 4})).status_code == 422
    assert await ticket.handle.query(RatingContractWorkflow.received) == []

    # Without TICKET_LINK_SECRET every link is refused (fail closed).
    unset = rating_api.settings.model_copy(update={"ticket_link_secret": None})
    async with LifespanManager(create_app(unset)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            disabled = await http.post(ticket.path, json={"score": 4}, headers=ticket.auth)
    assert disabled.status_code == 403 and disabled.json()["detail"]["reason"] == "links_disabled"

    # Wrong tokens count against the address's failed look-ups (5/minute here): then even the right one is 429.
    async with LifespanManager(create_app(rating_api.settings)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            codes = [
                (await http.post(ticket.path, json={"score": 4}, headers=other.auth)).status_code for _ in range(6)
            ]
            refused = await http.post(ticket.path, json={"score": 4}, headers=ticket.auth)
    assert codes == [403] * 5 + [429]
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    await ticket.handle.signal(RatingContractWorkflow.finish)
    await other.handle.signal(RatingContractWorkflow.finish)


async def test_temporal_down_is_503(rating_api: RatingApi) -> None:
    ticket = await closed_ticket(rating_api)
    down = rating_api.settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    async with LifespanManager(create_app(down)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            unavailable = await http.post(ticket.path, json={"score": 4}, headers=ticket.auth)
    assert unavailable.status_code == 503, unavailable.text
    assert "Retry-After" in unavailable.headers
    await ticket.handle.signal(RatingContractWorkflow.finish)
