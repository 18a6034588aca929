"""The official Gmail v1 client for the support mailbox, shared by the gateway and the activities."""

from __future__ import annotations

import threading
from typing import Any

import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from core.settings import Settings

_credentials_lock = threading.Lock()
_credentials: dict[tuple[str, str, str], Credentials] = {}


def gmail_credentials(settings: Settings) -> Credentials:
    """OAuth user credentials for the support mailbox, shared so the access token is reused."""
    refresh = settings.gmail_refresh_token.get_secret_value() if settings.gmail_refresh_token else ""
    key = (settings.gmail_token_uri, settings.gmail_client_id or "", refresh)
    with _credentials_lock:
        creds = _credentials.get(key)
        if creds is None:
            creds = Credentials(  # type: ignore[no-untyped-call]  # google-auth leaves __init__ unannotated
                token=None,
                refresh_token=refresh,
                client_id=settings.gmail_client_id,
                client_secret=settings.gmail_client_secret.get_secret_value() if settings.gmail_client_secret else None,
                token_uri=settings.gmail_token_uri,
            )
            _credentials[key] = creds
        return creds


def gmail_service(settings: Settings, *, timeout: float) -> Any:
    """A Gmail client (bundled discovery document, nothing fetched) on its own HTTP connection.

    httplib2 is not thread-safe, so each call site builds its own service (cheap with static
    discovery) with a socket timeout that suits its deadline; the credentials are shared.
    """
    http = google_auth_httplib2.AuthorizedHttp(gmail_credentials(settings), http=httplib2.Http(timeout=timeout))
    options = {"api_endpoint": settings.gmail_api_base_url} if settings.gmail_api_base_url else None
    return build("gmail", "v1", http=http, client_options=options, static_discovery=True, cache_discovery=False)
