"""The offline responder: without a model, answer with one whole help-article section or hand off.

It speaks the same tool-call protocol as a model (search first, then `send_response` or
`escalate_to_human`), so every reply still passes the reply check, and it says nothing it cannot
ground in the knowledge base. An answer is one section *as a whole* (a step list complete and in
order, never a collage of sentences), with the article's title and a link to the help centre.

Which section, and whether to answer at all, is decided by two pieces of evidence, each with a
threshold calibrated on the tuning set (`python bench/answers_eval.py --part tuning --calibrate`):
- for an article with a question bank (kb/questions.py: customers' own wordings of what each of its
  sections answers; every bundled article has one): the message, whole and sentence by sentence, is
  compared with every bank question through the multilingual sentence encoder. A section scores
  the mean similarity of its two nearest bank questions; the best section answers when it scores at
  least `BANK_MATCH`, leads every other article's best by `BANK_MARGIN` (two close articles mean
  the message is ambiguous) and is among the knowledge-base search's first `SEARCH_PASSAGES`
  sections (a second, independent retriever agrees), whatever words the message uses and in any of
  the encoder's languages;
- for an article without a bank (an operator's own): the section-level search's top passages,
  scored by the question's rare words they contain; a section covering at least
  `CONFIDENCE_THRESHOLD` of the question's word weight answers.
Otherwise the responder hands off with `no_answer` instead of answering wrong.

Small talk (greetings, thanks, "are you a bot?") gets a short friendly reply without a search, in
the customer's language when it is Spanish, Portuguese, French or German; "thanks, that worked"
closes the conversation politely.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import Stemmer
from sqlalchemy.ext.asyncio import AsyncSession

from activities.agent.tools import ModelToolCall
from activities.guardrails.normalise import fold_accents
from activities.guardrails.rules import guards
from core.logging import get_logger
from core.markdown import heading_anchor as heading_anchor  # re-exported: reply links use it
from crm.repositories import agent_steps, knowledge_base, messages
from kb.chunking import Article, read_article
from kb.embeddings import cached_use_vectors, use_vectors
from kb.ingest import default_docs_path
from kb.learning import is_learned
from kb.questions import BankQuestion, read_question_banks
from kb.search import SearchHit
from workflows.contracts import AgentStepInput

log = get_logger(__name__)

MODEL_NAME = "offline-responder"

# A section answers when the mean cosine similarity of its two nearest bank questions to the message
# is at least BANK_MATCH, exceeds every other article's best section by BANK_MARGIN, and the search
# found it too. Calibrated on the tuning part of bench/data/answers with `python bench/answers_eval.py
# --part tuning --calibrate` (204 answerable and 36 unanswerable questions): the pair answering the
# most correctly with at most 2 % answered wrongly and at least 90 % of the unanswerable ones handed
# off — 40.9 % right, 2.0 % wrong, 35/36. (A 3 % bound, chosen first on the 104 questions of the
# first round, held out worse: 6-9 % wrong; figures in the README.)
BANK_MATCH = 0.55
BANK_MARGIN = 0.07
# For an article without a bank, the search's best section answers when it covers at least this
# share of the question's rare-word weight: the lowest threshold at which at most 3 % of answerable
# tuning cases were answered wrongly before the banks existed.
CONFIDENCE_THRESHOLD = 0.85
# The message is compared whole (its first MAX_MATCHED_CHARS) and sentence by sentence: a long email's
# question is one sentence among greetings, context and a signature. Sentences of fewer words than
# this carry no question ("Thanks a lot,").
MIN_SENTENCE_WORDS = 3
MAX_MATCHED_SENTENCES = 12
MAX_MATCHED_CHARS = 500
# How many passages of a section-level search the responder chooses among by words (an article
# without a bank). On the tuning set the search's own order among them helps less than the
# question's rare words do (bench/answers_eval.py).
CANDIDATE_PASSAGES = 3
# How many section-level passages the responder asks the search for: a bank match must be among them.
# On the first 104 tuning questions, requiring it among the first 10 kept 53 of 56 right answers and
# 2 of 4 wrong ones (among the first 3, or the top article only, lost more right ones).
SEARCH_PASSAGES = 10
# A section longer than this is cut at a block boundary (a list item, a paragraph), never mid-sentence.
MAX_SECTION_CHARS = 1800
# Internal policy articles feed the guardrails and the prompt; they are never quoted to a customer.
INTERNAL_CATEGORIES = frozenset({"policies"})

SmallTalk = Literal["greeting", "thanks", "resolved", "bot", "goodbye"]


@dataclass(frozen=True)
class OfflineDecision:
    """What the offline responder does this step: its tool calls, and whether the customer is done."""

    calls: list[ModelToolCall]
    resolved: bool = False


# ----------------------------------------------------------------------------- words


_STEMMER = Stemmer.Stemmer("english")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?", re.UNICODE)
_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both
    but by can cannot could did do does doing don't done down during each else even ever every few for from further
    get gets getting got had has have having he her here hers him his how however i i'm i've if in into is isn't it
    it's its itself just let like many may me might more most much must my myself need needs no nor not now of off
    on once one only or other our ours out over own please pls plz same she should so some still such than that
    the their theirs them then there these they this those through to too under until up upon us use used using
    very via want wants was we we're were what whats what's when where which while who whom why will with within
    without would yes yet you you're your yours yourself hi hello hey thanks thank thx cheers regards best dear
    team guys folks anyone somebody someone something thing things way ok okay really actually maybe also help
    know tell wondering question quick lot lots etc e.g i.e""".split()
)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")


