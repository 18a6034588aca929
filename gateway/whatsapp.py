"""Twilio WhatsApp webhooks: inbound messages and delivery-status callbacks.

Every request must carry a valid `X-Twilio-Signature` computed over the public URL and the form
parameters (the `twilio` library's validator). No auth token configured means no WhatsApp
traffic is accepted at all: the channel fails closed.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl, urlparse

from fastapi import APIRouter, Request
from fastapi.responses import Response
from twilio.request_validator import RequestValidator, add_port, remove_port

from core.errors import BadRequest, Forbidden
from core.logging import get_logger
from core.settings import Settings
from core.vocabulary import DELIVERY_PROGRESS, DeliveryStatus
from crm.identity import normalise_phone
from crm.repositories import messages
from gateway.deps import ResourcesDep
from gateway.producer import publish_inbound
from gateway.resources import Resources
from workflows.contracts import MAX_TEXT_CHARS, Attachment, InboundMessage, SenderIdentity

router = APIRouter(tags=["whatsapp"])
log = get_logger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Twilio's statuses: how far each got (the stored ranking), plus "sending", stored as "queued".
_STORED_STATUS: dict[str, DeliveryStatus] = {**{status: status for status in DELIVERY_PROGRESS}, "sending": "queued"}
MAX_MEDIA = 10
INBOUND_PATH = "/api/v1/webhooks/whatsapp"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 200


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL + path (behind a proxy/ingress), else what we received."""
    if settings.public_base_url is None:
        return str(request.url)
    # What `request.url.path` and `.query` give, read off the scope without building a URL object.
    scope = request.scope
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query = scope.get("query_string", b"").decode("latin-1").partition("#")[0]
    base = str(settings.public_base_url).rstrip("/")
    return f"{base}{path}?{query}" if query else f"{base}{path}"


@lru_cache(maxsize=256)
def _signed_url_variants(url: str) -> tuple[str, str]:
    """The URL without and with its port: Twilio may have signed either (as RequestValidator.validate)."""
    parsed = urlparse(url)
    return remove_port(parsed), add_port(parsed)


def signature_matches(validator: RequestValidator, url: str, params: _SignedParams, signature: str) -> bool:
    """`RequestValidator.validate` for form parameters, minus its repeated work.

    The same acceptance: Twilio's signature over the URL without or with its port. Both URL variants
    are cached per URL, the second signature is computed only if the first does not match, and the
    comparison is `hmac.compare_digest`.
    """
    given = signature.encode("latin-1", "replace")  # header values are latin-1 text
    for candidate in _signed_url_variants(url):
        if hmac.compare_digest(validator.compute_signature(candidate, params).encode(), given):
            return True
    return False


