"""Credentials in text: API keys in their vendors' formats, "password: …" assignments, long random strings.

The reply check (output.py) holds back a reply that carries one (ours, from a poisoned passage, or
one a customer pasted); the inbound rules (rules.py) hand a message that carries one to a person (a
live credential sent over a support channel is exposed and must be revoked). Read on the text in its
original case: key formats are case-sensitive.
"""

from __future__ import annotations

import re

_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\bsk-(?:proj-|live-|test-|ant-|svcacct-)?[A-Za-z0-9_-]{16,}",  # OpenAI / Anthropic-style keys
        r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
        # Any vendor's key in Stripe's style, a short prefix and its environment: "tc_live_8f3K…".
        r"\b[a-z]{2,10}_(?:live|test|prod)_[A-Za-z0-9]{16,}",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",  # AWS access key ids
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}",  # Slack tokens
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
        r"(?i:\bbearer)\s+[A-Za-z0-9._~+/-]{20,}=*",
        r"(?i:[?&](?:access_?token|api_?key|token|secret|sig|signature|password)=)[^&\s]{12,}",
        r"(?i:\b[a-z]+://[^\s:/@]+:)[^\s@/]+@",  # credentials inside a URL
    )
)
# "password: hunter2!", "api_key = 9f8e...": a credential word, then a value that looks like one
# (a digit or a symbol in it), so "Password: must be 12 characters" is not a leak.
_CREDENTIAL_ASSIGNMENT = re.compile(
    r"(?i:\b(?:password|passwd|pwd|passcode|pass\s*phrase|secret(?:\s+key)?|client\s*secret|api[\s_-]?key|"
    r"access[\s_-]?key|(?:access|auth|bearer|refresh|api)[\s_-]?token|private[\s_-]?key)\b)"
    r"\s*(?:[:=]|\bis\b)\s*[\"'`]?(?=[^\s\"'`]*[0-9!@#$%^&*_+=~|<>?])(?=[^\s\"'`]*[A-Za-z])[^\s\"'`]{6,}"
)
# Long random-looking strings: 32+ hex digits, or 40+ base64 characters mixing cases and digits.
_HEX_SECRET = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
_BASE64_SECRET = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_-])")
_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)


def _looks_random(token: str) -> bool:
    """A base64-ish token with upper case, lower case and digits all present (not a word or a path)."""
    return any(c.isupper() for c in token) and any(c.islower() for c in token) and sum(c.isdigit() for c in token) >= 2


def contains_key(text: str) -> bool:
    """Whether the text carries a credential in a known format or given as a credential word's value
    ("password: hunter2!"): what the inbound rules read. Long hex or base64 strings alone are not
    enough there: customers paste webhook signatures, request ids and commit hashes to be helped."""
    return any(p.search(text) for p in _SECRET_PATTERNS) or bool(_CREDENTIAL_ASSIGNMENT.search(text))


def contains_secret(text: str) -> bool:
    """Whether the text carries a credential: a known key format, a credential word given a value, or a
    long random-looking string (a URL's path segments aside): what a reply may never carry."""
    if contains_key(text):
        return True
    without_urls = _URL.sub(" ", text)  # long path segments are not secrets; query tokens were checked above
    if _HEX_SECRET.search(without_urls):
        return True
    return any(_looks_random(m.group(0)) for m in _BASE64_SECRET.finditer(without_urls))
