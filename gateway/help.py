"""The help centre: `/help` lists the knowledge-base articles by category, `/help/<slug>` renders one.

Replies link here (`/help/<slug>#<heading>`), so a customer reads the whole article the answer came
from. The articles are the bundled Markdown the knowledge base is loaded from; internal policy
articles (escalation rules, brand voice) are never listed or served. Pages are rendered on the
server with safe Markdown (core/markdown.py: raw HTML escaped, script links dropped) and served
with the same Content-Security-Policy as the other customer pages.

The support form asks `GET /api/v1/help/suggest?q=<subject>` as the customer types (debounced in
the page, rate-limited per client address here) and shows matching articles; `POST
/api/v1/help/events` counts what happened to the suggestions. A *deflection* is a suggestion
opened and no form sent: the page reports it when it is left in that state.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Annotated, Literal

import bm25s
import Stemmer
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field

from core.errors import NotFound
from core.markdown import render_html
from gateway.deps import ResourcesDep
from gateway.ui import SECURITY_HEADERS
from kb.chunking import Article, read_article
from kb.ingest import default_docs_path

router = APIRouter(tags=["help"])

HELP_EVENTS = Counter(
    "crm_fte_help_suggestion_events_total",
    "What customers did with the help-article suggestions on the support form "
    "(deflected: a suggestion opened and no form sent)",
    ["event"],
)
# Never listed or served: they instruct the agent, not the customer.
INTERNAL_CATEGORIES = frozenset({"policies"})
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,119}$")
CATEGORY_LABELS = {
    "getting_started": "Getting started",
    "projects": "Projects, boards and cards",
    "workspaces": "Workspaces and members",
    "account_security": "Account and security",
    "integrations": "Integrations",
    "automations": "Automations",
    "api": "REST API and webhooks",
    "mobile": "Mobile apps",
    "plans": "Plans",
    "billing": "Billing",
    "troubleshooting": "Troubleshooting",
}
_FIRST_PARAGRAPH = re.compile(r"^(?!#|\s*[-*|>]|\s*\d+\.)\S.*?(?=\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
_MARKERS = re.compile(r"[*_`]")


@dataclass(frozen=True)
class HelpArticle:
    """One customer-facing article."""

    slug: str
    title: str
    category: str
    summary: str
    markdown: str


class HelpCentre:
    """The customer articles, by slug and by category, with a BM25 index for suggestions."""

    def __init__(self, articles: Sequence[Article]) -> None:
        self.articles: dict[str, HelpArticle] = {}
        for article in articles:
            if article.category in INTERNAL_CATEGORIES or not SLUG.match(article.article_id):
                continue
            first = _FIRST_PARAGRAPH.search(re.sub(r"^#\s.*$", "", article.body, count=1, flags=re.MULTILINE))
            summary = " ".join(_MARKERS.sub("", first.group(0)).split()) if first else ""
            self.articles[article.article_id] = HelpArticle(
                slug=article.article_id,
                title=article.title,
                category=article.category,
                summary=summary[:240],
                markdown=article.body,
            )
        self._slugs = list(self.articles)
        self._stemmer = Stemmer.Stemmer("english")
        self._index = bm25s.BM25()
        # Title and headings weigh more than body text: repeat them (BM25 counts terms).
        documents = [self._document(a) for a in self.articles.values()]
        self._index.index(self._tokens(documents), show_progress=False)

    @staticmethod
    def _document(article: HelpArticle) -> str:
        headings = " ".join(re.findall(r"^#{2,3}\s+(.+)$", article.markdown, flags=re.MULTILINE))
        return f"{article.title} {article.title} {article.title} {headings} {headings} {article.markdown}"

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        tokens: list[list[str]] = bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False
        )
        return tokens

    def by_category(self) -> list[tuple[str, list[HelpArticle]]]:
        """Categories in the help centre's order, each with its articles by title."""
        order = list(CATEGORY_LABELS)
        groups: dict[str, list[HelpArticle]] = {}
        for article in self.articles.values():
            groups.setdefault(article.category, []).append(article)
        return [
            (category, sorted(groups[category], key=lambda a: a.title.lower()))
            for category in sorted(groups, key=lambda c: (order.index(c) if c in order else len(order), c))
        ]

    def suggest(self, query: str, *, limit: int = 5) -> list[HelpArticle]:
        """The articles that best match what the customer typed (nothing when no word matches)."""
        if not self._slugs:
            return []
        tokens = self._tokens([query])
        if not tokens[0]:
            return []
        results, scores = self._index.retrieve(tokens, k=min(limit, len(self._slugs)), show_progress=False)
        return [self.articles[self._slugs[int(i)]] for i, s in zip(results[0], scores[0], strict=True) if s > 0]


def load_help_centre(folder: FilePath) -> HelpCentre:
    """The help centre over every article under `folder`."""
    return HelpCentre(
        [
            read_article(p, article_id=p.relative_to(folder).with_suffix("").as_posix())
            for p in sorted(folder.rglob("*.md"))
        ]
    )