def words(text: str) -> list[str]:
    """Lower-cased words of `text` (letters and digits, inner apostrophes kept)."""
    return _WORD.findall(_fold(text))


def terms(text: str) -> list[str]:
    """Stemmed content words: what the section matching compares."""
    kept = [w for w in words(text) if w not in _STOP and (len(w) > 1 or w.isdigit())]
    return [str(stem) for stem in _STEMMER.stemWords(kept)]


# ----------------------------------------------------------------------------- small talk

# Whole words only (never substrings: "hell" is not "hello", "ty" is not "party").
_GREETING = frozenset(
    "hi hello hey hiya heya howdy yo morning afternoon evening hola buenas buenos olá ola oi bonjour salut coucou "
    "bonsoir hallo moin servus ciao guten morgen".split()
)
_THANKS = frozenset(
    "thanks thank thx ty cheers appreciate appreciated gracias obrigado obrigada valeu merci danke dankeschön "
    "grazie".split()
)
_PRAISE = frozenset("great awesome amazing brilliant excellent helpful perfect perfectly fantastic love".split())
_RESOLVED = frozenset(
    "worked works working sorted solved fixed resolved réglé résolu funktioniert funktionierte geklappt klappt "
    "gelöst funcionó funciona funcionou resolvido resuelto".split()
)
_CLOSE_TICKET = frozenset("close closed".split())
_GOODBYE = frozenset("bye goodbye byebye cya adios adiós tchau tschüss tschüs ciao".split())
_BOT_WORDS = frozenset("bot ai robot chatbot machine ia ki robô robo máquina maquina".split())
# "Have a good weekend", "that's everything for today": a goodbye without the word.
_GOODBYE_PHRASE = re.compile(
    r"\bhave\s+a\s+(?:good|great|nice|lovely|wonderful)\s+(?:day|weekend|evening|one|week)\b|"
    r"\bthat(?:'s|\s+is)\s+(?:all|everything)\b"
)
_NEGATION = frozenset(
    "not no never still again but however although doesn't didn't don't isn't wasn't won't can't cannot nothing "
    "nicht kein keine nie aber pas jamais mais não nao nunca pero todavía".split()
)
# Words that carry no request in a short thank-you or greeting ("have a great weekend", a signature).
_PLEASANTRY = frozenset(
    "so much very lot lots a the you your all now just wanted want to say that this it is are was were have has had "
    "great good nice lovely wonderful day weekend week evening morning there everyone team support guys again "
    "for help articles article answer reply quick quickly fast can could ticket me my i we our us be done well "
    "c'est est ça ca beaucoup vielen dank hat es das muito muchas mucho it's that's".split()
)


