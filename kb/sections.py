"""Search hits read whole: a section too long for one chunk was stored in pieces, and a reader (the
model's `search_knowledge_base` tool, a person's `GET /api/v1/kb/search`) wants the section, not
whichever piece matched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from crm.repositories import knowledge_base
from kb.search import SearchHit

# A section read whole is cut here (at a line end): a pathological article must not fill the context.
MAX_SECTION_CHARS = 6000
# A continuation piece repeats the end of the piece before it (the chunker's overlap); shorter
# matches than this are coincidences, not overlap.
MIN_OVERLAP_CHARS = 12
_LEADING_HEADINGS = re.compile(r"\A(?:[ \t]*#{1,6}[ \t][^\n]*\n+)+")


def whole_section(pieces: list[str]) -> str:
    """One section from the chunks it was stored in, in order: each continuation's repeated headings
    and its overlap with the piece before are dropped."""
    text = pieces[0].strip()
    for piece in pieces[1:]:
        body = _LEADING_HEADINGS.sub("", piece.strip() + "\n").strip()
        longest = min(len(body), len(text), 1000)
        overlap = next((k for k in range(longest, MIN_OVERLAP_CHARS - 1, -1) if text.endswith(body[:k])), 0)
        text = text + body[overlap:] if overlap else f"{text}\n\n{body}"
    if len(text) > MAX_SECTION_CHARS:
        text = text[: text.rfind("\n", 0, MAX_SECTION_CHARS)].rstrip() + "\n…"
    return text


async def section_texts(session: AsyncSession, hits: Sequence[SearchHit]) -> list[str]:
    """The whole section of each hit, in the hits' order (the hit's own chunk when nothing else is stored)."""
    texts: list[str] = []
    for hit in hits:
        pieces = [
            piece.content
            for piece in await knowledge_base.section_chunks(
                session, article_id=hit.article_id, heading_path=hit.heading_path
            )
            if piece.heading_path == hit.heading_path
        ]
        texts.append(whole_section(pieces or [hit.content]))
    return texts
