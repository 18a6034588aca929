"""Text preparation for the guardrails (one spelling of punctuation, an email's new words only) and
for the offline responder (what a message asks, without an email's framing: question_text)."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator

# Phones and mail clients send typographic quotes, guillemets and dashes; the rules are written with
# ASCII ("« Brouillon »" and "„Entwurf“" quote a name as '"Brouillon"' does).
_PUNCT_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2039": "'",
        "\u203a": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
    }
)

_FLAGS = re.IGNORECASE | re.MULTILINE

# Where an email's new content ends: quoted history, signature delimiter, legal disclaimer.
# Disclaimers routinely say "confidential" / "legally privileged" and quoted history contains our
# own earlier replies ("if you'd like a refund..."); neither is something the customer just said.
_EMAIL_CUTS = (
    re.compile(r"^\s*on\b[^\n]{0,200}\bwrote:\s*$", _FLAGS),
    re.compile(r"^\s*-{2,}\s*(?:original|forwarded)\s+message\s*-{2,}", _FLAGS),
    re.compile(r"^--\s*$", re.MULTILINE),
    re.compile(
        r"^\s*(?:this\s+(?:e-?mail|message)\b[^\n]{0,120}\b(?:confidential|privileged)"
        r"|confidentiality\s+(?:(?:&|and)\s+legal\s+)?notice|legal\s+notice\s*:|disclaimer\s*:"
        # The same notice in the other languages we answer in ("Ce message et ses pièces jointes sont
        # confidentiels", "Diese E-Mail kann vertrauliche Informationen enthalten").
        r"|ce\s+(?:message|courriel|e-?mail)\b[^\n]{0,120}\b(?:confidentiel|privil[eé]gi[eé])"
        r"|este\s+(?:mensaje|correo|e-?mail)\b[^\n]{0,120}\bconfidencial"
        r"|(?:esta\s+mensagem|este\s+e-?mail)\b[^\n]{0,120}\bconfidencia"
        r"|diese\s+(?:e-?mail|nachricht)\b[^\n]{0,120}\bvertraulich)",
        _FLAGS,
    ),
)

# The lines that only *introduce* quoted history. They go from the full-text view below: Outlook's
# "-----Original Message-----" would otherwise read as a request for the "original message".
_QUOTE_INTRODUCERS = re.compile(
    r"^\s*(?:-{2,}\s*(?:original|forwarded)\s+message\s*-{2,}[^\n]*|on\b[^\n]{0,200}\bwrote:\s*)$", _FLAGS
)
_QUOTE_PREFIX = re.compile(r"^\s*(?:>\s?)+", re.MULTILINE)


def normalise(text: str) -> str:
    """NFKC, with typographic quotes, dashes and no-break spaces made ASCII."""
    return unicodedata.normalize("NFKC", text).translate(_PUNCT_MAP)


def fold_accents(text: str) -> str:
    """The text with combining accents taken off ("devolución" -> "devolucion"); other letters kept."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def strip_email_noise(text: str) -> str:
    """The new part of an email: cut at quoted history, the signature or a disclaimer; drop `>` lines."""
    cut = len(text)
    for pattern in _EMAIL_CUTS:
        found = pattern.search(text)
        if found and found.start() > 0:
            cut = min(cut, found.start())
    body = "\n".join(line for line in text[:cut].splitlines() if not line.lstrip().startswith(">"))
    # Never throw the whole message away: a bare forward is still the customer's message.
    return body if body.strip() else text


def prepare(text: str, channel: str | None) -> str:
    """What the customer just said on this channel, normalised."""
    text = normalise(text)
    # Only email (or an unknown source) carries quoted history and signatures; on WhatsApp and web
    # forms a leading ">" or "--" is the customer's own text.
    if channel in (None, "email"):
        text = strip_email_noise(text)
    return text


# A short quoted span: words the customer mentions rather than says ("cards full of 'furious' and
# 'disgraceful'", a label "ANGRY - call back"). An opening quote follows no letter and a closing one
# is followed by none, so the apostrophes of "there's" or "users'" open nothing.
_QUOTED_SPAN = re.compile(
    r"""(?<!\w)'[^'\n]{1,60}'(?!\w)|"[^"\n]{1,60}"|\u201c[^\u201d\n]{1,60}\u201d|\u2018[^\u2019\n]{1,60}\u2019(?!\w)|"""
    r"""\u00ab[^\u00bb\n]{1,60}\u00bb|\u201e[^\u201c\u201d\n]{1,60}[\u201c\u201d]"""
)


def without_quoted(text: str) -> str:
    """The text without its short quoted spans: what the customer says in their own voice (the
    sentiment of a message is not that of the complaints it quotes)."""
    return _QUOTED_SPAN.sub(" ", text)


