"""A local stand-in for Google's OAuth2 token-signing certificate endpoints, plus Pub/Sub push helpers.

Serves, for RSA keys generated at start (``cryptography``):

* ``GET /oauth2/v3/certs`` - JWK Set (``{"keys": [{kty, alg, use, kid, n, e}]}``)
* ``GET /oauth2/v1/certs`` - ``{kid: "-----BEGIN CERTIFICATE-----..."}`` (self-signed x509)
* ``GET /.well-known/openid-configuration`` - issuer + ``jwks_uri``

and signs RS256 OIDC ID tokens shaped like the ones Pub/Sub push attaches
(``Authorization: Bearer <jwt>``).  Verify them with the official library by overriding
the certificate URL::

    from google.auth.transport.requests import Request
    from google.oauth2 import id_token
    claims = id_token.verify_token(token, Request(), audience=AUD, certs_url=fake.certs_url)
    # fake.certs_url == base_url + "/oauth2/v1/certs"; fake.jwks_url (v3, needs PyJWT) also works

``SigningKey.generate()`` makes an unpublished key for forged-token tests; ``rotate_key()``
publishes a new primary key (old keys stay published until ``retire_key``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._server import FakeServer

__all__ = [
    "GoogleCertsFake",
    "SigningKey",
    "pubsub_push_envelope",
    "pubsub_push_headers",
]

GOOGLE_ISSUER = "https://accounts.google.com"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


@dataclass
class SigningKey:
    """An RSA key pair with a key id, its JWK and a self-signed certificate."""

    private_key: rsa.RSAPrivateKey
    kid: str
    certificate: x509.Certificate

    @classmethod
    def generate(cls, kid: str | None = None, key_size: int = 2048) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        kid = kid or secrets.token_hex(20)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-accounts.google.test")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=14))
            .sign(private_key, hashes.SHA256())
        )
        return cls(private_key=private_key, kid=kid, certificate=certificate)

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def sign(self, claims: Mapping[str, Any], kid: str | None = None) -> str:
        """RS256 JWT of ``claims``; ``kid`` overrides the header key id (for forgery tests)."""
        signer = crypt.RSASigner.from_string(self.private_pem, key_id=self.kid)
        return google_jwt.encode(signer, dict(claims), key_id=kid or self.kid).decode("ascii")


def _numeric_id(seed: str) -> str:
    """A stable 21-digit numeric id (Google 'sub'/'azp' style) derived from ``seed``."""
    return "1" + str(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big") % 10**20).zfill(20)


class GoogleCertsFake(FakeServer):
    def __init__(self, *, tls: bool = False, key: SigningKey | None = None) -> None:
        super().__init__(tls=tls)
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [key or SigningKey.generate()]
        self.fail_status: int | None = None  # make cert fetches fail with this HTTP status

    # ------------------------------------------------------------------ keys
    @property
    def key(self) -> SigningKey:
        """The primary (newest) signing key."""
        with self._lock:
            return self._keys[-1]

    @property
    def keys(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys)

    def rotate_key(self) -> SigningKey:
        new = SigningKey.generate()
        with self._lock:
            self._keys.append(new)
        return new

    def retire_key(self, kid: str) -> None:
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    @property
    def certs_url(self) -> str:
        return self.base_url + "/oauth2/v1/certs"

    @property
    def jwks_url(self) -> str:
        return self.base_url + "/oauth2/v3/certs"

    # ------------------------------------------------------------------ tokens
    def sign_pubsub_jwt(
        self,
        audience: str,
        email: str = "gmail-push@test-project.iam.gserviceaccount.com",
        issuer: str = GOOGLE_ISSUER,
        expires_in: float = 3600,
        kid: str | None = None,
        *,
        issued_at: float | None = None,
        email_verified: bool = True,
        key: SigningKey | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An ID token like the one Pub/Sub push sends for a push subscription's service account.

        ``kid`` picks a published key (default: primary); ``key`` signs with any key (e.g. an
        unpublished ``SigningKey.generate()``), keeping ``kid`` (if given) in the header.
        """
        if key is None:
            with self._lock:
                matching = [k for k in self._keys if k.kid == kid] if kid else [self._keys[-1]]
            if not matching:
                raise KeyError(f"no published key with kid {kid!r}; pass key= to sign with another key")
            key = matching[0]
        now = time.time() if issued_at is None else issued_at
        subject = _numeric_id(email)
        claims: dict[str, Any] = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": email_verified,
            "exp": int(now + expires_in),
            "iat": int(now),
            "iss": issuer,
            "sub": subject,
        }
        claims.update(extra_claims or {})
        return key.sign(claims, kid=kid)

    # ------------------------------------------------------------------ app
    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth2/v1/certs", self._pem_certs, methods=["GET"]),
                Route("/oauth2/v3/certs", self._jwks, methods=["GET"]),
                Route("/.well-known/openid-configuration", self._openid_configuration, methods=["GET"]),
            ]
        )

    @staticmethod
    def _cache_headers() -> dict[str, str]:
        return {"Cache-Control": "public, max-age=21600, must-revalidate, no-transform"}

    def _failure(self) -> Response | None:
        if self.fail_status is None:
            return None
        return JSONResponse({"error": "backendError"}, status_code=self.fail_status)

    async def _pem_certs(self, request: Request) -> Response:
        failure = self._failure()
        if failure:
            return failure
        return JSONResponse({k.kid: k.certificate_pem for k in self.keys}, headers=self._cache_headers())

    async def _jwks(self, request: Request) -> Response:
        failure = self._failure()
        if failure:
            return failure
        return JSONResponse({"keys": [k.jwk() for k in self.keys]}, headers=self._cache_headers())

    async def _openid_configuration(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": GOOGLE_ISSUER,
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
                "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "sub"],
            }
        )


# ---------------------------------------------------------------------------- Pub/Sub push
def pubsub_push_envelope(
    email_address: str,
    history_id: int | str,
    subscription: str = "projects/test-project/subscriptions/gmail-push",
    message_id: str | None = None,
    *,
    publish_time: dt.datetime | None = None,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body Pub/Sub POSTs to a push endpoint for a Gmail watch notification.

    ``message.data`` is base64 of ``{"emailAddress": ..., "historyId": <int>}``; like the
    real service, both camelCase and snake_case copies of ``messageId``/``publishTime`` are set.
    """
    message_id = message_id or str(uuid.uuid4().int % 10**16)
    published = (publish_time or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stamp = published.strftime("%Y-%m-%dT%H:%M:%S.") + f"{published.microsecond // 1000:03d}Z"
    data = json.dumps({"emailAddress": email_address, "historyId": int(history_id)}).encode()
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode("ascii"),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": stamp,
        "publish_time": stamp,
    }
    if attributes:
        message["attributes"] = dict(attributes)
    return {"message": message, "subscription": subscription}


def pubsub_push_headers(token: str) -> dict[str, str]:
    """Headers of an authenticated Pub/Sub push request."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
    }
