"""Verifying a Pub/Sub push's OIDC ID token, with Google's signing certificates cached.

The push carries an ID token signed by Google for the push subscription's service account. It is
verified with google-auth against Google's certificates (URL configurable), and its issuer,
audience, `email` and `email_verified` are checked. The certificates are kept for their
`Cache-Control: max-age` and refetched early when a token names a key id they lack.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth import exceptions as google_auth_exceptions
from google.auth import transport
from google.oauth2 import id_token

from core.errors import ServiceUnavailable
from core.logging import get_logger
from core.settings import Settings

log = get_logger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
CERTS_HTTP_TIMEOUT_SECONDS = 3.0
# Google serves its certs with Cache-Control max-age (hours); keys are published before use.
CERTS_DEFAULT_MAX_AGE_SECONDS = 3600.0
CERTS_MAX_AGE_CAP_SECONDS = 6 * 3600.0
# A token signed by a key id we have not seen refetches the certs, at most this often.
CERTS_REFETCH_FLOOR_SECONDS = 5.0
JWT_CLOCK_SKEW_SECONDS = 10


class TokenRejected(Exception):
    """The token is not valid for this endpoint; `reason` and `fields` say why (for the log, not the caller)."""

    def __init__(self, reason: str, **fields: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


@dataclass
class _CachedCerts:
    response: transport.Response
    kids: frozenset[str]
    fetched_at: float
    expires_at: float


@dataclass(frozen=True)
class _StoredResponse(transport.Response):
    _status: int
    _headers: Mapping[str, str]
    _data: bytes

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class CertsCache(transport.Request):
    """A google-auth transport that caches GETs of signing-certificate URLs (thread-safe).

    `id_token.verify_token` fetches the certs on every call; this keeps them for the response's
    `Cache-Control: max-age` (capped), and drops them early when a token names an unknown key id,
    so a key rotation is picked up within seconds while bad tokens cannot make us refetch in a loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _CachedCerts] = {}

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        now = time.monotonic()
        if method == "GET" and body is None:
            with self._lock:
                entry = self._entries.get(url)
            if entry is not None and entry.expires_at > now:
                return entry.response
        http = httplib2.Http(timeout=CERTS_HTTP_TIMEOUT_SECONDS)
        try:
            fetched = google_auth_httplib2.Request(http)(url, method=method, body=body, headers=headers)
        finally:
            http.close()
        response = _StoredResponse(fetched.status, dict(fetched.headers), bytes(fetched.data))
        if method == "GET" and response.status == 200:
            kids = _key_ids(response.data)
            if kids is not None:
                max_age = _max_age(response.headers.get("cache-control", ""))
                with self._lock:
                    self._entries[url] = _CachedCerts(response, kids, now, now + max_age)
        return response

    def forget_if_unknown(self, url: str, kid: str | None) -> None:
        """Drop the cached certs of `url` if they lack `kid` and were fetched a while ago."""
        with self._lock:
            entry = self._entries.get(url)
            if (
                entry is not None
                and kid not in entry.kids
                and time.monotonic() - entry.fetched_at > CERTS_REFETCH_FLOOR_SECONDS
            ):
                del self._entries[url]


def _key_ids(data: bytes) -> frozenset[str] | None:
    try:
        certs = json.loads(data)
    except ValueError:
        return None
    if not isinstance(certs, dict):
        return None
    if "keys" in certs:  # a JWK Set
        return frozenset(str(k.get("kid")) for k in certs["keys"] if isinstance(k, dict))
    return frozenset(certs)  # {kid: PEM certificate}


def _max_age(cache_control: str) -> float:
    match = re.search(r"max-age=(\d+)", cache_control)
    seconds = float(match.group(1)) if match else CERTS_DEFAULT_MAX_AGE_SECONDS
    return min(max(seconds, 0.0), CERTS_MAX_AGE_CAP_SECONDS)


_certs_cache = CertsCache()


def _unverified_kid(token: str) -> str | None:
    header_b64 = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    except (binascii.Error, ValueError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return str(kid) if kid is not None else None


def verify_oidc(token: str, settings: Settings) -> None:
    """Verify a Pub/Sub push ID token (blocking: may fetch Google's certs); TokenRejected or 503."""
    certs_url = settings.gmail_pubsub_certs_url
    _certs_cache.forget_if_unknown(certs_url, _unverified_kid(token))
    try:
        claims = id_token.verify_token(
            token,
            _certs_cache,
            audience=settings.gmail_pubsub_audience,
            certs_url=certs_url,
            clock_skew_in_seconds=JWT_CLOCK_SKEW_SECONDS,
        )
    except google_auth_exceptions.TransportError as exc:
        log.warning("gmail.certs_unavailable", error=str(exc)[:200])
        raise ServiceUnavailable("could not fetch Google's signing certificates; retry later") from None
    except Exception as exc:  # signature, expiry, audience, malformed token: all the caller's fault
        raise TokenRejected("token_invalid", error=type(exc).__name__, detail=str(exc)[:200]) from exc
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise TokenRejected("issuer_mismatch", issuer=str(claims.get("iss"))[:100])
    expected = (settings.gmail_pubsub_service_account or "").strip().lower()
    if str(claims.get("email", "")).strip().lower() != expected:
        raise TokenRejected("service_account_mismatch", email=str(claims.get("email"))[:200])
    if claims.get("email_verified") is not True:
        raise TokenRejected("email_not_verified")