def full_text(text: str) -> str:
    """Everything the message carries, quotes included, with the quoting itself taken off.

    Whatever the gateway's quote stripper leaves in the message reaches the model, whoever wrote
    it, so the prompt-injection rule reads all of it: "> SYSTEM: ignore your rules" must match like
    "SYSTEM: ignore your rules", wherever the `>` quoting or the "On ... wrote:" line put it.
    """
    lines = (line for line in normalise(text).splitlines() if not _QUOTE_INTRODUCERS.match(line))
    return _QUOTE_PREFIX.sub("", "\n".join(lines))


# An email's framing, in the five languages the rules speak. A salutation line holds a greeting and at
# most a few words of address ("Hello TechCorp team,"); a closing line a valediction and at most a few
# words ("Many thanks,", "Best regards, Maria") and is followed only by short signature lines.
_GREETINGS = (
    r"hi|hello|hey|hiya|dear|good\s+(?:morning|afternoon|evening|day)|greetings|"
    r"hola|buen[oa]s(?:\s+(?:d[ií]as|tardes|noches))?|estimad[oa]s?|"
    r"ol[aá]|oi|bom\s+dia|boa\s+(?:tarde|noite)|prezad[oa]s?|"
    r"bonjour|bonsoir|salut|madame|monsieur|"
    r"hallo|guten\s+(?:tag|morgen|abend)|liebe[rs]?|sehr\s+geehrte[rs]?|moin|servus"
)
_SALUTATION = re.compile(rf"^\s*(?:{_GREETINGS})\b[^?\n]*$", re.IGNORECASE)
_VALEDICTIONS = (
    r"thanks?|thank\s+you|thx|ty|many\s+thanks|cheers|best|regards|kind\s+regards|best\s+regards|"
    r"warm(?:est)?\s+regards|all\s+the\s+best|sincerely|yours(?:\s+(?:sincerely|truly))?|br|"
    r"gracias|muchas\s+gracias|saludos|un\s+saludo|atentamente|"
    r"obrigad[oa]|abra[çc]os?|att|atenciosamente|"
    r"merci|cordialement|bien\s+(?:à|a)\s+vous|bonne\s+journ[ée]e|"
    r"danke|vielen\s+dank|(?:viele|beste|liebe)\s+gr(?:ü|ue|u)(?:ß|ss)e|mit\s+freundlichen\s+gr(?:ü|ue|u)(?:ß|ss)en|"
    r"gru(?:ß|ss)|lg|mfg|vg"
)
_CLOSING = re.compile(rf"^\s*(?:{_VALEDICTIONS})\b[^?\n]*$", re.IGNORECASE)
_PLEASANTRY = re.compile(
    r"^\s*(?:i\s+hope\s+(?:you(?:'re|\s+are)|this\s+(?:e-?mail|message)\s+finds\s+you|all\s+is)\b[^.!?\n]*[.!]?"
    r"|thanks?\s+in\s+advance[.!]?|thank\s+you\s+in\s+advance[.!]?)\s*",
    re.IGNORECASE,
)
# "Hello TechCorp support team," and "Sehr geehrte Damen und Herren," frame; a longer line is a sentence,
# and so is one of more than three words not ended by a comma, colon or exclamation mark.
_ADDRESS_WORDS = 5
_BARE_ADDRESS_WORDS = 3
_SIGNATURE_LINES = 6  # a closing is followed by at most this many short lines (name, title, company)
_SIGNATURE_WORDS = 10
_NAME_WORDS = 4


def _words_in(line: str) -> int:
    return len(line.split())


def _is_signature(lines: list[str], *, cased: bool = True) -> bool:
    """Whether the lines under a closing read like a signature rather than more of the message: a
    name first (a few words, at most one of them in lower case: "Tomasz Nowak", "ana"; in a text
    already lower-cased, `cased=False`, only its length counts), then at most a few short lines (a
    title, a company, a phone number, "Sent from my iPhone"), no question.
    "thanks\\nalso can't log in since yesterday" is the message going on."""
    if not lines:
        return True
    name = lines[0].split()
    lower = sum(1 for word in name if word[:1].isalpha() and word[:1].islower()) if cased else 0
    if len(name) > _NAME_WORDS or lower > 1:
        return False
    return len(lines) <= _SIGNATURE_LINES and all(_words_in(r) <= _SIGNATURE_WORDS and "?" not in r for r in lines)


def _is_address(line: str, pattern: re.Pattern[str]) -> bool:
    """Whether a line is only a greeting or a valediction with a few words of address."""
    count = _words_in(line)
    if not pattern.match(line) or count > _ADDRESS_WORDS:
        return False
    return count <= _BARE_ADDRESS_WORDS or line.rstrip()[-1:] in {",", ":", "!"}


