"""Markdown articles into retrieval-sized chunks.

An article is a Markdown file with a small front matter (``title``, ``category``). Its body is cut
into blocks (paragraphs, lists, tables, code fences, headings), and every section (the text under
one `##`/`###` heading, or the introduction before the first one) becomes its own chunk: a
customer's question is answered by a section, so retrieval ranks sections and the answer can
quote one whole. A section longer than ``max_chars`` is packed into pieces of about
``target_chars``..``max_chars``, split at line, then sentence, then word boundaries, and a piece
cut inside a section carries its last sentence into the next one. Every chunk starts with the
article title and its heading path, so a chunk read alone (by the embedder, by full-text search
or by the language model) still says what it is about. Pure and deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CATEGORY = "general"

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(?P<body>.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^(?P<marks>#{1,6})[ \t]+(?P<text>.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
# A sentence ends with . ! ? (optionally followed by a closing quote/bracket/emphasis) and a space.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]*_]*\s+(?=\S)")
_MARKUP = re.compile(r"(\*\*|__|`|^#{1,6}\s*|^\s*[-*+]\s+|^\s*\d+\.\s+|\|)", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", re.MULTILINE)
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Article:
    """A parsed Markdown article."""

    article_id: str
    title: str
    category: str
    body: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One retrieval unit of an article; `content` already carries the title and section."""

    article_id: str
    chunk_index: int
    title: str
    category: str
    section: str | None
    content: str
    # The headings above the chunk, outermost first, without the title or the `#` marks.
    heading_path: tuple[str, ...] = ()

    @property
    def path_text(self) -> str:
        """The title and heading path joined for display: `Title > Section > Subsection`."""
        return " > ".join((self.title, *self.heading_path))


@dataclass(frozen=True)
class _Block:
    text: str
    headings: tuple[str, ...]  # the heading lines in effect (outermost first), as Markdown
    is_heading: bool = False


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """Split `key: value` front matter (between `---` lines) from the Markdown body."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    meta: dict[str, str] = {}
    for line in match["body"].splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or line[:1].isspace():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        meta[key.strip().lower()] = value
    return meta, text[match.end() :]


def parse_article(text: str, *, article_id: str) -> Article:
    """Read title and category from the front matter (or the first `# heading`) and keep the body."""
    meta, body = parse_front_matter(text)
    title = meta.get("title", "").strip()
    if not title:
        for line in body.splitlines():
            heading = _HEADING.match(line.strip())
            if heading and len(heading["marks"]) == 1:
                title = heading["text"].strip()
                break
    if not title:
        title = article_id.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ").strip().capitalize()
    category = meta.get("category", "").strip() or DEFAULT_CATEGORY
    return Article(article_id=article_id, title=title, category=category, body=body, metadata=meta)


def read_article(path: Path, *, article_id: str) -> Article:
    """Parse one Markdown file (UTF-8, with or without a BOM)."""
    return parse_article(path.read_text(encoding="utf-8-sig"), article_id=article_id)


def _blocks(body: str) -> list[_Block]:
    """Paragraph-level blocks, each knowing the headings above it; the first H1 (the title) is dropped."""
    blocks: list[_Block] = []
    stack: list[tuple[int, str]] = []
    current: list[str] = []
    in_fence = False
    seen_h1 = False

    def flush() -> None:
        if current:
            text = "\n".join(current).strip("\n")
            if text.strip():
                blocks.append(_Block(text=text, headings=tuple(h for _, h in stack)))
            current.clear()

    for raw in body.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        if _FENCE.match(line.lstrip()):
            if not in_fence:
                flush()
            current.append(line)
            in_fence = not in_fence
            if not in_fence:
                flush()
            continue
        if in_fence:
            current.append(line)
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = len(heading["marks"])
            if level == 1 and not seen_h1:
                seen_h1 = True
                stack.clear()
                continue
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, f"{heading['marks']} {heading['text'].strip()}"))
            blocks.append(_Block(text=stack[-1][1], headings=tuple(h for _, h in stack), is_heading=True))
            continue
        if not line.strip():
            flush()
            continue
        current.append(line)
    flush()
    return blocks


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (whitespace inside each is kept as written)."""
    return [part for part in _SENTENCE_END.split(text) if part.strip()]


