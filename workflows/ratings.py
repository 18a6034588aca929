"""Reading a customer's rating from the message they reply with (pure, deterministic: used in workflow code).

After "How did we do? Reply with a number from 1 to 5", people write "4", "4/5", "5 stars",
"⭐⭐⭐⭐", "2 - took too long", "3. ok I guess". A message that starts with anything else is
not a rating: it is a new question, and starts a new conversation.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(
    r"^\s*(?P<score>[1-5])\s*(?:/\s*5|(?:out\s+of|of)\s+5|stars?|\*)?(?=$|[\s.,;:!)\-\u2013\u2014])[\s.,;:!)\-\u2013\u2014]*(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_STARS = re.compile(r"^\s*(?P<stars>(?:\u2b50\ufe0f?|\u2605){1,5})\s*(?P<rest>.*)$", re.DOTALL)
MAX_COMMENT_CHARS = 1000


def parse_rating(text: str) -> tuple[int, str | None] | None:
    """(score, comment) when `text` is a rating; None when it is something else."""
    found = _NUMBER.match(text)
    if found is not None:
        score = int(found["score"])
        rest = found["rest"]
    else:
        stars = _STARS.match(text)
        if stars is None:
            return None
        score = stars["stars"].count("\u2b50") + stars["stars"].count("\u2605")
        rest = stars["rest"]
    comment = " ".join(rest.split())[:MAX_COMMENT_CHARS] or None
    return score, comment
