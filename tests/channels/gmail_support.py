"""Test support for the Gmail channel: the Gmail fake plus Google's OAuth token endpoint.

Production code authenticates with the support mailbox's refresh token
(`google.oauth2.credentials.Credentials(token=None, refresh_token=..., token_uri=...)`), so the
official client first POSTs a refresh grant to `token_uri`. `GmailOAuthFake` serves that endpoint
next to the Gmail API (same server), so the whole production path - token refresh included - runs
against local HTTP.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.settings import Settings
from tests.fakes.gmail_fake import GmailFake
from tests.fakes.google_certs_fake import GoogleCertsFake

AUDIENCE = "https://crm.example.test/api/v1/webhooks/gmail"
PUSH_SERVICE_ACCOUNT = "gmail-push@crm-test.iam.gserviceaccount.com"
WATCH_TOPIC = "projects/crm-test/topics/gmail-push"


class GmailOAuthFake(GmailFake):
    """`GmailFake` that also answers OAuth refresh grants at `/token`, and can fail sends on demand."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("email_address", f"support-{uuid.uuid4().hex[:10]}@example.com")
        super().__init__(**kwargs)
        # GmailFake seeds its message ids from the clock, so two fakes started in the same second
        # hand out the same ids; tests share PostgreSQL and Kafka, where Gmail ids are dedupe keys.
        self._ids = itertools.count(0x1900000000000000 + secrets.randbelow(2**48) * 4096)
        self.client_id = "crm-fte-test.apps.googleusercontent.com"
        self.client_secret = "client-secret"
        self.refresh_token = f"1//refresh-{uuid.uuid4().hex}"
        # When set, messages.send answers with this HTTP status (Google's error JSON).
        self.send_status: int | None = None

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    def build_app(self) -> Starlette:
        app = super().build_app()
        app.router.routes.insert(0, Route("/token", self._token, methods=["POST"]))
        app.router.routes.insert(0, Route("/gmail/v1/users/{user_id}/messages/send", self._send_gate, methods=["POST"]))
        return app

    async def _token(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        if (
            form.get("grant_type") != ["refresh_token"]
            or form.get("refresh_token") != [self.refresh_token]
            or form.get("client_id") != [self.client_id]
            or form.get("client_secret") != [self.client_secret]
        ):
            return JSONResponse({"error": "invalid_grant", "error_description": "Bad Request"}, status_code=400)
        return JSONResponse(
            {
                "access_token": self.access_token,
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/gmail.modify",
            }
        )

    async def _send_gate(self, request: Request) -> Response:
        if self.send_status is not None:
            status = self.send_status
            return JSONResponse(
                {"error": {"code": status, "message": f"injected failure {status}", "status": "INJECTED"}},
                status_code=status,
            )
        return await self._send_json(request)


def gmail_settings(
    settings: Settings, gmail: GmailOAuthFake, certs: GoogleCertsFake | None = None, **extra: Any
) -> Settings:
    """The session settings with the Gmail channel configured against the fakes."""
    update: dict[str, Any] = {
        "gmail_user_email": gmail.email_address,
        "gmail_client_id": gmail.client_id,
        "gmail_client_secret": SecretStr(gmail.client_secret),
        "gmail_refresh_token": SecretStr(gmail.refresh_token),
        "gmail_token_uri": gmail.token_uri,
        "gmail_api_base_url": gmail.base_url,
        "gmail_watch_topic": WATCH_TOPIC,
    }
    if certs is not None:
        update |= {
            "gmail_pubsub_audience": AUDIENCE,
            "gmail_pubsub_service_account": PUSH_SERVICE_ACCOUNT,
            "gmail_pubsub_certs_url": certs.certs_url,
        }
    update |= extra
    return settings.model_copy(update=update)