def _split_words(text: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if len(candidate) > max_chars and current:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _split_long(text: str, max_chars: int) -> list[str]:
    """Pieces of at most `max_chars`: by line (lists, tables), then sentence, then word."""
    if len(text) <= max_chars:
        return [text]
    lines = text.split("\n")
    units: list[str] = []
    separator = "\n"
    if len(lines) > 1:
        units = lines
    else:
        units = split_sentences(text)
        separator = " "
        if len(units) <= 1:
            return _split_words(text, max_chars)
    pieces: list[str] = []
    current = ""
    for unit in units:
        for part in _split_long(unit, max_chars) if len(unit) > max_chars else [unit]:
            candidate = f"{current}{separator}{part}" if current else part
            if len(candidate) > max_chars and current:
                pieces.append(current)
                current = part
            else:
                current = candidate
    if current:
        pieces.append(current)
    return pieces


def _tail_sentence(text: str, max_chars: int) -> str | None:
    """The last sentence of a chunk, repeated at the start of the next one (None when too long)."""
    last_paragraph = text.rsplit("\n", 1)[-1]
    if last_paragraph.lstrip().startswith(("|", "```", "~~~")):
        return None  # a table row or the end of a code block is no sentence to repeat
    sentences = split_sentences(last_paragraph)
    if not sentences:
        return None
    tail = sentences[-1].strip()
    return tail if 0 < len(tail) <= max_chars else None


def chunk_article(
    article: Article,
    *,
    target_chars: int = 800,
    max_chars: int = 1200,
    overlap_chars: int = 200,
) -> list[Chunk]:
    """Cut an article into chunks of about `target_chars`..`max_chars` characters of body text."""
    if not 0 < target_chars <= max_chars:
        raise ValueError("need 0 < target_chars <= max_chars")
    blocks: list[_Block] = []
    for block in _blocks(article.body):
        if block.is_heading or len(block.text) <= max_chars:
            blocks.append(block)
        else:
            # Pieces of `target_chars` leave room in a chunk for the overlap and the next piece.
            blocks.extend(_Block(text=p, headings=block.headings) for p in _split_long(block.text, target_chars))

    packed: list[tuple[tuple[str, ...], list[str]]] = []  # (headings above the chunk, body parts)
    current: list[_Block] = []
    size = 0

    def start_headings(first: _Block) -> tuple[str, ...]:
        # A chunk that starts inside a section repeats the headings it sits under.
        return first.headings[:-1] if first.is_heading else first.headings

    for block in blocks:
        length = len(block.text) + 2
        # Every heading starts a new chunk: a section is the unit a question is answered by.
        if current and (size + length > max_chars or block.is_heading):
            # Headings at the end of a full chunk introduce what follows: move them along.
            pending: list[_Block] = []
            while current and current[-1].is_heading:
                pending.insert(0, current.pop())
            carry = None
            if current and not pending and not block.is_heading and overlap_chars > 0:
                carry = _tail_sentence(current[-1].text, overlap_chars)
            if current:
                packed.append((start_headings(current[0]), [b.text for b in current]))
            current = pending
            if carry and len(carry) + length <= max_chars:
                current.append(_Block(text=carry, headings=block.headings))
            size = sum(len(b.text) + 2 for b in current)
        current.append(block)
        size += length
    if any(not b.is_heading for b in current):
        packed.append((start_headings(current[0]), [b.text for b in current]))
    elif current and packed:
        packed[-1][1].extend(b.text for b in current)

    chunks: list[Chunk] = []
    for index, (headings, body_parts) in enumerate(packed):
        lines = [f"# {article.title}", *headings]
        path = [_heading_text(h) for h in headings]
        for part in body_parts:
            # Headings at the start of the chunk (a section and its first subsection) extend the path.
            if not _HEADING.match(part):
                break
            path.append(_heading_text(part))
        section = path[-1] if path else None
        content = "\n".join(lines) + "\n\n" + "\n\n".join(body_parts)
        chunks.append(
            Chunk(
                article_id=article.article_id,
                chunk_index=index,
                title=article.title,
                category=article.category,
                section=section,
                content=content.strip(),
                heading_path=tuple(path),
            )
        )
    return chunks


def _heading_text(line: str) -> str:
    match = _HEADING.match(line)
    return match["text"].strip() if match else line.strip()


def plain_text(markdown: str) -> str:
    """Markdown without its punctuation (emphasis, code ticks, list marks, table rules), for embedding."""
    text = _TABLE_RULE.sub("", markdown)
    text = _MARKUP.sub(" ", text)
    text = _SPACES.sub(" ", text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())
