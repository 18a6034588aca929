"""A local stand-in for the Gmail API v1, as ``googleapiclient`` calls it.

Building the official client against the fake (offline)
--------------------------------------------------------
``googleapiclient.discovery.build`` (v2) uses the discovery documents bundled in the
package (``static_discovery`` defaults to True when no ``discoveryServiceUrl`` is given),
so nothing is fetched from Google.  ``client_options={"api_endpoint": ...}`` replaces the
``rootUrl`` (``https://gmail.googleapis.com/``) for normal *and* media-upload calls::

    from google.oauth2.credentials import Credentials
    from googleapiclient.discovery import build

    gmail = build(
        "gmail", "v1",
        credentials=Credentials(token=fake.access_token),
        client_options={"api_endpoint": fake.base_url},
        static_discovery=True, cache_discovery=False,
    )

(``fake.build_service()`` does this.)  Requests then go to
``{base_url}/gmail/v1/users/{userId}/...``; the fake demands ``Authorization: Bearer
<access_token>`` and answers 401 (Google's error JSON, ``WWW-Authenticate``) otherwise.
Media uploads (``messages.send(..., media_body=...)``) need ``GmailFake(tls=True)``:
``googleapiclient`` derives ``/upload/...`` URLs from the discovery ``rootUrl`` and only
swaps the host:port for the ``api_endpoint`` one (``_fix_up_media_path_base_url``), so the
scheme stays ``https``.  With ``tls=True`` the fake serves HTTPS with a throw-away
self-signed certificate (``fake.ca_cert_path``) and ``build_service()`` passes
``http=AuthorizedHttp(credentials, http=httplib2.Http(ca_certs=fake.ca_cert_path))``.

Note that on a 401 ``google_auth_httplib2`` tries to refresh the credentials, so a bad
token surfaces as ``google.auth.exceptions.RefreshError`` for token-only credentials;
with no credentials at all (``http=httplib2.Http()``) it is a plain ``HttpError`` 401.

Implemented: ``users.getProfile``, ``users.watch``/``stop``, ``users.history.list``
(``startHistoryId``, ``historyTypes``, ``labelId``, ``maxResults``/``pageToken`` paging,
404 for a start id older than ``expire_history``), ``users.messages.get`` (formats
full/metadata/minimal/raw), ``list``, ``send`` (JSON ``raw`` or ``/upload`` media /
multipart), ``modify``; ``users.threads.get``; ``users.labels.list``.  ``inject_email``
delivers an inbound message (bumping ``historyId``).  Gmail's threading rule is enforced
for sends: a ``threadId`` is honoured only if ``In-Reply-To``/``References`` name a message
of that thread and the subjects match (otherwise a new thread starts, like Gmail).
Base64url ``data``/``raw`` fields are sent without ``=`` padding, as Gmail does.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._server import FakeServer

__all__ = ["GmailFake", "GmailMessage", "HistoryRecord", "b64url_decode", "b64url_encode"]

SYSTEM_LABELS = (
    "INBOX",
    "SENT",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "TRASH",
    "SPAM",
    "DRAFT",
    "CATEGORY_PERSONAL",
    "CATEGORY_UPDATES",
)
_PARSER = BytesParser(policy=email.policy.default)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(data: str) -> bytes:
    data = data.strip().replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _normalize_subject(subject: str) -> str:
    return re.sub(r"^(\s*(re|fwd?|aw|sv)\s*:\s*)+", "", subject or "", flags=re.IGNORECASE).strip().lower()


def _message_ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>]+>", value or "")


@dataclass
class GmailMessage:
    """A message stored in the fake mailbox."""

    id: str
    thread_id: str
    label_ids: list[str]
    raw: bytes
    history_id: int
    internal_date_ms: int

    @property
    def mime(self) -> EmailMessage:
        return _PARSER.parsebytes(self.raw)  # type: ignore[return-value]

    def header(self, name: str) -> str | None:
        value = self.mime.get(name)
        return None if value is None else str(value)

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    @property
    def subject(self) -> str:
        return self.header("Subject") or ""

    @property
    def sender(self) -> str | None:
        return self.header("From")

    @property
    def to(self) -> str | None:
        return self.header("To")

    @property
    def in_reply_to(self) -> str | None:
        return self.header("In-Reply-To")

    @property
    def references(self) -> str | None:
        return self.header("References")

    def _body(self, subtype: str) -> str | None:
        part = self.mime.get_body(preferencelist=(subtype,))
        return None if part is None else part.get_content()

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")


@dataclass
class HistoryRecord:
    id: int
    kind: str  # messageAdded | messageDeleted | labelAdded | labelRemoved
    message_id: str
    thread_id: str
    label_ids: list[str]  # the message's labels after the change
    changed_label_ids: list[str] = field(default_factory=list)


def _google_error(status: int, message: str, reason: str, status_text: str, **extra: Any) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "domain": "global", "reason": reason}
    error.update(extra.pop("error_fields", {}))
    return JSONResponse(
        {"error": {"code": status, "message": message, "errors": [error], "status": status_text}},
        status_code=status,
        headers=extra.pop("headers", None),
    )


def _bad_request(message: str) -> JSONResponse:
    return _google_error(400, message, "invalidArgument", "INVALID_ARGUMENT")


def _not_found() -> JSONResponse:
    return _google_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


class GmailFake(FakeServer):
    def __init__(
        self,
        *,
        tls: bool = False,
        email_address: str = "support@example.com",
        access_token: str = "test",
        start_history_id: int = 1000,
        history_step: int = 1,
        strict_threading: bool = True,
    ) -> None:
        super().__init__(tls=tls)
        self.email_address = email_address
        self.access_tokens = {access_token}
        self.access_token = access_token
        self.history_step = history_step
        self.strict_threading = strict_threading
        self._lock = threading.RLock()
        self._history_id = start_history_id
        self._history_floor = 0
        self._ids = itertools.count(0x18C0000000000000 + int(time.time()) % 100000 * 1000)
        self._messages: dict[str, GmailMessage] = {}
        self._history: list[HistoryRecord] = []
        self.sent: list[GmailMessage] = []
        self.watch_requests: list[dict[str, Any]] = []
        self.watching = False

    # ------------------------------------------------------------------ official client
    def build_service(self, token: str | None = None) -> Any:
        """``googleapiclient`` Gmail v1 resource bound to this fake."""
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        credentials = Credentials(token=token or self.access_token)
        auth: dict[str, Any] = {"credentials": credentials}
        if self.tls:  # trust the fake's self-signed certificate
            import google_auth_httplib2
            import httplib2

            auth = {
                "http": google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(ca_certs=self.ca_cert_path))
            }
        return build(
            "gmail",
            "v1",
            client_options={"api_endpoint": self.base_url},
            static_discovery=True,
            cache_discovery=False,
            **auth,
        )

    # ------------------------------------------------------------------ mailbox state
    @property
    def history_id(self) -> int:
        with self._lock:
            return self._history_id

    @property
    def messages(self) -> list[GmailMessage]:
        with self._lock:
            return list(self._messages.values())

    def get_message(self, message_id: str) -> GmailMessage:
        with self._lock:
            return self._messages[message_id]

    def thread(self, thread_id: str) -> list[GmailMessage]:
        with self._lock:
            return [m for m in self._messages.values() if m.thread_id == thread_id]

    def expire_history(self, before: int | None = None) -> None:
        """Make history.list answer 404 for any startHistoryId < ``before`` (default: current)."""
        with self._lock:
            self._history_floor = self._history_id if before is None else before

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._history.clear()
            self.sent.clear()
            self.watch_requests.clear()
            self.watching = False
            self._history_floor = 0
        self.clear_requests()

    def _new_id(self) -> str:
        return f"{next(self._ids):016x}"

    def _bump(self, kind: str, message: GmailMessage, changed: Sequence[str] = ()) -> int:
        self._history_id += self.history_step
        self._history.append(
            HistoryRecord(
                id=self._history_id,
                kind=kind,
                message_id=message.id,
                thread_id=message.thread_id,
                label_ids=list(message.label_ids),
                changed_label_ids=list(changed),
            )
        )
        return self._history_id

    def _thread_for_references(self, msg: Message) -> str | None:
        wanted = set(_message_ids(msg.get("In-Reply-To"))) | set(_message_ids(msg.get("References")))
        if not wanted:
            return None
        for stored in self._messages.values():
            stored_id = stored.message_id
            if stored_id and stored_id.strip() in wanted:
                return stored.thread_id
        return None

    def _store(self, raw: bytes, labels: Iterable[str], thread_id: str | None, internal_date_ms: int) -> GmailMessage:
        message_id = self._new_id()
        stored = GmailMessage(
            id=message_id,
            thread_id=thread_id or message_id,
            label_ids=list(dict.fromkeys(labels)),
            raw=raw,
            history_id=0,
            internal_date_ms=internal_date_ms,
        )
        self._messages[message_id] = stored
        stored.history_id = self._bump("messageAdded", stored)
        return stored

    def inject_raw(
        self, raw: bytes, *, labels: Iterable[str] = ("INBOX", "UNREAD"), thread_id: str | None = None
    ) -> GmailMessage:
        """Deliver an RFC 822 message as-is; threads by In-Reply-To/References unless ``thread_id``."""
        msg = _PARSER.parsebytes(raw)
        with self._lock:
            thread = thread_id or self._thread_for_references(msg)
            date = msg.get("Date")
            moment = email.utils.parsedate_to_datetime(str(date)).timestamp() if date else time.time()
            internal = int(moment * 1000)
            return self._store(raw, labels, thread, internal)

    def inject_email(
        self,
        *,
        from_: str,
        subject: str,
        text: str | None = "",
        html: str | None = None,
        to: str | None = None,
        cc: str | None = None,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: str | None = None,
        thread_id: str | None = None,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        date: datetime | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
    ) -> GmailMessage:
        """Deliver a new inbound email (text, optional HTML alternative and attachments
        ``(filename, mime_type, data)``) and return the stored message.

        Like Gmail, the fake writes its own ``Authentication-Results`` above the sender's headers:
        DKIM/SPF/DMARC pass for the From domain, or (``authenticated=False``, a forged From) fail.
        """
        msg = EmailMessage()
        domain = email.utils.parseaddr(from_)[1].rpartition("@")[2].lower()
        if authenticated:
            msg["Authentication-Results"] = (
                f"mx.google.com; dkim=pass header.i=@{domain} header.s=s1 header.b=fake; "
                f"spf=pass (google.com: domain of sender@{domain} designates 192.0.2.1 as permitted sender) "
                f"smtp.mailfrom=sender@{domain}; dmarc=pass (p=NONE sp=NONE dis=NONE) header.from={domain}"
            )
        else:
            msg["Authentication-Results"] = (
                f"mx.google.com; spf=softfail (google.com: domain of transitioning sender@{domain} does not "
                f"designate 198.51.100.7 as permitted sender) smtp.mailfrom=sender@{domain}; "
                f"dmarc=fail (p=NONE sp=NONE dis=NONE) header.from={domain}"
            )
        msg["From"] = from_
        msg["To"] = to or self.email_address
        if cc:
            msg["Cc"] = cc
        msg["Subject"] = subject
        msg["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
        msg["Message-ID"] = message_id or email.utils.make_msgid(domain=from_.rpartition("@")[2].strip(">") or None)
        if in_reply_to:
            msg["In-Reply-To"] = in_reply_to
        if references or in_reply_to:
            msg["References"] = references or in_reply_to
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(text or "")
        if html is not None:
            msg.add_alternative(html, subtype="html")
        for filename, mime_type, data in attachments:
            maintype, _, subtype = mime_type.partition("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        return self.inject_raw(msg.as_bytes(), labels=labels, thread_id=thread_id)

    # ------------------------------------------------------------------ JSON rendering
    @staticmethod
    def _snippet(msg: EmailMessage) -> str:
        part = msg.get_body(preferencelist=("plain", "html"))
        text = part.get_content() if part is not None else ""
        if part is not None and part.get_content_subtype() == "html":
            text = re.sub(r"<[^>]+>", " ", text)
        text = " ".join(text.split())[:200]
        for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
            text = text.replace(char, entity)
        return text

    def _part_json(self, part: Message, part_id: str, headers_only: bool, wanted: set[str] | None) -> dict[str, Any]:
        headers = [
            {"name": name, "value": str(value)}
            for name, value in part.items()
            if wanted is None or name.lower() in wanted
        ]
        result: dict[str, Any] = {
            "partId": part_id,
            "mimeType": part.get_content_type(),
            "filename": part.get_filename() or "",
            "headers": headers,
        }
        if headers_only:
            return {"partId": part_id, "mimeType": result["mimeType"], "filename": "", "headers": headers}
        if part.is_multipart():
            result["body"] = {"size": 0}
            result["parts"] = [
                self._part_json(child, f"{part_id}.{index}" if part_id else str(index), False, None)
                for index, child in enumerate(part.get_payload())  # type: ignore[arg-type]
            ]
        else:
            data = part.get_payload(decode=True) or b""
            body: dict[str, Any] = {"size": len(data)}
            if data:
                body["data"] = b64url_encode(data)
            result["body"] = body
        return result

    def _message_json(self, stored: GmailMessage, fmt: str = "full", metadata_headers: Sequence[str] = ()) -> dict:
        msg = stored.mime
        result: dict[str, Any] = {
            "id": stored.id,
            "threadId": stored.thread_id,
            "labelIds": list(stored.label_ids),
            "snippet": self._snippet(msg),
            "sizeEstimate": len(stored.raw),
            "historyId": str(stored.history_id),
            "internalDate": str(stored.internal_date_ms),
        }
        if fmt == "raw":
            result["raw"] = b64url_encode(stored.raw)
        elif fmt == "metadata":
            wanted = {h.lower() for h in metadata_headers} or None
            result["payload"] = self._part_json(msg, "", True, wanted)
        elif fmt == "full":
            result["payload"] = self._part_json(msg, "", False, None)
        return result

    # ------------------------------------------------------------------ app
    def build_app(self) -> Starlette:
        user = "/gmail/v1/users/{user_id}"
        return Starlette(
            routes=[
                Route(f"{user}/profile", self._profile, methods=["GET"]),
                Route(f"{user}/watch", self._watch, methods=["POST"]),
                Route(f"{user}/stop", self._stop, methods=["POST"]),
                Route(f"{user}/history", self._history_list, methods=["GET"]),
                Route(f"{user}/messages", self._messages_list, methods=["GET"]),
                Route(f"{user}/messages/send", self._send_json, methods=["POST"]),
                Route(f"/upload{user}/messages/send", self._send_upload, methods=["POST"]),
                Route(f"{user}/messages/{{id}}", self._messages_get, methods=["GET"]),
                Route(f"{user}/messages/{{id}}/modify", self._messages_modify, methods=["POST"]),
                Route(f"{user}/threads/{{id}}", self._threads_get, methods=["GET"]),
                Route(f"{user}/labels", self._labels_list, methods=["GET"]),
            ]
        )

    def _authorize(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else None
        if token not in self.access_tokens:
            return _google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                "cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "authError",
                "UNAUTHENTICATED",
                error_fields={"location": "Authorization", "locationType": "header"},
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        user_id = request.path_params.get("user_id")
        if user_id not in ("me", self.email_address):
            return _google_error(403, f"Delegation denied for {self.email_address}", "forbidden", "PERMISSION_DENIED")
        return None

    async def _profile(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        with self._lock:
            return JSONResponse(
                {
                    "emailAddress": self.email_address,
                    "messagesTotal": len(self._messages),
                    "threadsTotal": len({m.thread_id for m in self._messages.values()}),
                    "historyId": str(self._history_id),
                }
            )

    async def _watch(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        body = json.loads(await request.body() or b"{}")
        topic = body.get("topicName") or ""
        if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
            return _bad_request("Invalid topicName does not match projects/*/topics/*")
        with self._lock:
            self.watch_requests.append(body)
            self.watching = True
            return JSONResponse(
                {"historyId": str(self._history_id), "expiration": str(int(time.time() * 1000) + 7 * 86400 * 1000)}
            )

    async def _stop(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        self.watching = False
        return Response(status_code=204)

    async def _history_list(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        query = request.query_params
        raw_start = query.get("startHistoryId")
        if not raw_start:
            return _bad_request("Missing required parameter: startHistoryId")
        try:
            start = int(raw_start)
        except ValueError:
            return _bad_request("Invalid startHistoryId")
        types = set(query.getlist("historyTypes")) or None
        label = query.get("labelId")
        max_results = max(1, min(int(query.get("maxResults", "100")), 500))
        offset = int(query.get("pageToken") or 0)
        with self._lock:
            if start < self._history_floor:
                return _not_found()
            records = [
                r
                for r in self._history
                if r.id > start
                and (types is None or r.kind in types)
                and (label is None or label in r.label_ids or label in r.changed_label_ids)
            ]
            current = self._history_id
        page = records[offset : offset + max_results]
        result: dict[str, Any] = {"historyId": str(current)}
        if page:
            result["history"] = [self._history_json(r) for r in page]
        if offset + max_results < len(records):
            result["nextPageToken"] = str(offset + max_results)
        return JSONResponse(result)

    @staticmethod
    def _history_json(record: HistoryRecord) -> dict[str, Any]:
        ref = {"id": record.message_id, "threadId": record.thread_id}
        full = {**ref, "labelIds": record.label_ids}
        out: dict[str, Any] = {"id": str(record.id), "messages": [ref]}
        if record.kind == "messageAdded":
            out["messagesAdded"] = [{"message": full}]
        elif record.kind == "messageDeleted":
            out["messagesDeleted"] = [{"message": full}]
        elif record.kind == "labelAdded":
            out["labelsAdded"] = [{"message": full, "labelIds": record.changed_label_ids}]
        elif record.kind == "labelRemoved":
            out["labelsRemoved"] = [{"message": full, "labelIds": record.changed_label_ids}]
        return out

    async def _messages_list(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        query = request.query_params
        labels = set(query.getlist("labelIds"))
        max_results = max(1, min(int(query.get("maxResults", "100")), 500))
        offset = int(query.get("pageToken") or 0)
        with self._lock:
            found = [
                m
                for m in sorted(self._messages.values(), key=lambda m: m.internal_date_ms, reverse=True)
                if labels <= set(m.label_ids)
            ]
        page = found[offset : offset + max_results]
        result: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            result["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + max_results < len(found):
            result["nextPageToken"] = str(offset + max_results)
        return JSONResponse(result)

    async def _messages_get(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        fmt = request.query_params.get("format", "full")
        if fmt not in {"full", "metadata", "minimal", "raw"}:
            return _bad_request(f"Invalid value at 'format' ({fmt})")
        with self._lock:
            stored = self._messages.get(request.path_params["id"])
        if stored is None:
            return _not_found()
        return JSONResponse(self._message_json(stored, fmt, request.query_params.getlist("metadataHeaders")))

    async def _messages_modify(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        body = json.loads(await request.body() or b"{}")
        with self._lock:
            stored = self._messages.get(request.path_params["id"])
            if stored is None:
                return _not_found()
            added = [x for x in body.get("addLabelIds", []) if x not in stored.label_ids]
            removed = [x for x in body.get("removeLabelIds", []) if x in stored.label_ids]
            stored.label_ids = [x for x in stored.label_ids if x not in removed] + added
            if added:
                stored.history_id = self._bump("labelAdded", stored, added)
            if removed:
                stored.history_id = self._bump("labelRemoved", stored, removed)
            return JSONResponse(self._message_json(stored, "minimal"))

    async def _threads_get(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        fmt = request.query_params.get("format", "full")
        with self._lock:
            members = sorted(
                (m for m in self._messages.values() if m.thread_id == request.path_params["id"]),
                key=lambda m: m.internal_date_ms,
            )
        if not members:
            return _not_found()
        return JSONResponse(
            {
                "id": request.path_params["id"],
                "historyId": str(max(m.history_id for m in members)),
                "messages": [
                    self._message_json(m, fmt, request.query_params.getlist("metadataHeaders")) for m in members
                ],
            }
        )

    async def _labels_list(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        return JSONResponse({"labels": [{"id": label, "name": label, "type": "system"} for label in SYSTEM_LABELS]})

    # ------------------------------------------------------------------ send
    async def _send_json(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _bad_request("Invalid JSON payload received.")
        if not body.get("raw"):
            return _bad_request("'raw' RFC822 payload message string or uploading message via /upload/* URL required")
        try:
            raw = b64url_decode(body["raw"])
        except (binascii.Error, ValueError):
            return _bad_request("Invalid value for ByteString: raw")
        return self._send(raw, body.get("threadId"))

    async def _send_upload(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied:
            return denied
        upload_type = request.query_params.get("uploadType")
        payload = await request.body()
        if upload_type == "media":
            return self._send(payload, None)
        if upload_type == "multipart":
            content_type = request.headers.get("content-type", "")
            match = re.search(r'boundary="?([^";]+)"?', content_type)
            if not match:
                return _bad_request("Missing multipart boundary")
            parts = self._split_multipart(payload, match.group(1).encode())
            if len(parts) != 2:
                return _bad_request("Multipart upload must have exactly two parts")
            metadata = json.loads(parts[0] or b"{}")
            return self._send(parts[1], metadata.get("threadId"))
        return _bad_request(f"Invalid uploadType: {upload_type}")

    @staticmethod
    def _split_multipart(payload: bytes, boundary: bytes) -> list[bytes]:
        parts = []
        for chunk in payload.split(b"--" + boundary)[1:]:
            if chunk.startswith(b"--"):
                break
            chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
            separator = b"\r\n\r\n" if b"\r\n\r\n" in chunk else b"\n\n"
            _, _, content = chunk.partition(separator)
            parts.append(content.removesuffix(b"\n").removesuffix(b"\r"))
        return parts

    def _send(self, raw: bytes, thread_id: str | None) -> Response:
        msg = _PARSER.parsebytes(raw)
        recipients = email.utils.getaddresses([str(v) for k in ("To", "Cc", "Bcc") for v in msg.get_all(k, [])])
        if not [addr for _, addr in recipients if addr]:
            return _bad_request("Recipient address required")
        changed = False
        if "From" not in msg:
            msg["From"] = self.email_address
            changed = True
        if "Message-ID" not in msg:
            msg["Message-ID"] = f"<{uuid.uuid4().hex}@mail.gmail.com>"
            changed = True
        if "Date" not in msg:
            msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
            changed = True
        stored_raw = msg.as_bytes() if changed else raw
        with self._lock:
            thread = None
            if thread_id:
                members = [m for m in self._messages.values() if m.thread_id == thread_id]
                if not members:
                    return _not_found()
                referenced = set(_message_ids(msg.get("In-Reply-To"))) | set(_message_ids(msg.get("References")))
                same_subject = any(
                    _normalize_subject(m.subject) == _normalize_subject(str(msg.get("Subject", ""))) for m in members
                )
                linked = any((m.message_id or "").strip() in referenced for m in members)
                if not self.strict_threading or (linked and same_subject):
                    thread = thread_id
            stored = self._store(stored_raw, ["SENT"], thread, int(time.time() * 1000))
            self.sent.append(stored)
        return JSONResponse({"id": stored.id, "threadId": stored.thread_id, "labelIds": list(stored.label_ids)})
