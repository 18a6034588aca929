"""Pure email helpers shared by the inbound side (gateway) and the outbound side (the Gmail channel).

- `References` chains: the gateway stores an inbound email's chain, the channel builds a reply's
  chain from it. Both keep the first and the latest ids of a long chain, as mail clients do, so
  one rule serves both (`trim_references`, `reply_references`).
- Quoted history: `strip_quoted_reply` keeps the customer's new words from an email body.

No I/O: safe to import anywhere.
"""

from __future__ import annotations

import re

# RFC 5322 allows long chains; clients keep the root and the most recent ids.
MAX_REFERENCES = 10
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def message_ids(value: str | None) -> list[str]:
    """The `<...>` message ids in a header value, in order."""
    return _MESSAGE_ID.findall(value or "")


def _first_and_latest(ids: list[str]) -> list[str]:
    if len(ids) > MAX_REFERENCES:
        return ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return ids


def trim_references(value: str) -> str:
    """An inbound `References` header with the chain trimmed; kept as it is (stripped) if it holds no ids."""
    ids = message_ids(value)
    if not ids:
        return value.strip()
    return " ".join(_first_and_latest(ids))


def reply_references(previous: str | None, parent_id: str | None) -> str | None:
    """A reply's `References`: the parent's chain plus the parent's Message-ID, trimmed (None if empty)."""
    ids = message_ids(previous)
    for parent in message_ids(parent_id):
        if parent not in ids:
            ids.append(parent)
    return " ".join(_first_and_latest(ids)) or None


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