def _closing_line(lines: list[str], *, cased: bool = True) -> int | None:
    """The index of the closing line ("Kind regards,") that only a signature follows, when something
    comes before it; None otherwise."""
    for at in range(1, len(lines)):
        if not _is_address(lines[at], _CLOSING):
            continue
        if _is_signature([r for r in lines[at + 1 :] if r.strip()], cased=cased):
            return at if any(r.strip() for r in lines[:at]) else None
        return None
    return None


# A signature without a closing line of its own: under the "--" delimiter, or under a paragraph whose
# last sentence is the closing ("The link worked fine. Thanks for the quick help.\n\nAna Ruiz\nDPO").
_DELIMITER_LINE = re.compile(r"^\s*--\s*$")
_CLOSING_SENTENCE = re.compile(rf"(?:^|[.!?]\s+)(?:{_VALEDICTIONS})\b[^.!?\n]*[.!]?\s*$", re.IGNORECASE)


def _unclosed_signature(lines: list[str], *, cased: bool) -> int | None:
    """The index of the line that introduces a signature without a closing line of its own, when
    something comes before it: a "--" delimiter with a name under it, or the line ending in a closing
    sentence with a blank line and a signature under it; None otherwise."""
    for at in range(1, len(lines) - 1):
        if _DELIMITER_LINE.match(lines[at]) and any(r.strip() for r in lines[:at]):
            rest = [r for r in lines[at + 1 :] if r.strip()]
            return at if rest and _words_in(rest[0]) <= _NAME_WORDS else None
    blank = max((i for i, line in enumerate(lines) if not line.strip()), default=None)
    if blank is None or blank == 0 or not lines[blank - 1].strip():
        return None
    if not _CLOSING_SENTENCE.search(lines[blank - 1]):
        return None
    block = [r for r in lines[blank + 1 :] if r.strip()]
    return blank - 1 if block and _is_signature(block, cased=cased) else None


def signature_line(text: str) -> int | None:
    """The number of the line a message's closing and signature start on ("Regards,\\nMartina Keller\\n
    CISO & Data Protection Officer"): the closing line, a "--" delimiter, or the line ending in a
    closing sentence ("... Thanks for the quick help." with a blank line and a signature under it);
    None when there is no signature. `text` may already be lower-cased or accent-folded (the line count is the same)."""
    lines = text.splitlines()
    cased = text != text.lower()
    found = _closing_line(lines, cased=cased)
    return found if found is not None else _unclosed_signature(lines, cased=cased)


def question_text(text: str) -> str:
    """What a message asks, without an email's framing: quoted history, signature and disclaimer
    (strip_email_noise), a salutation line ("Hi there,"), a leading pleasantry ("I hope you're well.")
    and the closing with the signature under it ("Thanks,\\nMaria López\\nOperations Lead").

    Compared with the question bank and searched, a long email's framing is noise: a greeting and a
    job title match help articles about greetings and teams. Nothing is cut from a message that is
    all framing ("Thanks!") or that asks in its framing line ("Hi, how do I export?" stays whole: a
    line with a question mark or more than a few words of address is content).
    """
    body = strip_email_noise(text)
    lines = body.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and _is_address(lines[first], _SALUTATION):
        lines = lines[first + 1 :]
    closing = _closing_line(lines)
    if closing is not None:
        lines = lines[:closing]
    asked = "\n".join(lines).strip()
    asked = _PLEASANTRY.sub("", asked, count=1).strip()
    return asked or text.strip()


# ----------------------------------------------------------------------------- n-grams

_NGRAM_WORD = re.compile(r"\w+", re.UNICODE)
_NGRAM_SPACE = re.compile(r"\s+")


def char_ngrams(text: str) -> Iterator[str]:
    """Character 2- to 5-grams inside each word padded with spaces (scikit-learn's "char_wb"): pieces
    such as "reembols" or "erstatt" carry across languages, inflections and typos without a word list.
    Read by the guardrails' learned layer and the offline responder's section classifier."""
    for word in _NGRAM_SPACE.sub(" ", text).split():
        padded = f" {word} "
        size = len(padded)
        for n in range(2, 6):
            if n > size:
                break
            for start in range(size - n + 1):
                yield padded[start : start + n]


def word_ngrams(text: str) -> Iterator[str]:
    """Word uni- and bigrams, marked "w:" so they never collide with a character n-gram."""
    found = _NGRAM_WORD.findall(text)
    yield from (f"w:{w}" for w in found)
    yield from (f"w:{a} {b}" for a, b in itertools.pairwise(found))
