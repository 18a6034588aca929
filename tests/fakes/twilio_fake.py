"""A local stand-in for Twilio's Programmable Messaging REST API (2010-04-01) and its webhooks.

Pointing the official ``twilio.rest.Client`` at the fake
---------------------------------------------------------
Every Twilio product is a ``twilio.base.domain.Domain`` whose public ``base_url``
attribute (``"https://api.twilio.com"`` for ``client.api``) is read on each request by
``Domain.absolute_url``.  Messages live on the ``api`` domain, so with no patching::

    client = Client(fake.account_sid, fake.auth_token)
    client.api.base_url = fake.base_url          # the whole mechanism
    client.messages.create(from_=..., to=..., body=...)

(``fake.client()`` does exactly this.)  ``edge``/``region`` must stay unset (also the
``TWILIO_EDGE``/``TWILIO_REGION`` environment variables): ``ClientBase.get_hostname``
rewrites the host name when either is set, which would mangle ``127.0.0.1:<port>``;
``fake.client()`` passes ``environment=NO_EDGE_ENVIRONMENT`` (both blank) to rule that out
(an empty mapping would not do: the client then falls back to ``os.environ``).  The async variant works the
same way with ``http_client=twilio.http.async_http_client.AsyncTwilioHttpClient()``
(aiohttp) and ``await client.messages.create_async(...)``; see ``fake.async_client()``.

Endpoints
---------
* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded ``To``, ``From``,
  ``MessagingServiceSid``, ``Body``, ``MediaUrl`` (repeatable), ``StatusCallback``, ...)
  -> 201 + message resource, ``status: "queued"``.
* ``GET .../Messages/{Sid}.json`` and ``GET .../Messages.json`` (``To``/``From`` filters, paging).

HTTP basic auth is checked (account SID + auth token, or an API key SID + secret from
``api_keys``); failures get Twilio's error JSON ``{"code", "message", "more_info",
"status"}`` (20003 / 401).  Validation mirrors Twilio: 21604 missing To, 21603 missing
From, 21602 missing Body/MediaUrl, 21617 Body over 1600 characters, 21910 mixed
whatsapp/non-whatsapp channels.  ``push_error`` queues arbitrary failures (e.g. 429/20429).

Templates: ``ContentSid`` (``HX`` + 32 hex, else 21655) with ``ContentVariables`` (a JSON object of
strings, else 21656) replaces ``Body``; both are kept on the message (``content_sid``,
``content_variables``).  WhatsApp's 24-hour window: with ``enforce_whatsapp_window=True`` a free-form
message (no ContentSid) to a WhatsApp number whose last inbound message (``record_inbound``, or any
``post_inbound_message``) is older than 24 hours, or unknown, is refused with 400 / 63016.  (Real
Twilio accepts such a message and reports 63016 in its status callback; ``set_delivery_failure``
simulates that form.)

Status callbacks (``X-Twilio-Signature`` computed with
``twilio.request_validator.RequestValidator(auth_token)``) are sent either explicitly via
``fire_status_callbacks(sid, [...])`` / ``afire_status_callbacks`` or automatically after
each create when ``auto_callbacks=("queued", "sent", "delivered")`` is set (any order -
pass them out of order to simulate Twilio's unordered delivery).  ``post_inbound_message``
sends a signed inbound-message webhook, as Twilio does for WhatsApp/SMS replies.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from ._server import FakeServer

__all__ = [
    "NO_EDGE_ENVIRONMENT",
    "CallbackDelivery",
    "FakeMessage",
    "TwilioError",
    "TwilioFake",
    "new_sid",
]

API_VERSION = "2010-04-01"
# ``Client(environment=...)`` falls back to ``os.environ`` when given an empty mapping, so
# blank the two variables that would make ``get_hostname`` rewrite the fake's host.
NO_EDGE_ENVIRONMENT = {"TWILIO_EDGE": "", "TWILIO_REGION": ""}
BODY_LIMIT = 1600
WHATSAPP_WINDOW = timedelta(hours=24)
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "failed": 4,
    "undelivered": 4,
    "delivered": 4,
    "read": 5,
}
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=False).replace("-0000", "+0000")


def count_segments(body: str) -> int:
    if not body:
        return 1
    if set(body) <= _GSM7:
        return 1 if len(body) <= 160 else -(-len(body) // 153)
    return 1 if len(body) <= 70 else -(-len(body) // 67)


@dataclass
class TwilioError:
    """A Twilio REST error; ``status`` is the HTTP status, ``code`` the Twilio error code."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass
class CallbackDelivery:
    """One status-callback / webhook POST the fake made."""

    url: str
    params: dict[str, str]
    signature: str
    status_code: int | None = None
    error: str | None = None
    sent_at: float = field(default_factory=time.time)


@dataclass
class FakeMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    media_urls: list[str]
    params: dict[str, list[str]]
    date_created: datetime
    status: str = "queued"
    date_updated: datetime | None = None
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    callbacks: list[CallbackDelivery] = field(default_factory=list)
    # A template send: the Content SID and its variables ({"1": "Sam", ...}) instead of a body.
    content_sid: str | None = None
    content_variables: dict[str, str] | None = None

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def to_json(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent) if self.date_sent else None,
            "date_updated": rfc2822(self.date_updated or self.date_created),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(count_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}/Media.json",
                "feedback": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}/Feedback.json",
            },
            "to": self.to,
            "uri": self.uri,
        }


class TwilioFake(FakeServer):
    def __init__(
        self,
        *,
        tls: bool = False,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_keys: Mapping[str, str] | None = None,
        auto_callbacks: Sequence[str] | None = None,
        callback_delay: float = 0.0,
        enforce_whatsapp_window: bool = False,
    ) -> None:
        super().__init__(tls=tls)
        self.account_sid = account_sid or "AC" + "0123456789abcdef" * 2
        self.auth_token = auth_token or "f" * 32
        self.api_keys = dict(api_keys or {})
        self.auto_callbacks = tuple(auto_callbacks) if auto_callbacks else None
        self.callback_delay = callback_delay
        self.validator = RequestValidator(self.auth_token)
        self._lock = threading.Lock()
        self._messages: dict[str, FakeMessage] = {}
        self._errors: list[TwilioError] = []
        self._delivery_failures: dict[str, tuple[str, int]] = {}
        self.webhook_deliveries: list[CallbackDelivery] = []
        self.enforce_whatsapp_window = enforce_whatsapp_window
        self._last_inbound: dict[str, datetime] = {}

    # ------------------------------------------------------------------ official client helpers
    def client(self, **kwargs: Any) -> Any:
        """A ``twilio.rest.Client`` whose ``api`` domain points at this fake."""
        from twilio.rest import Client

        kwargs.setdefault("environment", NO_EDGE_ENVIRONMENT)
        client = Client(self.account_sid, self.auth_token, **kwargs)
        client.api.base_url = self.base_url
        return client

    def async_client(self, **kwargs: Any) -> Any:
        """Same, with ``AsyncTwilioHttpClient``; create it inside a coroutine and
        ``await client.http_client.close()`` when done."""
        from twilio.http.async_http_client import AsyncTwilioHttpClient

        return self.client(http_client=AsyncTwilioHttpClient(), **kwargs)

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    # ------------------------------------------------------------------ state & knobs
    @property
    def messages(self) -> list[FakeMessage]:
        """Messages created through the API, oldest first."""
        with self._lock:
            return list(self._messages.values())

    def get_message(self, sid: str) -> FakeMessage:
        with self._lock:
            return self._messages[sid]

    def push_error(self, status: int, code: int, message: str) -> None:
        """Fail the next create request with this error (FIFO)."""
        with self._lock:
            self._errors.append(TwilioError(status, code, message))

    def push_rate_limit(self) -> None:
        self.push_error(429, 20429, "Too Many Requests")

    def set_delivery_failure(self, to: str, *, error_code: int = 63016, status: str = "undelivered") -> None:
        """Messages to ``to`` end in ``status`` (failed/undelivered) with ``error_code`` in callbacks.

        63016 is WhatsApp's "outside the 24 hour window" failure.
        """
        with self._lock:
            self._delivery_failures[to] = (status, error_code)

    def record_inbound(self, number: str, at: datetime | None = None) -> None:
        """The customer at ``number`` (``whatsapp:+...`` or ``+...``) wrote to us at ``at`` (now)."""
        address = number if number.startswith("whatsapp:") else f"whatsapp:{number}"
        with self._lock:
            self._last_inbound[address] = at or datetime.now(UTC)

    def reset(self) -> None:
        with self._lock:
            self._last_inbound.clear()
            self._messages.clear()
            self._errors.clear()
            self._delivery_failures.clear()
            self.webhook_deliveries.clear()
        self.clear_requests()

    # ------------------------------------------------------------------ app
    def build_app(self) -> Starlette:
        prefix = f"/{API_VERSION}/Accounts/{{account_sid}}"
        return Starlette(
            routes=[
                Route(f"{prefix}/Messages.json", self._create_message, methods=["POST"]),
                Route(f"{prefix}/Messages.json", self._list_messages, methods=["GET"]),
                Route(f"{prefix}/Messages/{{sid}}.json", self._fetch_message, methods=["GET"]),
            ]
        )

    @staticmethod
    def _error(error: TwilioError, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=dict(headers or {}))

    def _authenticate(self, request: Request) -> Response | None:
        unauthorized = self._error(
            TwilioError(401, 20003, "Authenticate"), {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        )
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return unauthorized
        try:
            username, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return unauthorized
        valid = (username == self.account_sid and password == self.auth_token) or (
            username in self.api_keys and self.api_keys[username] == password
        )
        if not valid:
            return unauthorized
        if request.path_params["account_sid"] != self.account_sid:
            return self._error(
                TwilioError(
                    404,
                    20404,
                    f"The requested resource {request.url.path} was not found",
                )
            )
        return None

    @staticmethod
    def _form_dict(form: FormData) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            params.setdefault(key, []).append(str(value))
        return params

    def _validate(self, params: dict[str, list[str]]) -> TwilioError | None:
        to = (params.get("To") or [""])[0]
        from_ = (params.get("From") or [""])[0]
        body = (params.get("Body") or [""])[0]
        if not to:
            return TwilioError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not params.get("MessagingServiceSid"):
            return TwilioError(400, 21603, "A 'From' phone number is required.")
        if not body and not params.get("MediaUrl") and not params.get("ContentSid"):
            return TwilioError(400, 21602, "Message body is required.")
        if len(body) > BODY_LIMIT:
            return TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if from_ and to.startswith("whatsapp:") != from_.startswith("whatsapp:"):
            return TwilioError(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
        content_sid = (params.get("ContentSid") or [""])[0]
        if content_sid:
            if not (content_sid.startswith("HX") and len(content_sid) == 34):
                return TwilioError(400, 21655, "The ContentSid is Invalid.")
            try:
                variables = json.loads((params.get("ContentVariables") or ["{}"])[0])
            except ValueError:
                variables = None
            if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
                return TwilioError(400, 21656, "The ContentVariables Parameter is invalid.")
        elif self.enforce_whatsapp_window and to.startswith("whatsapp:"):
            with self._lock:
                last = self._last_inbound.get(to)
            if last is None or datetime.now(UTC) - last > WHATSAPP_WINDOW:
                return TwilioError(
                    400,
                    63016,
                    "Failed to send freeform message because you are outside the allowed window. "
                    "If you are using WhatsApp, please use a Message Template.",
                )
        return None

    async def _create_message(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied:
            return denied
        params = self._form_dict(await request.form())
        with self._lock:
            injected = self._errors.pop(0) if self._errors else None
        if injected:
            return self._error(injected)
        invalid = self._validate(params)
        if invalid:
            return self._error(invalid)
        now = datetime.now(UTC)
        message = FakeMessage(
            sid=new_sid("MM" if params.get("MediaUrl") else "SM"),
            account_sid=self.account_sid,
            to=params["To"][0],
            from_=(params.get("From") or [None])[0],
            body=(params.get("Body") or [""])[0],
            messaging_service_sid=(params.get("MessagingServiceSid") or [None])[0],
            status_callback=(params.get("StatusCallback") or [None])[0],
            media_urls=params.get("MediaUrl", []),
            params=params,
            date_created=now,
            date_updated=now,
            status="accepted" if params.get("MessagingServiceSid") and not params.get("From") else "queued",
            content_sid=(params.get("ContentSid") or [None])[0],
            content_variables=json.loads(params["ContentVariables"][0]) if params.get("ContentVariables") else None,
        )
        with self._lock:
            self._messages[message.sid] = message
        if self.auto_callbacks and message.status_callback:
            self.spawn(self._auto_fire(message.sid, self.auto_callbacks))
        return JSONResponse(message.to_json(), status_code=201)

    async def _auto_fire(self, sid: str, statuses: Sequence[str]) -> None:
        await asyncio.sleep(0)  # let the create response go out first
        await self.afire_status_callbacks(sid, statuses, delay=self.callback_delay)

    async def _fetch_message(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied:
            return denied
        sid = request.path_params["sid"]
        with self._lock:
            message = self._messages.get(sid)
        if message is None:
            return self._error(TwilioError(404, 20404, f"The requested resource {request.url.path} was not found"))
        return JSONResponse(message.to_json())

    async def _list_messages(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied:
            return denied
        query = request.query_params
        page_size = max(1, min(int(query.get("PageSize", "50")), 1000))
        page = max(0, int(query.get("Page", "0")))
        with self._lock:
            found = [
                m
                for m in reversed(list(self._messages.values()))
                if ("To" not in query or m.to == query["To"]) and ("From" not in query or m.from_ == query["From"])
            ]
        chunk = found[page * page_size : (page + 1) * page_size]
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        filters = {k: query[k] for k in ("To", "From") if k in query}

        def page_uri(number: int) -> str:
            return f"{path}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

        has_next = (page + 1) * page_size < len(found)
        return JSONResponse(
            {
                "messages": [m.to_json() for m in chunk],
                "end": page * page_size + max(len(chunk) - 1, 0),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if has_next else None,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "start": page * page_size,
                "uri": page_uri(page),
            }
        )

    # ------------------------------------------------------------------ status callbacks
    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """``X-Twilio-Signature`` for a form POST of ``params`` to ``url``."""
        return self.validator.compute_signature(url, dict(params))

    def _plan_callbacks(
        self, sid: str, statuses: Iterable[str] | None, url: str | None
    ) -> tuple[FakeMessage, str, list[dict[str, str]]]:
        with self._lock:
            message = self._messages[sid]
            failure = self._delivery_failures.get(message.to)
        target = url or message.status_callback
        if not target:
            raise ValueError(f"message {sid} has no StatusCallback URL")
        if statuses is None:
            statuses = ("queued", "sent", failure[0]) if failure else ("queued", "sent", "delivered")
        plans = []
        for status in statuses:
            params = {
                "AccountSid": message.account_sid,
                "ApiVersion": API_VERSION,
                "From": message.from_ or "",
                "To": message.to,
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "MessageStatus": status,
                "SmsStatus": status,
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if message.to.startswith("whatsapp:"):
                params["ChannelPrefix"] = "whatsapp"
                params["ChannelToAddress"] = message.to.removeprefix("whatsapp:")
                params["ChannelInstallSid"] = "XE" + "0" * 32
                params["StructuredMessage"] = "false"
            if status in {"failed", "undelivered"}:
                params["ErrorCode"] = str(failure[1] if failure else 30003)
            plans.append(params)
        return message, target, plans

    def _apply_status(self, message: FakeMessage, params: Mapping[str, str]) -> None:
        status = params["MessageStatus"]
        now = datetime.now(UTC)
        with self._lock:
            if STATUS_RANK.get(status, 0) >= STATUS_RANK.get(message.status, 0):
                message.status = status
                message.date_updated = now
                if status in {"sent", "delivered", "read"} and message.date_sent is None:
                    message.date_sent = now
                if "ErrorCode" in params:
                    message.error_code = int(params["ErrorCode"])

    def _record(self, message: FakeMessage | None, delivery: CallbackDelivery) -> None:
        with self._lock:
            self.webhook_deliveries.append(delivery)
            if message is not None:
                message.callbacks.append(delivery)

    def fire_status_callbacks(
        self, sid: str, statuses: Iterable[str] | None = None, *, url: str | None = None, delay: float = 0.0
    ) -> list[CallbackDelivery]:
        """POST signed status callbacks for message ``sid`` in the given order (sync, from a test).

        ``statuses`` defaults to queued, sent, delivered (or the configured delivery failure).
        The message resource's ``status`` follows the most advanced status delivered.
        """
        message, target, plans = self._plan_callbacks(sid, statuses, url)
        deliveries = []
        with httpx.Client(timeout=10) as http:
            for index, params in enumerate(plans):
                if delay and index:
                    time.sleep(delay)
                self._apply_status(message, params)
                deliveries.append(self._deliver_sync(http, target, params, message))
        return deliveries

    async def afire_status_callbacks(
        self, sid: str, statuses: Iterable[str] | None = None, *, url: str | None = None, delay: float = 0.0
    ) -> list[CallbackDelivery]:
        """Async twin of :meth:`fire_status_callbacks`."""
        message, target, plans = self._plan_callbacks(sid, statuses, url)
        deliveries = []
        async with httpx.AsyncClient(timeout=10) as http:
            for index, params in enumerate(plans):
                if delay and index:
                    await asyncio.sleep(delay)
                self._apply_status(message, params)
                deliveries.append(await self._deliver_async(http, target, params, message))
        return deliveries

    def _webhook_headers(self, url: str, params: Mapping[str, str]) -> dict[str, str]:
        return {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "X-Twilio-Signature": self.sign(url, params),
        }

    def _deliver_sync(
        self, http: httpx.Client, url: str, params: dict[str, str], message: FakeMessage | None
    ) -> CallbackDelivery:
        headers = self._webhook_headers(url, params)
        delivery = CallbackDelivery(url=url, params=params, signature=headers["X-Twilio-Signature"])
        try:
            response = http.post(url, content=urlencode(params), headers=headers)
            delivery.status_code = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = repr(exc)
        self._record(message, delivery)
        return delivery

    async def _deliver_async(
        self, http: httpx.AsyncClient, url: str, params: dict[str, str], message: FakeMessage | None
    ) -> CallbackDelivery:
        headers = self._webhook_headers(url, params)
        delivery = CallbackDelivery(url=url, params=params, signature=headers["X-Twilio-Signature"])
        try:
            response = await http.post(url, content=urlencode(params), headers=headers)
            delivery.status_code = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = repr(exc)
        self._record(message, delivery)
        return delivery

    # ------------------------------------------------------------------ inbound webhooks
    def inbound_params(
        self,
        *,
        from_: str,
        to: str,
        body: str,
        profile_name: str | None = None,
        media: Sequence[tuple[str, str]] = (),
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Form parameters Twilio posts for an incoming WhatsApp/SMS message.

        ``media`` is a list of ``(url, content_type)``.
        """
        sid = new_sid("MM" if media else "SM")
        params = {
            "SmsMessageSid": sid,
            "NumMedia": str(len(media)),
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": str(count_segments(body)),
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        if from_.startswith("whatsapp:"):
            params["WaId"] = from_.removeprefix("whatsapp:").lstrip("+")
            params["MessageType"] = "image" if media else "text"
            params["ReferralNumMedia"] = "0"
            params["ProfileName"] = profile_name or "Test Customer"
        for index, (media_url, content_type) in enumerate(media):
            params[f"MediaUrl{index}"] = media_url
            params[f"MediaContentType{index}"] = content_type
        params.update(extra or {})
        return params

    def post_inbound_message(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST a signed inbound-message webhook (see :meth:`inbound_params`) to ``url``."""
        params = self.inbound_params(**kwargs)
        self.record_inbound(params["From"])
        headers = self._webhook_headers(url, params)
        with httpx.Client(timeout=10) as http:
            response = http.post(url, content=urlencode(params), headers=headers)
        self._record(None, CallbackDelivery(url, params, headers["X-Twilio-Signature"], response.status_code))
        return response

    async def apost_inbound_message(self, url: str, **kwargs: Any) -> httpx.Response:
        params = self.inbound_params(**kwargs)
        self.record_inbound(params["From"])
        headers = self._webhook_headers(url, params)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, content=urlencode(params), headers=headers)
        self._record(None, CallbackDelivery(url, params, headers["X-Twilio-Signature"], response.status_code))
        return response