class _SignedParams(dict[str, list[str]]):
    """Form fields with every value of a repeated name, in the shape twilio's validator reads
    (`getall`, as on a MultiDict): Twilio signs each name once with all its values, so a repeated
    field must be checked with all of them, not only with the one the handler keeps."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def parse_twilio_form(request: Request, body: bytes) -> _SignedParams:
    """Twilio's `application/x-www-form-urlencoded` body; BadRequest (400) for anything else.

    `parse_qsl` on the raw body rather than `request.form()`: Twilio never posts multipart, and
    python-multipart's general parser costs far more per webhook than this does.
    """
    content_type = request.headers.get("content-type")
    media_type = content_type.partition(";")[0].strip().lower() if content_type else ""
    if media_type != FORM_MEDIA_TYPE and (body or media_type):
        shown = (content_type or "none")[:80]
        raise BadRequest(f"the body must be {FORM_MEDIA_TYPE} (got content-type {shown})")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body must be {FORM_MEDIA_TYPE} in UTF-8") from exc
    except ValueError as exc:  # more than MAX_FORM_FIELDS fields
        raise BadRequest(f"the body must be {FORM_MEDIA_TYPE} with at most {MAX_FORM_FIELDS} fields") from exc
    params = _SignedParams()
    for key, value in pairs:
        values = params.get(key)
        if values is None:
            params[key] = [value]
        else:
            values.append(value)
    return params


async def verified_form(request: Request, settings: Settings) -> dict[str, str]:
    """The POSTed form, only if Twilio signed it; 403 otherwise (and always when unconfigured).

    A field sent more than once is signed with all its values and read as its last one.
    """
    if settings.twilio_auth_token is None or not settings.twilio_auth_token.get_secret_value():
        raise Forbidden("the WhatsApp channel is not configured (TWILIO_AUTH_TOKEN is unset); refusing traffic")
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise Forbidden("missing X-Twilio-Signature")
    signed = parse_twilio_form(request, await request.body())
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not signature_matches(validator, public_url(request, settings), signed, signature):
        log.warning("whatsapp.bad_signature", path=request.url.path)
        raise Forbidden("invalid X-Twilio-Signature")
    # Signed, but PostgreSQL text cannot hold NUL: drop it (it means nothing in a message or an id).
    return {key.replace("\x00", ""): values[-1].replace("\x00", "") for key, values in signed.items()}


def to_inbound(params: dict[str, str]) -> InboundMessage:
    """Normalise Twilio's form fields into the channel-neutral message."""
    sid = params.get("MessageSid") or params.get("SmsMessageSid")
    if not sid or len(sid) > 64:
        raise BadRequest("MessageSid is required")
    phone = normalise_phone(params.get("From"))
    if phone is None:
        raise BadRequest("From must be a WhatsApp number such as whatsapp:+14155550100")
    try:
        media_count = min(int(params.get("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError as exc:
        raise BadRequest("NumMedia must be a number") from exc
    attachments = [
        Attachment(url=params.get(f"MediaUrl{i}"), content_type=params.get(f"MediaContentType{i}"))
        for i in range(media_count)
        if params.get(f"MediaUrl{i}")
    ]
    body = (params.get("Body") or "").strip()
    if not body and attachments:
        kinds = ", ".join(sorted({(a.content_type or "file").split("/")[0] for a in attachments}))
        body = f"[The customer sent {len(attachments)} attachment(s): {kinds}]"
    if not body:
        raise BadRequest("the message has neither text nor media")
    return InboundMessage(
        channel="whatsapp",
        external_message_id=sid,
        conversation_key=phone,
        sender=SenderIdentity(phone=phone, name=(params.get("ProfileName") or None)),
        text=body[:MAX_TEXT_CHARS],
        received_at=datetime.now(UTC),
        attachments=attachments,
        metadata={"to": params.get("To", "")[:64], "wa_id": params.get("WaId", "")[:32]},
    )


@router.post(
    INBOUND_PATH,
    response_class=Response,
    responses={200: {"content": {"text/xml": {}}}, 403: {"description": "Bad or missing signature"}},
)
async def whatsapp_inbound(request: Request) -> Response:
    """Accept a customer's WhatsApp message; 200 (empty TwiML) only after Kafka acknowledged it.

    With tracing off, `gateway.app.InboundWebhookFastPath` calls this ahead of FastAPI's routing.
    """
    # Only `request`, no dependencies: the fast path calls it with a bare Request.
    resources: Resources = request.app.state.resources
    params = await verified_form(request, resources.settings)
    message = to_inbound(params)
    await resources.limiter.check("whatsapp", message.conversation_key)
    await publish_inbound(resources, message)
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post("/api/v1/webhooks/whatsapp/status", status_code=204, response_class=Response)
async def whatsapp_status(request: Request, resources: ResourcesDep) -> Response:
    """Delivery status of a reply we sent; out-of-order callbacks never move a status backwards."""
    params = await verified_form(request, resources.settings)
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or status not in _STORED_STATUS:
        raise BadRequest("MessageSid and a known MessageStatus are required")
    stored = _STORED_STATUS[status]
    async with resources.sessions() as session, session.begin():
        updated = await messages.advance_delivery_status(
            session, provider_message_id=sid, status=stored, error_code=params.get("ErrorCode") or None
        )
    log.info("whatsapp.status", sid=sid, status=status, updated=updated)
    return Response(status_code=204)
