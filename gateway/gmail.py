"""`POST /api/v1/webhooks/gmail`: Gmail push notifications (Pub/Sub push) → one Kafka record per new email.

Flow of one push:

1. **Authenticate, fail closed.** The push carries an OIDC ID token (`Authorization: Bearer`)
   signed by Google for the push subscription's service account. It is verified with google-auth
   against Google's signing certificates (URL configurable, cached), and its issuer, audience,
   `email` and `email_verified` are checked. A static token (`GMAIL_PUBSUB_STATIC_TOKEN`, as a
   bearer token or a `?token=` query parameter, the form a push endpoint URL can carry) is accepted
   only when it is explicitly configured. With neither configured, or without Gmail credentials,
   every push is refused (403); nothing is ever accepted unauthenticated.
2. **Decode** the envelope (400 if malformed; an unwrapped push payload is accepted too) into
   `{emailAddress, historyId}`; pushes for another mailbox are acknowledged and ignored.
3. **Fetch** what changed since the last processed historyId (`users.history.list`, paged, then
   `users.messages.get(format="full")` per new message) with the official client, in a thread, each
   HTTP call bounded by a timeout and the whole fetch by a budget below Pub/Sub's 10 s deadline.
4. **Normalise** every new customer email (the agent's own mail, drafts, spam and auto-replies are
   skipped) into one `InboundMessage`: text/plain preferred, else HTML converted to text; quoted
   replies and signatures stripped; Gmail threadId as the conversation key; threading headers in
   the metadata so the reply lands in the same thread.
5. **Publish** each to Kafka (acks=all) and only then advance the stored historyId. If the broker
   does not acknowledge, the answer is 503, the cursor stays, and Pub/Sub redelivers: nothing is
   lost. A redelivery after success finds the cursor advanced and does nothing; a duplicate that
   slips through (two concurrent pushes) is harmless because the conversation workflow and the
   messages table deduplicate by Gmail message id.

The cursor lives in `gmail_sync_state` (one row per mailbox, migration 0003):

* **Baseline.** `renew_gmail_watch` (activities/gmail.py) stores the historyId `users.watch`
  returns when it first creates the watch, so every later push has a starting point. If a push
  arrives for a mailbox with no stored cursor (a watch created outside this service), the pushed
  historyId becomes the baseline and nothing before it is fetched: answering a mailbox's past mail
  would be worse than missing the one message that raced the baseline.
* **History too old.** If `history.list` answers 404 (Gmail keeps roughly a week of history), the
  pushed historyId becomes the new cursor and `gmail.history_expired` is logged as a warning. A full
  re-sync (`messages.list` over the gap) is out of scope.
* **Backlog.** One push handles at most `MAX_MESSAGES_PER_PUSH` messages within
  `FETCH_BUDGET_SECONDS`; if more are pending, the cursor advances to the last history record fully
  handled and the answer is 503, so Pub/Sub redelivers and the next attempt continues from there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.header
import email.utils
import hmac
import html
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, NoReturn, TypeVar

import google_auth_httplib2
import httplib2
from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.auth import exceptions as google_auth_exceptions
from google.auth import transport
from google.oauth2 import id_token
from googleapiclient.errors import HttpError
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.errors import BadRequest, Forbidden, ServiceUnavailable
from core.gmail_client import gmail_service
from core.logging import get_logger
from core.settings import Settings
from crm.db import transaction
from gateway.deps import ResourcesDep
from gateway.producer import publish_inbound
from workflows.contracts import MAX_TEXT_CHARS, Attachment, InboundMessage, SenderIdentity

router = APIRouter()
log = get_logger(__name__)
T = TypeVar("T")

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Pub/Sub waits 10 s for the push endpoint. Each Gmail HTTP call gets GMAIL_HTTP_TIMEOUT_SECONDS;
# no new history record is started after FETCH_BUDGET_SECONDS; the whole fetch is abandoned (503)
# after FETCH_DEADLINE_SECONDS, leaving time to answer.
GMAIL_HTTP_TIMEOUT_SECONDS = 3.0
FETCH_BUDGET_SECONDS = 5.0
FETCH_DEADLINE_SECONDS = 8.5
MAX_MESSAGES_PER_PUSH = 100
HISTORY_PAGE_SIZE = 500
CERTS_HTTP_TIMEOUT_SECONDS = 3.0
# Google serves its certs with Cache-Control max-age (hours); keys are published before use.
CERTS_DEFAULT_MAX_AGE_SECONDS = 3600.0
CERTS_MAX_AGE_CAP_SECONDS = 6 * 3600.0
# A token signed by a key id we have not seen refetches the certs, at most this often.
CERTS_REFETCH_FLOOR_SECONDS = 5.0
JWT_CLOCK_SKEW_SECONDS = 10
# Labels of mail the agent must not answer: its own sends and drafts, spam, trash, chat.
SKIP_LABELS = frozenset({"SENT", "DRAFT", "SPAM", "TRASH", "CHAT"})
MAX_REFERENCES = 10
MAX_METADATA_CHARS = 2000
MAX_ATTACHMENTS = 50

GMAIL_PUSHES = Counter("crm_fte_gmail_pushes_total", "Gmail Pub/Sub pushes by outcome", ["outcome"])
GMAIL_MESSAGES = Counter("crm_fte_gmail_messages_total", "Gmail messages seen in pushes by outcome", ["outcome"])


# ----------------------------------------------------------------------------- the envelope


class PubSubMessage(BaseModel):
    """The `message` of a Pub/Sub push; `data` is base64 of Gmail's JSON notification."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    data: str = Field(min_length=1, max_length=10_000)
    message_id: str | None = Field(default=None, alias="messageId", max_length=256)
    publish_time: str | None = Field(default=None, alias="publishTime", max_length=64)
    attributes: dict[str, str] | None = None


class PushEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str | None = Field(default=None, max_length=512)


class GmailNotification(BaseModel):
    """What Gmail publishes on a mailbox change: the mailbox and its historyId after the change."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    email_address: str = Field(alias="emailAddress", min_length=3, max_length=320)
    history_id: int = Field(alias="historyId", gt=0, lt=2**63)


def parse_push(body: bytes) -> tuple[PushEnvelope | None, GmailNotification]:
    """Decode a Pub/Sub push body; anything malformed is a 400, never a 500.

    Accepts the standard wrapped envelope and, for subscriptions with payload unwrapping enabled,
    the bare notification (then there is no envelope).
    """
    try:
        envelope = PushEnvelope.model_validate_json(body)
    except ValidationError as exc:
        try:
            return None, GmailNotification.model_validate_json(body)
        except ValidationError:
            raise BadRequest("not a Pub/Sub push envelope", detail=_errors(exc)) from None
    try:
        data = base64.b64decode(envelope.message.data, validate=True)
    except (binascii.Error, ValueError):
        # Pub/Sub uses standard base64; accept the URL-safe alphabet too.
        try:
            raw = envelope.message.data
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest("message.data is not base64") from None
    try:
        notification = GmailNotification.model_validate_json(data)
    except ValidationError as exc:
        raise BadRequest("message.data is not a Gmail notification", detail=_errors(exc)) from None
    return envelope, notification


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()][:10]


# ----------------------------------------------------------------------------- push authentication


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

    def __call__(  # type: ignore[override]
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


def _verify_oidc(token: str, settings: Settings) -> None:
    """Verify a Pub/Sub push ID token (blocking: may fetch Google's certs). Raises 403 or 503."""
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
        _reject("token_invalid", error=type(exc).__name__, detail=str(exc)[:200])
    if claims.get("iss") not in GOOGLE_ISSUERS:
        _reject("issuer_mismatch", issuer=str(claims.get("iss"))[:100])
    expected = (settings.gmail_pubsub_service_account or "").strip().lower()
    if str(claims.get("email", "")).strip().lower() != expected:
        _reject("service_account_mismatch", email=str(claims.get("email"))[:200])
    if claims.get("email_verified") is not True:
        _reject("email_not_verified")


def _reject(reason: str, **fields: object) -> NoReturn:
    log.warning("gmail.push_rejected", reason=reason, **fields)
    GMAIL_PUSHES.labels("rejected").inc()
    raise Forbidden("the push's token is not valid for this endpoint")


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate_push(request: Request, settings: Settings) -> str:
    """Fail closed: OIDC (or an explicitly configured static token), else 403. Returns the method used."""
    if not settings.gmail_configured:
        GMAIL_PUSHES.labels("not_configured").inc()
        raise Forbidden(
            "the Gmail channel is not configured (set GMAIL_USER_EMAIL, GMAIL_CLIENT_ID and GMAIL_REFRESH_TOKEN)"
        )
    static = settings.gmail_pubsub_static_token.get_secret_value() if settings.gmail_pubsub_static_token else ""
    oidc = bool(settings.gmail_pubsub_audience and settings.gmail_pubsub_service_account)
    if not static and not oidc:
        GMAIL_PUSHES.labels("not_configured").inc()
        raise Forbidden(
            "Pub/Sub push authentication is not configured (set GMAIL_PUBSUB_AUDIENCE and "
            "GMAIL_PUBSUB_SERVICE_ACCOUNT, or opt in to GMAIL_PUBSUB_STATIC_TOKEN)"
        )
    token = _bearer(request)
    if static:
        candidate = token or request.query_params.get("token") or ""
        if candidate and hmac.compare_digest(candidate.encode(), static.encode()):
            return "static_token"
        if not oidc:
            _reject("static_token_mismatch" if candidate else "token_missing")
    if token is None:
        _reject("token_missing")
    await asyncio.to_thread(_verify_oidc, token, settings)
    return "oidc"


# ----------------------------------------------------------------------------- the Gmail API


@dataclass
class FetchResult:
    """New messages (Gmail `full` resources) in history order, and where the cursor may move."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    complete: bool = True
    expired: bool = False
    skipped_before_fetch: int = 0


def fetch_new_messages(settings: Settings, start_history_id: int, *, budget_seconds: float) -> FetchResult:
    """history.list from the cursor (paged), then messages.get per new message (blocking)."""
    with gmail_service(settings, timeout=GMAIL_HTTP_TIMEOUT_SECONDS) as service:  # closes its connections
        return _fetch(service.users(), start_history_id, deadline=time.monotonic() + budget_seconds)


def _fetch(users: Any, start_history_id: int, *, deadline: float) -> FetchResult:
    result = FetchResult(cursor=start_history_id)
    seen: set[str] = set()
    page_token: str | None = None
    while True:
        try:
            page = (
                users.history()
                .list(
                    userId="me",
                    startHistoryId=str(start_history_id),
                    historyTypes=["messageAdded"],
                    maxResults=HISTORY_PAGE_SIZE,
                    pageToken=page_token,
                )
                .execute()
            )
        except HttpError as exc:
            if exc.resp.status == 404:
                result.expired = True
                return result
            raise
        for record in page.get("history", []):
            if len(result.messages) >= MAX_MESSAGES_PER_PUSH or time.monotonic() > deadline:
                result.complete = False
                return result
            for added in record.get("messagesAdded", []):
                ref = added.get("message") or {}
                message_id = ref.get("id")
                if not message_id or message_id in seen:
                    continue
                seen.add(message_id)
                if SKIP_LABELS & set(ref.get("labelIds") or ()):
                    result.skipped_before_fetch += 1
                    continue
                try:
                    full = users.messages().get(userId="me", id=message_id, format="full").execute()
                except HttpError as exc:
                    if exc.resp.status == 404:  # deleted since: nothing to answer
                        continue
                    raise
                result.messages.append(full)
            result.cursor = max(result.cursor, int(record["id"]))
        page_token = page.get("nextPageToken")
        if not page_token:
            result.cursor = max(result.cursor, int(page.get("historyId") or 0))
            return result


# ----------------------------------------------------------------------------- MIME → InboundMessage


def _header_map(part: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header in part.get("headers") or ():
        name = str(header.get("name", "")).lower()
        if name and name not in headers:
            headers[name] = str(header.get("value", ""))
    return headers


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 encoded words (`=?UTF-8?B?...?=`) and unfold whitespace."""
    if "=?" in value:
        try:
            value = str(email.header.make_header(email.header.decode_header(value)))
        except (LookupError, ValueError, UnicodeDecodeError):
            pass
    return " ".join(value.split())


def _walk(part: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield part
    if part.get("mimeType") == "message/rfc822":  # a forwarded message is an attachment, not the body
        return
    for child in part.get("parts") or ():
        yield from _walk(child)


def _is_attachment(part: Mapping[str, Any]) -> bool:
    if part.get("filename"):
        return True
    disposition = _header_map(part).get("content-disposition", "")
    return disposition.strip().lower().startswith("attachment") or part.get("mimeType") == "message/rfc822"


def _part_text(part: Mapping[str, Any]) -> str:
    data = (part.get("body") or {}).get("data")
    if not data:
        return ""
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return ""
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", _header_map(part).get("content-type", ""), re.IGNORECASE)
    charset = match.group(1) if match else "utf-8"
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


class _HTMLText(HTMLParser):
    """Visible text of an HTML body; quoted history (blockquote, Gmail's gmail_quote) is left out."""

    BLOCK = frozenset(
        {"p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre"}
    )
    VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"})
    HIDDEN = frozenset({"script", "style", "head", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, hides its content)

    @property
    def _hidden(self) -> bool:
        return any(hides for _, hides in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK and not self._hidden:
            self.chunks.append("\n- " if tag == "li" else "\n")
        if tag in self.VOID:
            return
        classes = " ".join(v or "" for k, v in attrs if k == "class")
        hides = tag in self.HIDDEN or tag == "blockquote" or "gmail_quote" in classes
        self._stack.append((tag, hides))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK and not self._hidden:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                del self._stack[index:]
                break
        if tag in self.BLOCK and tag != "li" and not self._hidden:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(re.sub(r"\s+", " ", data.replace("\xa0", " ")))


def html_to_text(markup: str) -> str:
    """Readable plain text from an HTML email body."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; be safe against pathological input anyway
        return re.sub(r"<[^>]+>", " ", html.unescape(markup))
    lines = (line.strip() for line in "".join(parser.chunks).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# Where quoted history starts: "On <date>, <name> wrote:" (possibly wrapped over three lines; a digit
# is required so that "On Monday my colleague wrote:" in the customer's own text survives),
# "-----Original Message-----", and Outlook's "From: ... Sent:/Date: ..." header block.
_QUOTE_STARTS = (
    re.compile(r"^[ \t]*On\b(?=[^\n]*\d)[^\n]*(?:\n[^\n]*){0,2}?\bwrote:[ \t]*$", re.MULTILINE),
    re.compile(r"^[ \t]*-{2,}[ \t]*Original Message[ \t]*-{2,}[ \t]*$", re.MULTILINE | re.IGNORECASE),
    re.compile(r"^[ \t]*_{10,}[ \t]*\n(?=[ \t]*\*?From:)", re.MULTILINE),
    re.compile(r"^[ \t]*\*?From:\*?[ \t][^\n]*\n(?:[^\n]*\n){0,2}?[ \t]*\*?(?:Sent|Date):\*?[ \t]", re.MULTILINE),
)
# Where a signature starts: the RFC 3676 "-- " delimiter anywhere; a mobile client's footer line
# only near the end (so "Sent from my phone, the export fails" in the text itself survives).
_SIGNATURE_DELIMITER = re.compile(r"^--[ \t]?$", re.MULTILINE)
_MOBILE_FOOTER = re.compile(
    r"^[ \t]*(?:Sent from my \w[\w .-]{0,40}|Sent from (?:Outlook|Mail|Yahoo Mail)\b[^\n]{0,40}|"
    r"Get Outlook for \w[\w .-]{0,20}|Sent via \w[\w .-]{0,30})[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_FOOTER_MAX_TRAILING_LINES = 3


def strip_quoted_reply(body: str) -> str:
    """The customer's new words: quoted history, `>` lines and signatures removed."""
    normalised = body.replace("\r\n", "\n").replace("\r", "\n")
    cut = len(normalised)
    for pattern in _QUOTE_STARTS:
        match = pattern.search(normalised)
        if match:
            cut = min(cut, match.start())
    kept = "\n".join(line for line in normalised[:cut].split("\n") if not line.lstrip().startswith(">"))
    match = _SIGNATURE_DELIMITER.search(kept)
    if match:
        kept = kept[: match.start()]
    for match in _MOBILE_FOOTER.finditer(kept):
        if sum(1 for line in kept[match.end() :].split("\n") if line.strip()) <= _FOOTER_MAX_TRAILING_LINES:
            kept = kept[: match.start()]
            break
    kept = "\n".join(line.rstrip() for line in kept.split("\n"))
    kept = re.sub(r"\n{3,}", "\n\n", kept).strip()
    # A message that is nothing but a quote (or a signature) keeps its text rather than arriving empty.
    return kept or normalised.strip()


def body_text(payload: Mapping[str, Any]) -> str:
    """text/plain if the message has it, else its HTML as text; quotes and signatures stripped."""
    parts = [p for p in _walk(payload) if not _is_attachment(p)]
    plain = [_part_text(p) for p in parts if p.get("mimeType") == "text/plain"]
    text_body = "\n\n".join(t for t in plain if t.strip())
    if not text_body:
        text_body = "\n\n".join(html_to_text(_part_text(p)) for p in parts if p.get("mimeType") == "text/html")
    return strip_quoted_reply(text_body)[:MAX_TEXT_CHARS]


def attachments_of(payload: Mapping[str, Any]) -> list[Attachment]:
    """Attachment metadata (name, type, size); the bytes stay in Gmail."""
    found = []
    for part in _walk(payload):
        if part is payload or not _is_attachment(part):
            continue
        found.append(
            Attachment(
                filename=str(part.get("filename") or "")[:255] or None,
                content_type=str(part.get("mimeType") or "")[:255] or None,
                size_bytes=int((part.get("body") or {}).get("size") or 0),
            )
        )
    return found[:MAX_ATTACHMENTS]


def _references(value: str) -> str:
    """Keep the first and the latest ids of a long References chain (as mail clients do)."""
    ids = re.findall(r"<[^<>\s]+>", value)
    if not ids:
        return value.strip()[:MAX_METADATA_CHARS]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return " ".join(ids)


def skip_reason(message: Mapping[str, Any], *, own_address: str) -> str | None:
    """Why this message must not reach the agent, or None: own mail, drafts, spam, auto-replies."""
    labels = set(message.get("labelIds") or ())
    if labels & SKIP_LABELS:
        return "label:" + ",".join(sorted(labels & SKIP_LABELS))
    headers = _header_map(message.get("payload") or {})
    _, address = email.utils.parseaddr(headers.get("from", ""))
    address = address.strip().lower()
    if not address or "@" not in address:
        return "no_sender"
    if address == own_address.strip().lower():
        return "own_mail"
    # RFC 3834: never answer automatic mail (out-of-office, bounces), or two robots talk forever.
    if headers.get("auto-submitted", "no").strip().lower() != "no":
        return "auto_submitted"
    if headers.get("precedence", "").strip().lower() in {"bulk", "junk"}:
        return "bulk"
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return "auto_reply"
    if address.split("@", 1)[0] in {"mailer-daemon", "postmaster"}:
        return "bounce"
    return None


def inbound_from_gmail(message: Mapping[str, Any]) -> InboundMessage:
    """One Gmail `full` message resource as the channel-neutral InboundMessage."""
    payload = message.get("payload") or {}
    headers = _header_map(payload)
    name, address = email.utils.parseaddr(headers.get("from", ""))
    subject = decode_header_value(headers.get("subject", ""))[:500] or None
    internal_ms = message.get("internalDate")
    if internal_ms:
        received_at = datetime.fromtimestamp(int(internal_ms) / 1000, tz=UTC)
    else:
        received_at = datetime.now(UTC)
    thread_id = str(message.get("threadId") or message["id"])
    metadata = {
        "thread_id": thread_id,
        "rfc_message_id": " ".join(headers.get("message-id", "").split()),
        "references": _references(headers.get("references", "")),
        "in_reply_to": " ".join(headers.get("in-reply-to", "").split()),
        "from": decode_header_value(headers.get("from", "")),
        "reply_to": decode_header_value(headers.get("reply-to", "")),
    }
    return InboundMessage(
        channel="email",
        external_message_id=str(message["id"]),
        conversation_key=thread_id,
        sender=SenderIdentity(email=address.strip().lower(), name=decode_header_value(name)[:200] or None),
        text=body_text(payload),
        received_at=received_at,
        subject=subject,
        attachments=attachments_of(payload),
        metadata={k: v[:MAX_METADATA_CHARS] for k, v in metadata.items() if v},
    )


# ----------------------------------------------------------------------------- the cursor


async def load_cursor(sessions: async_sessionmaker[AsyncSession], mailbox: str) -> int | None:
    """The last processed historyId of `mailbox`, or None before the baseline exists."""
    try:
        async with sessions() as session:
            value = await session.scalar(
                text("SELECT history_id FROM gmail_sync_state WHERE mailbox = :m"), {"m": mailbox}
            )
    except (SQLAlchemyError, OSError) as exc:
        raise _database_down(exc) from exc
    return int(value) if value is not None else None


async def advance_cursor(sessions: async_sessionmaker[AsyncSession], mailbox: str, history_id: int) -> None:
    """Move the cursor forward (never back: concurrent pushes may finish out of order)."""
    try:
        async with transaction(sessions) as session:
            await session.execute(
                text(
                    "INSERT INTO gmail_sync_state (mailbox, history_id) VALUES (:m, :h) ON CONFLICT (mailbox) "
                    "DO UPDATE SET history_id = GREATEST(gmail_sync_state.history_id, EXCLUDED.history_id), "
                    "updated_at = now()"
                ),
                {"m": mailbox, "h": history_id},
            )
    except (SQLAlchemyError, OSError) as exc:
        raise _database_down(exc) from exc


def _database_down(exc: Exception) -> ServiceUnavailable:
    log.warning("gmail.database_unavailable", error=type(exc).__name__)
    return ServiceUnavailable("the database is unavailable; retry later")


# ----------------------------------------------------------------------------- the endpoint


async def _call_gmail(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Gmail call in a thread; Gmail or OAuth trouble is a 503 (Pub/Sub retries)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(func, *args, **kwargs), FETCH_DEADLINE_SECONDS)
    except HttpError as exc:
        log.warning("gmail.api_error", status=exc.resp.status, reason=str(exc.reason)[:200])
        raise _gmail_down() from exc
    except google_auth_exceptions.GoogleAuthError as exc:
        log.warning("gmail.auth_error", error=type(exc).__name__, reason=str(exc)[:200])
        raise _gmail_down() from exc
    except (TimeoutError, OSError, httplib2.HttpLib2Error) as exc:
        log.warning("gmail.unreachable", error=type(exc).__name__)
        raise _gmail_down() from exc


def _gmail_down() -> ServiceUnavailable:
    GMAIL_PUSHES.labels("gmail_unavailable").inc()
    return ServiceUnavailable("the Gmail API did not answer; retry later")


@router.post(
    "/api/v1/webhooks/gmail",
    status_code=204,
    response_class=Response,
    summary="Gmail push notification (Pub/Sub push subscription)",
)
async def gmail_push(request: Request, resources: ResourcesDep) -> Response:
    """Verify the push, fetch the mailbox's new mail, publish each message; 204 only after Kafka acked."""
    settings = resources.settings
    auth = await authenticate_push(request, settings)
    envelope, notification = parse_push(await request.body())
    mailbox = (settings.gmail_user_email or "").strip().lower()
    pushed = notification.history_id
    if notification.email_address.strip().lower() != mailbox:
        log.info("gmail.push_other_mailbox", mailbox=notification.email_address[:320])
        GMAIL_PUSHES.labels("other_mailbox").inc()
        return Response(status_code=204)

    cursor = await load_cursor(resources.sessions, mailbox)
    if cursor is None:
        await advance_cursor(resources.sessions, mailbox, pushed)
        log.info("gmail.baseline_stored", history_id=pushed, source="push")
        GMAIL_PUSHES.labels("baseline").inc()
        return Response(status_code=204)
    if pushed <= cursor:
        log.info("gmail.push_already_processed", history_id=pushed, cursor=cursor)
        GMAIL_PUSHES.labels("already_processed").inc()
        return Response(status_code=204)

    fetched = await _call_gmail(fetch_new_messages, settings, cursor, budget_seconds=FETCH_BUDGET_SECONDS)
    if fetched.expired:
        log.warning("gmail.history_expired", cursor=cursor, new_cursor=pushed, note="mail in the gap is not fetched")
        await advance_cursor(resources.sessions, mailbox, pushed)
        GMAIL_PUSHES.labels("history_expired").inc()
        return Response(status_code=204)

    published = 0
    GMAIL_MESSAGES.labels("skipped").inc(fetched.skipped_before_fetch)
    for message in fetched.messages:
        reason = skip_reason(message, own_address=mailbox)
        if reason is None:
            try:
                inbound = inbound_from_gmail(message)
            except (KeyError, TypeError, ValueError) as exc:
                # One unreadable message must not block the mailbox forever: log it for a human.
                log.error("gmail.message_unparseable", gmail_message_id=str(message.get("id")), error=repr(exc)[:300])
                GMAIL_MESSAGES.labels("unparseable").inc()
                continue
            await publish_inbound(resources, inbound)  # 503 if the broker does not ack: cursor stays
            published += 1
            GMAIL_MESSAGES.labels("published").inc()
        else:
            log.info("gmail.message_skipped", gmail_message_id=str(message.get("id")), reason=reason)
            GMAIL_MESSAGES.labels("skipped").inc()

    await advance_cursor(resources.sessions, mailbox, fetched.cursor)
    log.info(
        "gmail.push_processed",
        auth=auth,
        pubsub_message_id=envelope.message.message_id if envelope else None,
        published=published,
        cursor=fetched.cursor,
        complete=fetched.complete,
    )
    if not fetched.complete:
        GMAIL_PUSHES.labels("partial").inc()
        # Pub/Sub redelivers a failed push: the next attempt continues from the advanced cursor.
        raise ServiceUnavailable(
            "more new mail than one push can carry; processed part of it, retry to continue",
            detail={"published": published, "history_id": fetched.cursor},
        )
    GMAIL_PUSHES.labels("processed").inc()
    return Response(status_code=204)
