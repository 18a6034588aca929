"""The Gmail channel's inbound side: `push` (the Pub/Sub push endpoint, its envelope and the history
cursor), `oidc` (the push's ID token and Google's certificates) and `mime` (a Gmail message as an
InboundMessage)."""

from gateway.gmail.mime import html_to_text, inbound_from_gmail, skip_reason
from gateway.gmail.push import advance_cursor, load_cursor, parse_push, router

__all__ = ["advance_cursor", "html_to_text", "inbound_from_gmail", "load_cursor", "parse_push", "router", "skip_reason"]