def small_talk_kind(text: str) -> SmallTalk | None:
    """What kind of small talk a message is, or None when it asks or reports something."""
    tokens = words(text)
    if not tokens or len(tokens) > 40:
        return None
    vocabulary = set(tokens)
    asks = "?" in text
    # The guardrails' own frame of a question about who answers (guards_en.toml's identity_frame):
    # "are you a bot?" asks who answers; "is it possible to turn off the AI?" asks about the product.
    folded = fold_accents(_fold(text))
    who = guards().who_answers_question(folded)
    # With a question mark, or opening the message ("r u a bot lol").
    opens = who is not None and len(folded[: who.start()].split()) <= 1
    if vocabulary & _BOT_WORDS and len(tokens) <= 14 and who is not None and (asks or opens):
        return "bot"
    if asks or vocabulary & _NEGATION:
        return None
    markers = _GREETING | _THANKS | _PRAISE | _RESOLVED | _CLOSE_TICKET | _GOODBYE
    rest = [t for t in tokens if t not in markers and t not in _PLEASANTRY and t not in _STOP]
    # A signature line (a first name) is fine, and around "it worked" a clause of context ("the steps
    # you sent worked and the team is back up and running"); a product question is not.
    if len(rest) > (6 if vocabulary & _RESOLVED else 2):
        return None
    if vocabulary & _RESOLVED or (vocabulary & _CLOSE_TICKET and vocabulary & {"ticket", "sorted", "all"}):
        return "resolved"
    if vocabulary & _THANKS or vocabulary & _PRAISE:
        return "thanks"
    if vocabulary & _GOODBYE or _GOODBYE_PHRASE.search(_fold(text)):
        return "goodbye"
    if vocabulary & _GREETING:
        return "greeting"
    return None


# The language a small-talk message is written in, told by its marker words (a two-word "merci
# beaucoup" is too short for a language detector); anything else gets the English reply.
_SMALL_TALK_LANGUAGE: Mapping[str, frozenset[str]] = {
    "es": frozenset("hola buenas buenos gracias adios adiós funcionó funciona resuelto eres hablo una".split()),
    "pt": frozenset("olá ola oi obrigado obrigada valeu tchau funcionou resolvido você voce falando uma".split()),
    "fr": frozenset("bonjour salut coucou merci réglé résolu parle êtes suis une".split()),
    "de": frozenset("hallo moin servus danke dankeschön funktioniert funktionierte geklappt klappt gelöst "
                    "tschüss tschüs bist spreche einem einer".split()),
}  # fmt: skip


def small_talk_language(text: str) -> str:
    """ "es", "pt", "fr" or "de" when the message's small-talk words are that language's, else "en"."""
    vocabulary = set(words(text))
    found = [language for language, markers in _SMALL_TALK_LANGUAGE.items() if vocabulary & markers]
    return found[0] if len(found) == 1 else "en"


