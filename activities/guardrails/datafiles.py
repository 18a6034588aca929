"""Reading the guardrails' data files (``data/*.toml``): parsed once, validated, errors name the entry."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

# A regular expression as written in a data file: one string, or a list of pieces joined together
# (so a long pattern can be laid out over several lines).
PatternText = str | list[str]

_FRAGMENT_REF = re.compile(r"\{([a-z][a-z_]*)\}")  # {name}; regex quantifiers are {n,m}: digits only

M = TypeVar("M", bound=BaseModel)


class GuardrailDataError(ValueError):
    """A guardrails data file is malformed; the message names the file and the entry."""


class Entry(BaseModel):
    """Base of every data-file schema: unknown keys are errors (a typo must not silently do nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read(name: str) -> dict[str, Any]:
    """The parsed TOML file `data/<name>`, shipped inside the package."""
    source = resources.files("activities.guardrails") / "data" / name
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GuardrailDataError(f"{name}: {exc}") from exc


def validate(model: type[M], raw: object, *, where: str) -> M:
    """`raw` as `model`, or a GuardrailDataError saying where and what is wrong."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'entry'}: {error['msg']}" for error in exc.errors()
        )
        raise GuardrailDataError(f"{where}: {problems}") from None


def expand(pattern: PatternText, fragments: Mapping[str, str], *, where: str) -> str:
    """The pattern's pieces joined, with each {name} replaced by that fragment."""

    def fragment(ref: re.Match[str]) -> str:
        if ref.group(1) not in fragments:
            raise GuardrailDataError(f"{where}: unknown fragment {{{ref.group(1)}}}")
        return fragments[ref.group(1)]

    return _FRAGMENT_REF.sub(fragment, pattern if isinstance(pattern, str) else "".join(pattern))


def compile_pattern(
    pattern: PatternText, *, where: str, flags: int = 0, fragments: Mapping[str, str] | None = None
) -> re.Pattern[str]:
    """One regular expression."""
    try:
        return re.compile(expand(pattern, fragments or {}, where=where), flags)
    except re.error as exc:
        raise GuardrailDataError(f"{where}: invalid pattern: {exc}") from None


def compile_any(
    patterns: Sequence[PatternText], *, where: str, fragments: Mapping[str, str] | None = None
) -> re.Pattern[str]:
    """Alternatives: any one matching is a hit. Multi-line, because the text they read is lower-cased
    once per message (case-insensitive matching over large alternations is several times slower)."""
    if not patterns:
        raise GuardrailDataError(f"{where}: no patterns")
    joined = "|".join(f"(?:{expand(p, fragments or {}, where=where)})" for p in patterns)
    return compile_pattern(joined, where=where, flags=re.MULTILINE)


def fragments_of(raw: Mapping[str, Any], *, where: str) -> dict[str, str]:
    """The file's `[fragments]` table, each joined into one string."""
    table = validate(_Fragments, {"items": raw.get("fragments", {})}, where=f"{where}: [fragments]")
    return {name: expand(text, {}, where=f"{where}: fragment {name!r}") for name, text in table.items.items()}


class _Fragments(Entry):
    items: dict[str, PatternText]
