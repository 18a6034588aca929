"""The offline responder: one whole help-article section or an honest hand-off; small talk answered."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.agent.offline import (
    CANDIDATE_PASSAGES,
    SEARCH_PASSAGES,
    BankMatch,
    build_index,
    bundled_index,
    bundled_matcher,
    choose_section,
    compose_grounded_answer,
    small_talk_kind,
    small_talk_reply,
)
from core.settings import Settings
from kb.chunking import parse_article
from kb.embeddings import create_embedder
from kb.questions import BankQuestion
from kb.search import search


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("hello", "greeting"),
        ("Hi there 👋", "greeting"),
        ("Bonjour !", "greeting"),
        ("thanks!", "thanks"),
        ("Just wanted to say your help articles are great.", "thanks"),
        ("Thank you so much, the invoice download worked perfectly. Have a great weekend!\n\nAnna", "resolved"),
        ("Danke, hat funktioniert!", "resolved"),
        ("all sorted now, you can close the ticket", "resolved"),
        ("are you a bot?", "bot"),
        ("bye!", "goodbye"),
        ("Guten Morgen!", "greeting"),
        ("r u a bot or a real person lol", "bot"),  # chat drops the question mark
        ("are you really just a bot?", "bot"),  # the guardrails' identity frame, two adverbs
        ("ok that's everything for today, have a good weekend!", "goodbye"),
        (
            "Hi,\n\nJust wanted to say thank you — the steps you sent worked perfectly and the whole team is "
            "back up and running.\n\nBest,\nLaura",
            "resolved",
        ),
        # Not small talk: a question, a problem, a complaint, words that merely contain a greeting.
        ("quick one — do you feed our project content into your AI to train it?", None),
        ("is the AI feature on the free plan?", None),
        ("is it possible to turn off the AI suggestions?", None),
        ("are you able to switch the AI summaries off for my team?", None),
        ("have a good day, but the sync is still broken", None),
        ("Thanks. Can I also set a due date on each checklist item?", None),
        ("hello, my CSV export fails with an error", None),
        ("thanks, but it still doesn't work", None),
        ("hell", None),
        ("party", None),
        ("it's broken again", None),
    ],
)
def test_small_talk_is_told_apart_from_requests(message: str, kind: str | None) -> None:
    assert small_talk_kind(message) == kind


@pytest.mark.parametrize(
    ("message", "kind", "opening"),
    [
        ("hola!", "greeting", "¡Hola!"),
        ("Merci beaucoup, c'est réglé !", "resolved", "Ravi que cela ait fonctionné"),
        ("Danke, hat funktioniert!", "resolved", "Schön, dass es geklappt hat"),
        ("obrigado!!", "thanks", "De nada!"),
        ("¿eres un bot?", "bot", "Soy el asistente de soporte con IA"),
        ("bist du eine KI?", "bot", "Ich bin der KI-Support-Assistent"),
        ("thanks!", "thanks", "You're welcome!"),
        # Words of two languages: the English reply rather than a guess.
        ("hola, merci!", "thanks", "You're welcome!"),
    ],
)
def test_small_talk_is_answered_in_the_customers_language(message: str, kind: str, opening: str) -> None:
    assert small_talk_kind(message) == kind
    assert small_talk_reply(kind, message).startswith(opening)


def test_a_section_is_kept_whole_with_its_steps_in_order() -> None:
    sections = bundled_index().by_article["google-calendar-integration"]
    connect = next(s for s in sections if s.path[-1:] == ("Connect your Google account",))
    steps = [
        line.split(".", 1)[0] for line in connect.markdown.splitlines() if line[:2] in {"1.", "2.", "3.", "4.", "5."}
    ]
    assert steps == ["1", "2", "3", "4", "5"]
    # A section made of bold-titled problems is answered one problem at a time.
    problems = [s.path[-1] for s in sections if s.path[:1] == ("Common problems",)]
    assert "Duplicate events" in problems and "Events don't appear" in problems
    # Internal policy articles are never answer material.
    assert not {"escalation-rules", "brand-voice"} & set(bundled_index().by_article)


async def _sections(settings: Settings, sessions: async_sessionmaker[AsyncSession], question: str) -> list[dict]:
    hits = await search(
        question,
        sessions=sessions,
        embedder=create_embedder(settings),
        limit=CANDIDATE_PASSAGES,
        per_article=None,
    )
    return [h.model_dump(mode="json") for h in hits]


async def test_the_answer_is_the_whole_section_with_its_title_and_help_link(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    question = "How do I connect my Google Calendar account?"
    answer = compose_grounded_answer(
        question, await _sections(settings, sessions, question), help_url="https://help.example.com"
    )
    assert answer is not None
    assert answer.startswith("**Google Calendar Integration: Connect your Google account**")
    positions = [answer.index(f"\n{n}. ") for n in range(1, 6)]
    assert positions == sorted(positions)  # every step, in order
    assert "Click **Start sync**." in answer
    assert answer.rstrip().endswith(
        "https://help.example.com/help/google-calendar-integration#connect-your-google-account"
    )


async def test_nothing_grounded_means_no_answer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    for question in ("What is the airspeed velocity of an unladen swallow?", "zoom integration?"):
        hits = await _sections(settings, sessions, question)
        assert compose_grounded_answer(question, hits) is None, question


def test_a_passage_from_an_internal_article_is_never_quoted() -> None:
    hit = {
        "article_id": "escalation-rules",
        "title": "Escalation Rules for the AI Support Agent",
        "category": "policies",
        "content": "# Escalation Rules\n## Reason codes\n\nEscalate pricing questions with reason code pricing.",
    }
    assert compose_grounded_answer("what reason code do you use for pricing questions", [hit]) is None


# ----------------------------------------------------------------------------- the question bank


def test_every_bundled_article_has_a_bank_and_every_bank_question_a_section() -> None:
    index = bundled_index()
    banked = {q.article_id for q in index.questions}
    assert banked == set(index.by_article)  # the bank, not word coverage, decides for every article
    assert len(index.questions) > 2000  # none dropped as pointing at a heading the article lacks
    per_section: dict[tuple[str, tuple[str, ...]], int] = {}
    for q in index.questions:
        per_section[(q.article_id, q.path)] = per_section.get((q.article_id, q.path), 0) + 1
    assert min(per_section.values()) >= 2


def test_a_bank_question_for_a_heading_the_article_no_longer_has_is_left_out() -> None:
    article = parse_article("---\ntitle: Widgets\n---\n## Add a widget\n\nClick **Add**.\n", article_id="widgets")
    index = build_index(
        [article],
        [
            BankQuestion("widgets", ("Add a widget",), "how do i put a widget on my board"),
            BankQuestion("widgets", ("Remove a widget",), "how do i get rid of a widget"),  # renamed away
        ],
    )
    assert [q.text for q in index.questions] == ["how do i put a widget on my board"]


async def _section_hits(settings: Settings, sessions: async_sessionmaker[AsyncSession], question: str) -> list[dict]:
    hits = await search(
        question, sessions=sessions, embedder=create_embedder(settings), limit=SEARCH_PASSAGES, per_article=None
    )
    return [h.model_dump(mode="json") for h in hits]


async def test_a_question_in_other_words_and_another_language_is_answered_through_the_bank(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    """Neither message uses the article's words; the bank (customers' wordings) names the section."""
    matcher = bundled_matcher()
    for question, title in (
        ("can i stop getting an email for every comment and get a daily roundup", "Notification Settings"),
        ("¿Cómo conecto mi calendario de Google?", "Google Calendar Integration"),
    ):
        bank = matcher.match(question)
        assert bank is not None
        answer = compose_grounded_answer(
            question,
            await _section_hits(settings, sessions, question),
            help_url="https://help.example.com",
            bank=bank,
            banked=matcher.has_bank,
        )
        assert answer is not None, (question, bank)
        assert answer.startswith(f"**{title}"), answer[:80]


async def test_a_bank_match_the_search_did_not_find_is_not_sent(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    """Two retrievers must agree: a confident bank match whose section is not among the search's
    passages hands off, and so does a close call between two articles."""
    question = "¿Cómo conecto mi calendario de Google?"
    bank = bundled_matcher().match(question)
    assert bank is not None and bank.similarity >= 0.55
    hits = [h for h in await _section_hits(settings, sessions, question) if h["article_id"] != bank.section.article_id]
    assert choose_section(question, hits, bank=bank, banked=bundled_matcher().has_bank) is None
    hits = await _section_hits(settings, sessions, question)
    close_call = BankMatch(section=bank.section, similarity=bank.similarity, margin=0.01)
    assert choose_section(question, hits, bank=close_call, banked=bundled_matcher().has_bank) is None
    assert choose_section(question, hits, bank=bank, banked=bundled_matcher().has_bank) is not None


async def test_the_models_search_hits_start_with_the_section_the_bank_is_sure_of(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    """The model reads the search's hits in order: the bank's section goes first, in place of its
    article's hit, only when the bank is sure and the search found that article too."""
    from activities.agent.offline import bank_section_first

    question = "¿Cómo conecto mi calendario de Google?"
    hits = await search(question, sessions=sessions, embedder=create_embedder(settings), limit=5)
    bank = bundled_matcher().match(question)
    assert bank is not None
    async with sessions() as session:
        ordered = await bank_section_first(session, hits, bank)
        assert (ordered[0].article_id, ordered[0].heading_path) == (bank.section.article_id, bank.section.path)
        assert len(ordered) == len(hits) and len({h.article_id for h in ordered}) == len(ordered)
        unsure = BankMatch(section=bank.section, similarity=bank.similarity, margin=0.0)
        assert await bank_section_first(session, hits, unsure) == hits
        elsewhere = [h for h in hits if h.article_id != bank.section.article_id]
        assert await bank_section_first(session, elsewhere, bank) == elsewhere