SMALL_TALK_REPLIES: Mapping[SmallTalk, str] = {
    "greeting": "Hello! I'm TechCorp's support assistant. What can I help you with today?",
    "thanks": "You're welcome! If anything else comes up, just write to us here.",
    "resolved": "I'm glad that worked! I'll close this conversation now; if anything else comes up, just write "
    "to us here and we'll pick it up.",
    "bot": "I'm TechCorp's AI support assistant. I answer from our help centre, and whenever you'd like a person, "
    "just say so and I'll pass your message to our support team.",
    "goodbye": "Thanks for getting in touch. Have a great day!",
}
LOCAL_SMALL_TALK_REPLIES: Mapping[str, Mapping[SmallTalk, str]] = {
    "es": {
        "greeting": "¡Hola! Soy el asistente de soporte de TechCorp. ¿En qué puedo ayudarle hoy?",
        "thanks": "¡De nada! Si surge cualquier otra cosa, escríbanos aquí.",
        "resolved": "¡Me alegro de que haya funcionado! Cierro esta conversación; si surge cualquier otra cosa, "
        "escríbanos aquí y la retomaremos.",
        "bot": "Soy el asistente de soporte con IA de TechCorp. Respondo con nuestro centro de ayuda y, cuando "
        "prefiera hablar con una persona, dígamelo y pasaré su mensaje a nuestro equipo.",
        "goodbye": "Gracias por escribirnos. ¡Que tenga un buen día!",
    },
    "pt": {
        "greeting": "Olá! Sou o assistente de suporte da TechCorp. Como posso ajudar hoje?",
        "thanks": "De nada! Se precisar de mais alguma coisa, é só escrever aqui.",
        "resolved": "Que bom que funcionou! Vou encerrar esta conversa; se precisar de mais alguma coisa, é só "
        "escrever aqui que retomamos.",
        "bot": "Sou o assistente de suporte com IA da TechCorp. Respondo com base na nossa central de ajuda e, "
        "quando quiser falar com uma pessoa, é só dizer que encaminho sua mensagem para a nossa equipe.",
        "goodbye": "Obrigado pelo contato. Tenha um ótimo dia!",
    },
    "fr": {
        "greeting": "Bonjour ! Je suis l'assistant du support TechCorp. Comment puis-je vous aider aujourd'hui ?",
        "thanks": "Avec plaisir ! Pour toute autre question, écrivez-nous ici.",
        "resolved": "Ravi que cela ait fonctionné ! Je clôture cette conversation ; pour toute autre question, "
        "écrivez-nous ici et nous la reprendrons.",
        "bot": "Je suis l'assistant IA du support TechCorp. Je réponds à partir de notre centre d'aide et, si vous "
        "préférez parler à une personne, dites-le-moi et je transmettrai votre message à notre équipe.",
        "goodbye": "Merci de nous avoir contactés. Bonne journée !",
    },
    "de": {
        "greeting": "Hallo! Ich bin der Support-Assistent von TechCorp. Wobei kann ich Ihnen heute helfen?",
        "thanks": "Gern geschehen! Wenn noch etwas ist, schreiben Sie uns einfach hier.",
        "resolved": "Schön, dass es geklappt hat! Ich schließe diese Unterhaltung; wenn noch etwas ist, schreiben "
        "Sie uns einfach hier und wir machen weiter.",
        "bot": "Ich bin der KI-Support-Assistent von TechCorp. Ich antworte aus unserem Hilfe-Center, und wenn Sie "
        "lieber mit einem Menschen sprechen möchten, sagen Sie es einfach: Ich gebe Ihre Nachricht an unser Team "
        "weiter.",
        "goodbye": "Danke für Ihre Nachricht. Einen schönen Tag noch!",
    },
}


def small_talk_reply(kind: SmallTalk, text: str) -> str:
    """The short friendly reply to small talk, in the message's language where we have one."""
    return LOCAL_SMALL_TALK_REPLIES.get(small_talk_language(text), SMALL_TALK_REPLIES)[kind]


# ----------------------------------------------------------------------------- help-article sections


@dataclass(frozen=True)
class Section:
    """One answerable unit of an article: a heading's own text, or one bold-titled item under it."""

    article_id: str
    title: str
    category: str
    path: tuple[str, ...]  # the headings (and item title) above the text, outermost first
    anchor: str  # the help page's id for the innermost heading
    markdown: str
    body_terms: Counter[str] = field(compare=False)
    head_terms: frozenset[str] = field(compare=False)

    @property
    def heading(self) -> str:
        return " > ".join(self.path)


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_BOLD_TITLE = re.compile(r"^\*\*(?P<title>[^*\n]{3,160})\*\*\s*(?:\n|$)")
_INLINE_MARKUP = re.compile(r"[*_`]")


