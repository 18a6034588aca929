"""Internal policy documents (escalation rules, brand voice): read by code, never searchable by customers.

They live outside ``kb/docs`` so ingest never puts them in the customer-searchable index; the
prompt builder and the guardrails load them by name with :func:`load_policy`.
"""

from __future__ import annotations

from pathlib import Path

from kb.chunking import Article, read_article

POLICY_NAMES = ("escalation-rules", "brand-voice")


def policies_path() -> Path:
    """The folder holding the policy Markdown files."""
    return Path(__file__).parent


def load_policy(name: str) -> Article:
    """One policy document, parsed (title, category, Markdown body); KeyError for an unknown name."""
    if name not in POLICY_NAMES:
        raise KeyError(f"no such policy document: {name!r} (known: {', '.join(POLICY_NAMES)})")
    return read_article(policies_path() / f"{name}.md", article_id=f"policy/{name}")