@lru_cache(maxsize=1)
def bundled_help_centre() -> HelpCentre:
    """The help centre of the bundled TechCorp articles, loaded once per process."""
    return load_help_centre(default_docs_path())


# ----------------------------------------------------------------------------- pages


def _page(title: str, main: str, *, current: str = "help") -> HTMLResponse:
    here = ' aria-current="page"' if current == "help" else ""
    nav = (
        f'<a href="/help"{here}>Help centre</a>'
        '<a href="/support">New request</a><a href="/support/status">Check a ticket</a>'
    )
    body = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(title)} · TechCorp Help</title>
  <link rel="stylesheet" href="/static/css/app.css">
</head>
<body>
  <a class="skip-link" href="#main">Skip to main content</a>
  <header class="site-header">
    <div class="wrap">
      <a class="brand" href="/help">TechCorp <small>Help centre</small></a>
      <nav aria-label="Help">{nav}</nav>
    </div>
  </header>
  <main id="main" class="wrap help">
{main}
  </main>
</body>
</html>
"""
    return HTMLResponse(body, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/help", response_class=HTMLResponse, include_in_schema=False)
async def help_index() -> HTMLResponse:
    """Every customer article, grouped by category."""
    sections = []
    for category, articles in bundled_help_centre().by_category():
        label = CATEGORY_LABELS.get(category, category.replace("_", " ").capitalize())
        items = "".join(
            f'<li><a href="/help/{a.slug}">{html.escape(a.title)}</a>'
            + (f'<p class="hint">{html.escape(a.summary)}</p>' if a.summary else "")
            + "</li>"
            for a in articles
        )
        sections.append(
            f'<section class="panel help-category" aria-labelledby="cat-{category}">'
            f'<h2 id="cat-{category}">{html.escape(label)}</h2><ul class="help-list">{items}</ul></section>'
        )
    main = (
        '<h1>Help centre</h1><p class="lead">Guides and answers for TechCorp Workspace. Can\'t find what you '
        'need? <a href="/support">Contact support</a>.</p>' + "".join(sections)
    )
    return _page("Help centre", main)


@router.get("/help/{slug}", response_class=HTMLResponse, include_in_schema=False)
async def help_article(slug: Annotated[str, Path(max_length=120)]) -> HTMLResponse:
    """One article, rendered; 404 for anything that is not a customer article."""
    article = bundled_help_centre().articles.get(slug) if SLUG.match(slug) else None
    if article is None:
        raise NotFound(f"no help article {slug[:120]!r}")
    label = CATEGORY_LABELS.get(article.category, article.category.replace("_", " ").capitalize())
    # The article's own `# Title` is the page's h1.
    body = re.sub(r"^#\s.*$", "", article.markdown, count=1, flags=re.MULTILINE)
    main = (
        f'<nav class="crumbs" aria-label="Breadcrumb"><a href="/help">Help centre</a> &rsaquo; '
        f'<a href="/help#cat-{article.category}">{html.escape(label)}</a></nav>'
        f'<article class="panel help-article"><h1>{html.escape(article.title)}</h1>'
        f"{render_html(body, anchors=True)}</article>"
        '<p class="hint">Still need help? <a href="/support">Contact support</a>.</p>'
    )
    return _page(article.title, main)


# ----------------------------------------------------------------------------- suggestions API


class Suggestion(BaseModel):
    slug: str
    title: str
    category: str
    summary: str
    url: str


class Suggestions(BaseModel):
    query: str
    articles: list[Suggestion]


class HelpEvent(BaseModel):
    """What happened to the suggestions on one support-form page."""

    event: Literal["shown", "opened", "deflected", "form_sent"]
    slug: str | None = Field(default=None, max_length=120, pattern=SLUG.pattern)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/api/v1/help/suggest", response_model=Suggestions)
async def suggest_articles(
    request: Request,
    resources: ResourcesDep,
    q: Annotated[str, Query(min_length=1, max_length=200, description="What the customer typed so far")],
    limit: Annotated[int, Query(ge=1, le=8)] = 4,
) -> Suggestions:
    """Help articles matching a support-form subject, best first (rate-limited per client address)."""
    await resources.limiter.check("help", _client(request))
    query = " ".join(q.split())
    found = bundled_help_centre().suggest(query, limit=limit) if len(query) >= 3 else []
    return Suggestions(
        query=query,
        articles=[
            Suggestion(slug=a.slug, title=a.title, category=a.category, summary=a.summary, url=f"/help/{a.slug}")
            for a in found
        ],
    )


@router.post("/api/v1/help/events", status_code=204, response_class=Response)
async def record_help_event(request: Request, resources: ResourcesDep, event: HelpEvent) -> Response:
    """Count a suggestion shown, opened, sent anyway, or a deflection (opened, no form sent)."""
    await resources.limiter.check("help", _client(request))
    HELP_EVENTS.labels(event.event).inc()
    return Response(status_code=204)