def _split_items(text: str) -> list[tuple[str | None, str]]:
    """Paragraph groups led by a bold title line ("**Events don't appear**"), or the text whole."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    if sum(1 for p in paragraphs if _BOLD_TITLE.match(p)) < 2:
        return [(None, text.strip())]
    items: list[tuple[str | None, list[str]]] = []
    for paragraph in paragraphs:
        match = _BOLD_TITLE.match(paragraph)
        if match or not items:
            items.append((match["title"].strip() if match else None, [paragraph]))
        else:
            items[-1][1].append(paragraph)
    return [(title, "\n\n".join(parts)) for title, parts in items]


def article_sections(article: Article) -> list[Section]:
    """The article cut at every heading; a section made of bold-titled items is cut per item."""
    stack: list[tuple[int, str]] = []
    pieces: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
    in_fence = False
    for line in article.body.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading is None:
            pieces[-1][1].append(line)
            continue
        level = len(heading[1])
        if level == 1:
            continue  # the article title
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading[2].strip()))
        pieces.append((tuple(h for _, h in stack), []))
    sections: list[Section] = []
    for path, lines in pieces:
        text = "\n".join(lines).strip()
        if not text:
            continue
        for item_title, item_text in _split_items(text):
            full_path = (*path, _INLINE_MARKUP.sub("", item_title)) if item_title else path
            sections.append(
                Section(
                    article_id=article.article_id,
                    title=article.title,
                    category=article.category,
                    path=full_path,
                    anchor=heading_anchor(path[-1]) if path else "",
                    markdown=item_text,
                    body_terms=Counter(terms(item_text)),
                    head_terms=frozenset(terms(" ".join((article.title, *full_path)))),
                )
            )
    return sections


@dataclass(frozen=True)
class SectionIndex:
    """Every section of the bundled articles, with inverse document frequencies over sections."""

    by_article: Mapping[str, list[Section]]
    idf: Mapping[str, float]
    max_idf: float
    internal: frozenset[str] = frozenset()
    # Customers' wordings of what each section answers (kb/questions.py), only for sections that exist.
    questions: tuple[BankQuestion, ...] = ()

    def section(self, article_id: str, path: tuple[str, ...]) -> Section | None:
        """The section of an article at this heading path, if there is one."""
        return next((s for s in self.by_article.get(article_id, ()) if s.path == path), None)

    def weight(self, term: str) -> float:
        """A term's rarity; a word the knowledge base never uses weighs as much as the rarest one."""
        return self.idf.get(term, self.max_idf)


def build_index(articles: Iterable[Article], questions: Iterable[BankQuestion] = ()) -> SectionIndex:
    """Sections of customer articles (internal policy articles are left out), their idf, and the bank
    questions of sections that exist (a question for a heading the article no longer has is logged
    and left out: an edited article must not take the responder down)."""
    by_article: dict[str, list[Section]] = {}
    internal: set[str] = set()
    for article in articles:
        if article.category in INTERNAL_CATEGORIES:
            internal.add(article.article_id)
            continue
        by_article[article.article_id] = article_sections(article)
    frequencies: Counter[str] = Counter()
    total = 0
    for sections in by_article.values():
        for section in sections:
            total += 1
            frequencies.update(set(section.body_terms) | section.head_terms)
    idf = {t: math.log(1 + (total - df + 0.5) / (df + 0.5)) for t, df in frequencies.items()}
    known = {(s.article_id, s.path) for sections in by_article.values() for s in sections}
    kept: list[BankQuestion] = []
    stale: set[tuple[str, tuple[str, ...]]] = set()
    for question in questions:
        if (question.article_id, question.path) in known:
            kept.append(question)
        else:
            stale.add((question.article_id, question.path))
    for article_id, path in sorted(stale):
        log.warning("kb.question_bank_unknown_section", article=article_id, path=" > ".join(path))
    return SectionIndex(
        by_article=by_article,
        idf=idf,
        max_idf=max(idf.values(), default=1.0),
        internal=frozenset(internal),
        questions=tuple(kept),
    )


@lru_cache(maxsize=4)
def bundled_index(docs: Path | None = None) -> SectionIndex:
    """The section index of the bundled TechCorp articles, built once per process."""
    folder = docs or default_docs_path()
    return build_index(
        (
            read_article(path, article_id=path.relative_to(folder).with_suffix("").as_posix())
            for path in sorted(folder.rglob("*.md"))
        ),
        read_question_banks(folder),
    )


# ----------------------------------------------------------------------------- the question bank


@dataclass(frozen=True)
class BankMatch:
    """The section whose bank questions are nearest a message, how near, and how far ahead of other articles."""

    section: Section
    similarity: float  # mean cosine similarity of the section's two nearest bank questions
    margin: float  # ahead of the best section of any other article


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def matched_texts(message: str) -> list[str]:
    """What is compared with the bank: the message's start, then each of its sentences of some length."""
    sentences = [s.strip() for s in _SENTENCE_BREAK.split(message)]
    kept = [s for s in sentences if len(words(s)) >= MIN_SENTENCE_WORDS][:MAX_MATCHED_SENTENCES]
    head = message.strip()[:MAX_MATCHED_CHARS]
    return [head, *(s for s in kept if s != head)] if head else []


