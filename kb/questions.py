"""Question banks: what customers ask that each help-article section answers, in their own words.

Beside an article ``<id>.md`` a reviewer keeps ``<id>.questions.toml``: for each section of the
article (its heading path, as the offline responder cuts it: ``[]`` for the introduction, an FAQ
item's question as the last element) the messages customers send that this section answers —
one-liners with typos, symptoms instead of the feature's name, everyday words for the product's
terms, other languages::

    [[section]]
    path = ["Step 1 — Install the Slack app"]
    questions = [
      "where do i click to connect our slack workspace",
      "Como instalo o app do Slack no nosso espaço de trabalho?",
    ]

An article's own words say what a section is about; the bank says how customers ask for it. The
offline responder (activities/agent/offline.py) compares an incoming message with every bank
question through the multilingual sentence encoder, and a close match is the evidence it needs to
send that section rather than hand off (with the search's evidence, through the section ranker,
activities/agent/ranking.py). The bundled banks (kb/docs: 7,099 questions, 6-18 per section) were
written from the articles alone, by helpers that never read the evaluation sets (bench/data/answers);
none is a held-out case word for word (tests/kb/test_question_banks.py checks; three plain ones
that happened to be were taken out).

Pure: reading and validating the files; embedding and matching live with the responder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

QUESTIONS_SUFFIX = ".questions.toml"


class QuestionBankError(ValueError):
    """A question-bank file that cannot be used, with the file and the place in it."""


@dataclass(frozen=True)
class BankQuestion:
    """One customer question and the article section that answers it."""

    article_id: str
    path: tuple[str, ...]
    text: str


def parse_question_bank(text: str, *, article_id: str, source: str = "") -> list[BankQuestion]:
    """The questions of one bank file; a malformed file raises `QuestionBankError` naming what is wrong."""
    where = source or f"{article_id}{QUESTIONS_SUFFIX}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestionBankError(f"{where}: not valid TOML ({exc})") from exc
    sections = data.get("section", [])
    if not isinstance(sections, list):
        raise QuestionBankError(f"{where}: `section` must be an array of tables ([[section]])")
    out: list[BankQuestion] = []
    for number, entry in enumerate(sections, start=1):
        if not isinstance(entry, dict):
            raise QuestionBankError(f"{where}: section {number} is not a table")
        path = entry.get("path")
        questions = entry.get("questions", [])
        if not isinstance(path, list) or not all(isinstance(h, str) and h.strip() for h in path):
            raise QuestionBankError(f"{where}: section {number}: `path` must be a list of headings")
        if not isinstance(questions, list) or not all(isinstance(q, str) and q.strip() for q in questions):
            raise QuestionBankError(f"{where}: section {number}: `questions` must be a list of non-empty strings")
        heading_path = tuple(h.strip() for h in path)
        out.extend(BankQuestion(article_id, heading_path, q.strip()) for q in questions)
    return out


def read_question_banks(folder: Path) -> list[BankQuestion]:
    """Every bank under `folder` (``<article id>.questions.toml`` beside ``<article id>.md``)."""
    banks: list[BankQuestion] = []
    for path in sorted(folder.rglob(f"*{QUESTIONS_SUFFIX}")):
        relative = path.relative_to(folder).as_posix()
        article_id = relative[: -len(QUESTIONS_SUFFIX)]
        banks.extend(parse_question_bank(path.read_text(encoding="utf-8-sig"), article_id=article_id, source=relative))
    return banks
