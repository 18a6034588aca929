"""The secure link to a web-form ticket's page: an unguessable per-ticket token, derived, never stored.

token = URL-safe base64 (no padding) of HMAC-SHA256(TICKET_LINK_SECRET, "crm-fte/ticket-link/v1/<ticket id>"),
where the ticket id is the ticket row's UUID (not its number: numbers are sequential and would be
drawn again by a rebuilt database, a UUID never is). Nothing is stored, so there is nothing to
leak from the database; the price is that one link cannot be revoked alone: rotating the secret
revokes them all. Tokens are compared in constant time.

The link carries the token in the URL fragment (`#token=...`): browsers never send a fragment to
a server, so it stays out of access logs, proxies and Referer headers. The page's script reads it
and sends it in the `X-Ticket-Token` header of its API calls. A rating link (`rating_link`) is the
same link with `&score=N` after the token: it opens the page with that score preselected, and the
ticket may be of any channel (an email customer rates there too).

No I/O: shared by the gateway (checking) and the channel activities (the reply notice's link).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

# The header the ticket page's API calls carry the token in (never a query string: URLs are logged).
TOKEN_HEADER = "X-Ticket-Token"
_CONTEXT = b"crm-fte/ticket-link/v1/"
# 32 bytes of HMAC in unpadded URL-safe base64.
TOKEN_LENGTH = 43
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def ticket_token(secret: str, ticket_id: uuid.UUID | str) -> str:
    """The ticket's token under `secret` (the same every time for the same ticket and secret)."""
    digest = hmac.new(secret.encode(), _CONTEXT + str(uuid.UUID(str(ticket_id))).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_matches(secret: str, ticket_id: uuid.UUID | str, token: str) -> bool:
    """Whether `token` is the ticket's token (constant-time comparison; any malformed token is False)."""
    if not _TOKEN_SHAPE.fullmatch(token):
        return False
    return hmac.compare_digest(ticket_token(secret, ticket_id).encode(), token.encode())


def ticket_link(public_base_url: str, ticket_number: str, token: str) -> str:
    """`{public base URL}/support/ticket/{ticket number}#token={token}`."""
    return f"{public_base_url.rstrip('/')}/support/ticket/{ticket_number}#token={token}"


def rating_link(public_base_url: str, ticket_number: str, token: str, score: int) -> str:
    """The ticket link with `score` (1-5) preselected: `…/support/ticket/{number}#token={token}&score={score}`.

    One per score in the rating email. The page only preselects the score and waits for the
    customer's click: link scanners open every link in an email, so opening one must not rate.
    """
    if not 1 <= score <= 5:
        raise ValueError(f"a rating is 1 to 5, not {score}")
    return f"{ticket_link(public_base_url, ticket_number, token)}&score={score}"
