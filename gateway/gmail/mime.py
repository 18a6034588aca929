"""A Gmail `full` message resource as the channel-neutral InboundMessage.

text/plain preferred, else HTML converted to text; quoted replies and signatures stripped
(`core.mail`, the one rule shared with the outbound side); Gmail's threadId as the conversation
key; the threading headers in the metadata, so the reply lands in the same thread. Mail the agent
must not answer (its own, drafts, spam, automatic replies) is recognised here too.
"""

from __future__ import annotations

import base64
import binascii
import email.header
import email.utils
import html
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import authres

from core.mail import strip_quoted_reply, trim_references
from workflows.contracts import MAX_TEXT_CHARS, Attachment, InboundMessage, SenderIdentity

# Labels of mail the agent must not answer: its own sends and drafts, spam, trash, chat.
SKIP_LABELS = frozenset({"SENT", "DRAFT", "SPAM", "TRASH", "CHAT"})
# The server that received the mail for the mailbox and wrote the topmost Authentication-Results.
GMAIL_AUTHSERV_ID = "mx.google.com"
MAX_METADATA_CHARS = 2000
MAX_ATTACHMENTS = 50


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


def _aligned(domain: str, from_domain: str) -> bool:
    domain = domain.strip().lower().lstrip("@").rpartition("@")[2]
    return bool(domain) and (domain == from_domain or from_domain.endswith("." + domain))


def sender_authenticated(headers: Mapping[str, str], from_address: str) -> bool:
    """Did Gmail authenticate the From domain (a DMARC pass, or a DKIM/SPF pass aligned with it)?

    Only the topmost Authentication-Results counts, and only Gmail's own: a sender can put any
    header in its message, but Gmail adds its result above everything the sender wrote.
    """
    from_domain = from_address.rpartition("@")[2].strip().lower()
    raw = headers.get("authentication-results")
    if not from_domain or not raw:
        return False
    try:
        parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {raw}")
    except authres.AuthResError:  # an unreadable header proves nothing
        return False
    if str(parsed.authserv_id).lower() != GMAIL_AUTHSERV_ID:
        return False
    for result in parsed.results:
        if str(result.result).lower() != "pass":
            continue
        wanted = {"dmarc": ("header", "from"), "dkim": ("header", "i"), "spf": ("smtp", "mailfrom")}.get(
            str(result.method).lower()
        )
        if wanted is None:
            continue
        for prop in result.properties:
            if (str(prop.type).lower(), str(prop.name).lower()) == wanted and _aligned(str(prop.value), from_domain):
                return True
            if str(result.method).lower() == "dkim" and str(prop.name).lower() == "d":
                if _aligned(str(prop.value), from_domain):
                    return True
    return False


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
        "references": trim_references(headers.get("references", "")),
        "in_reply_to": " ".join(headers.get("in-reply-to", "").split()),
        "from": decode_header_value(headers.get("from", "")),
        "reply_to": decode_header_value(headers.get("reply-to", "")),
        # Whether the From address may identify the customer (crm.identity: a verified identifier).
        "sender_authenticated": "true" if sender_authenticated(headers, address) else "false",
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
