"""Safe Markdown → HTML for replies and help pages (markdown-it-py, CommonMark with tables).

Raw HTML in the source is never passed through (`html=False`: it is escaped as text), and
markdown-it's link validation drops `javascript:`, `vbscript:`, `file:` and non-image `data:` URLs,
so text from a model, a human agent or an article renders as formatting only. Every link opens
with `rel="nofollow noopener"`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

_ANCHOR_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?", re.UNICODE)
_INLINE_MARKUP = re.compile(r"[*_`]")


def heading_anchor(heading: str) -> str:
    """The id a help page gives a heading (links in replies use it): lower-case words joined by dashes."""
    folded = unicodedata.normalize("NFKC", _INLINE_MARKUP.sub("", heading)).lower().replace("\u2019", "'")
    return "-".join(_ANCHOR_WORD.findall(folded)) or "section"


def _heading_ids(md: MarkdownIt) -> None:
    """Give every heading an id (`heading_anchor` of its text), unique within the page."""

    def rule(state: Any) -> None:
        used: dict[str, int] = {}
        tokens = state.tokens
        for i, token in enumerate(tokens):
            if token.type == "heading_open" and i + 1 < len(tokens):
                anchor = heading_anchor(tokens[i + 1].content)
                used[anchor] = used.get(anchor, 0) + 1
                token.attrSet("id", anchor if used[anchor] == 1 else f"{anchor}-{used[anchor]}")

    md.core.ruler.push("heading_ids", rule)


def _nofollow_links(md: MarkdownIt) -> None:
    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "nofollow noopener")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)


@lru_cache(maxsize=4)
def _renderer(breaks: bool, anchors: bool) -> MarkdownIt:
    md = MarkdownIt("js-default", {"html": False, "breaks": breaks, "linkify": False, "typographer": False})
    _nofollow_links(md)
    if anchors:
        _heading_ids(md)
    return md


def render_html(markdown: str, *, breaks: bool = False, anchors: bool = False) -> str:
    """HTML for a Markdown text; with `breaks`, a single newline is a line break (replies, mail);
    with `anchors`, headings get ids that links can point at (help pages)."""
    return str(_renderer(breaks, anchors).render(markdown))