class QuestionMatcher:
    """The bank's questions as unit sentence vectors (embedded once, when first matched against)."""

    def __init__(self, index: SectionIndex) -> None:
        self._index = index
        by_section: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for number, question in enumerate(index.questions):
            by_section.setdefault((question.article_id, question.path), []).append(number)
        self._sections = [index.section(article_id, path) for article_id, path in by_section]
        self._articles = np.array([article_id for article_id, _ in by_section])
        # Each section's questions as one row of indices, padded with an index past the bank (which
        # scores -inf); a one-question section lists its question twice, so it scores that question.
        width = max((len(numbers) for numbers in by_section.values()), default=0)
        self._padding = len(index.questions)
        rows = [n * 2 if len(n) == 1 else n for n in by_section.values()]
        self._rows = np.array([n + [self._padding] * (max(width, 2) - len(n)) for n in rows], dtype=np.intp)
        self._vectors: np.ndarray | None = None

    def _bank(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = cached_use_vectors([q.text for q in self._index.questions])
        return self._vectors

    def warm(self) -> None:
        """Embed the bank now (a few seconds of CPU at worker start, not in a customer's turn)."""
        self._bank()

    def has_bank(self, article_id: str) -> bool:
        """Whether this article has bank questions (the bank, not word coverage, then decides)."""
        return bool(np.any(self._articles == article_id))

    def match(self, message: str) -> BankMatch | None:
        """The best section for the message by its bank questions (None: an empty bank or message)."""
        texts = matched_texts(message)
        if not self._rows.size or not texts:
            return None
        nearest = (self._bank() @ use_vectors(texts).T).max(axis=1)  # per bank question, its best text
        padded = np.append(nearest, -np.inf)
        two_best = np.sort(padded[self._rows], axis=1)[:, -2:].mean(axis=1)
        best = int(np.argmax(two_best))
        others = two_best[self._articles != self._articles[best]]
        section = self._sections[best]
        if section is None:  # build_index keeps only questions of existing sections
            return None
        similarity = float(two_best[best])
        return BankMatch(
            section=section, similarity=similarity, margin=similarity - float(others.max()) if others.size else 1.0
        )


def sure(bank: BankMatch | None) -> bool:
    """Whether a bank match is strong and clear enough to name the section (the thresholds above)."""
    return bank is not None and bank.similarity >= BANK_MATCH and bank.margin >= BANK_MARGIN


async def bank_section_first(
    session: AsyncSession, hits: Sequence[SearchHit], bank: BankMatch | None
) -> list[SearchHit]:
    """The model's search hits (one per article) with the bank's section first, in place of its
    article's hit, when the bank is sure and the search found that article too (two retrievers agree);
    otherwise the hits as they are. The stored chunk is read for the section's heading path (a
    bold-titled item lives in its heading's chunk)."""
    hits = list(hits)
    if bank is None or not sure(bank):
        return hits
    at = next((i for i, h in enumerate(hits) if h.article_id == bank.section.article_id), None)
    if at is None:
        return hits
    path = bank.section.path
    for depth in range(len(path), -1, -1):
        chunks = [
            c
            for c in await knowledge_base.section_chunks(
                session, article_id=bank.section.article_id, heading_path=path[:depth]
            )
            if c.heading_path == path[:depth]
        ]
        if chunks:
            break
    else:
        return hits
    found = SearchHit.of(chunks[0], score=max(h.score for h in hits))
    return [found, *hits[:at], *hits[at + 1 :]]


@lru_cache(maxsize=4)
def bundled_matcher(docs: Path | None = None) -> QuestionMatcher:
    """The question matcher of the bundled articles' banks, one per process."""
    return QuestionMatcher(bundled_index(docs))


def _sections_from_hit(hit: Mapping[str, Any]) -> list[Section]:
    """Sections of a passage whose article is not bundled (an operator's own ingested docs)."""
    content = str(hit.get("content", ""))
    article = Article(
        article_id=str(hit.get("article_id", "")),
        title=str(hit.get("title", "")),
        category=str(hit.get("category", "")),
        body=content,
    )
    return article_sections(article)


# ----------------------------------------------------------------------------- choosing a section


@dataclass(frozen=True)
class Candidate:
    """A section scored against the question."""

    section: Section
    score: float
    confidence: float
    rank: int  # the passage's place in the search results, 0-based


def _passage_sections(hit: Mapping[str, Any], index: SectionIndex) -> list[Section]:
    """The sections a search passage belongs to (several when its section is cut into items)."""
    article_id = str(hit.get("article_id", ""))
    sections = index.by_article.get(article_id)
    if sections is None:
        return _sections_from_hit(hit)
    given = hit.get("heading_path")
    if isinstance(given, list | tuple):
        path = tuple(str(h) for h in given)
    else:
        path = hit_heading_path(str(hit.get("content", "")))
    if not path:
        return [s for s in sections if not s.path]
    return [s for s in sections if s.path[: len(path)] == path]


def score_sections(question: str, hits: Sequence[Mapping[str, Any]], index: SectionIndex) -> list[Candidate]:
    """Sections of the search's top passages, best first, by the question's words they contain.

    `hits` is a section-level search (one passage per section, not per article). The score weighs
    each question word by its rarity (idf) with a saturating count, a word in the headings
    counting double; confidence is the share of the question's word weight the section, its
    headings or its article title contain.
    """
    wanted = list(dict.fromkeys(terms(question)))
    if not wanted:
        return []
    weights = {t: index.weight(t) for t in wanted}
    total = sum(weights.values())
    candidates: list[Candidate] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    passages = [h for h in hits if str(h.get("article_id", "")) not in index.internal]
    for rank, hit in enumerate(passages[:CANDIDATE_PASSAGES]):
        if str(hit.get("category", "")) in INTERNAL_CATEGORIES:
            continue
        title_terms = frozenset(terms(str(hit.get("title", ""))))
        for section in _passage_sections(hit, index):
            if (section.article_id, section.path) in seen:
                continue
            seen.add((section.article_id, section.path))
            covered = 0.0
            score = 0.0
            for term, weight in weights.items():
                tf = section.body_terms.get(term, 0)
                in_head = term in section.head_terms
                if tf or in_head or term in title_terms:
                    covered += weight
                score += weight * (tf / (tf + 1.2) + (1.0 if in_head else 0.0))
            candidates.append(Candidate(section=section, score=score / total, confidence=covered / total, rank=rank))
    candidates.sort(key=lambda c: (-c.score, c.rank))
    return candidates


def hit_heading_path(content: str) -> tuple[str, ...]:
    """The headings a search passage starts with (under its `# title` line), outermost first."""
    path: list[str] = []
    for line in content.lstrip().split("\n")[1:]:
        heading = _HEADING.match(line)
        if heading is None:
            break
        path.append(heading[2].strip())
    return tuple(path)


def best_section(
    question: str, hits: Sequence[Mapping[str, Any]], index: SectionIndex | None = None
) -> Candidate | None:
    """The best-scoring section among the search's top articles, whatever its confidence."""
    candidates = score_sections(question, hits, index or bundled_index())
    return candidates[0] if candidates else None


def _trim(markdown: str, limit: int = MAX_SECTION_CHARS) -> str:
    """The section, cut at a block boundary when it is very long (never inside a sentence)."""
    if len(markdown) <= limit:
        return markdown
    kept: list[str] = []
    size = 0
    for block in re.split(r"\n(?=\s*(?:\d+\.|[-*+])\s)|\n\s*\n", markdown):
        if size + len(block) > limit and kept:
            break
        kept.append(block)
        size += len(block) + 1
    return "\n".join(kept).strip()


def compose_answer(candidate: Candidate, *, help_url: str) -> str:
    """The reply in channel-neutral Markdown: the section under its title, and a link to the article."""
    section = candidate.section
    heading = f"**{section.title}"
    if section.path:
        heading += f": {section.path[-1]}"
    heading += "**"
    body = _trim(section.markdown)
    # Sub-headings inside the section become bold lines (channels render no Markdown headings).
    body = re.sub(r"^#{1,6}\s+(.+?)\s*#*$", r"**\1**", body, flags=re.MULTILINE)
    if is_learned(section.article_id):
        # An answer the team wrote for an earlier customer (issue 17): no help-centre page to link.
        return f"{heading}\n\n{body}"
    link = f"{help_url.rstrip('/')}/help/{section.article_id}"
    if section.anchor:
        link += f"#{section.anchor}"
    return f"{heading}\n\n{body}\n\nThe full article: {link}"


def choose_section(
    question: str,
    hits: Sequence[Mapping[str, Any]],
    *,
    bank: BankMatch | None = None,
    banked: Callable[[str], bool] = lambda article_id: False,
    threshold: float = CONFIDENCE_THRESHOLD,
    bank_threshold: float = BANK_MATCH,
    bank_margin: float = BANK_MARGIN,
    index: SectionIndex | None = None,
) -> Candidate | None:
    """The section to answer with, or None when the evidence is not strong enough.

    A clear bank match that the search found too answers. Otherwise the search's best section answers
    only if its article has no bank (`banked`) and it covers enough of the question's words: for a
    banked article the bank already said it is not sure.
    """
    index = index or bundled_index()
    if bank is not None and bank.similarity >= bank_threshold and bank.margin >= bank_margin:
        for rank, hit in enumerate(hits[:SEARCH_PASSAGES]):
            if str(hit.get("article_id", "")) not in index.internal and bank.section in _passage_sections(hit, index):
                return Candidate(section=bank.section, score=bank.similarity, confidence=bank.similarity, rank=rank)
    candidate = best_section(question, hits, index)
    if candidate is None or candidate.confidence < threshold or banked(candidate.section.article_id):
        return None
    return candidate


def compose_grounded_answer(
    question: str,
    hits: Sequence[Mapping[str, Any]],
    *,
    help_url: str = "",
    bank: BankMatch | None = None,
    banked: Callable[[str], bool] = lambda article_id: False,
    threshold: float = CONFIDENCE_THRESHOLD,
    index: SectionIndex | None = None,
) -> str | None:
    """The chosen section as a whole, or None when no section is likely enough to answer the question."""
    candidate = choose_section(question, hits, bank=bank, banked=banked, threshold=threshold, index=index)
    return None if candidate is None else compose_answer(candidate, help_url=help_url)


# ----------------------------------------------------------------------------- the step


SectionSearch = Callable[[str], Awaitable[Sequence[Mapping[str, Any]]]]


async def offline_decision(
    session: AsyncSession, inp: AgentStepInput, *, help_url: str, search_sections: SectionSearch | None = None
) -> OfflineDecision:
    """Small talk → a friendly reply; otherwise search first, then answer with a section or hand off.

    `search_sections` is a section-level knowledge-base search (one passage per section); without
    it the passages the search tool returned (one per article) are chosen among.
    """
    question = "\n".join(await messages.contents_by_ids(session, message_ids=inp.message_ids)).strip()
    call_id = f"offline-{inp.turn}-{inp.step}"
    kind = small_talk_kind(question)
    if kind is not None:
        reply = json.dumps({"message": small_talk_reply(kind, question)})
        return OfflineDecision([{"id": call_id, "name": "send_response", "arguments": reply}], kind == "resolved")
    hits: Sequence[Mapping[str, Any]] | None
    hits = await agent_steps.turn_search_hits(session, conversation_id=inp.conversation_id, turn=inp.turn)
    if hits is None:
        search = json.dumps({"query": question[:500]})
        return OfflineDecision([{"id": call_id, "name": "search_knowledge_base", "arguments": search}])
    if hits and search_sections is not None:
        hits = await search_sections(question[:500])
    # The encoder's forward pass is CPU work: off the event loop, like the embedder's.
    matcher = bundled_matcher()
    bank = await asyncio.to_thread(matcher.match, question)
    if bank is not None and bank.section.article_id not in await knowledge_base.stored_article_ids(
        session, prefix=bank.section.article_id
    ):
        bank = None  # a bundled article this deployment's knowledge base does not hold
    answer = compose_grounded_answer(question, hits, help_url=help_url, bank=bank, banked=matcher.has_bank)
    if answer is None:
        escalate = json.dumps({"reason": "no_answer"})
        return OfflineDecision([{"id": call_id, "name": "escalate_to_human", "arguments": escalate}])
    return OfflineDecision([{"id": call_id, "name": "send_response", "arguments": json.dumps({"message": answer})}])
