"""Validate bench/data/{retrieval,answers}/{tuning,held_out}.jsonl against kb/docs and print count tables.

Checks: every line parses as JSON with the required fields and allowed values; ids unique across both files of
a set; every expected slug exists in kb/docs and is customer-facing; `section` is a ##/### heading of the
primary (first) expected article; every must_contain fact occurs (case-insensitively, after the normalisation
below) in the primary expected article's text, and in the named section; per-kind field rules.
Exit status 1 on any error.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KB = ROOT / "kb/docs"
DATA = ROOT / "bench/data"
INTERNAL = {"escalation-rules", "brand-voice"}
LANGS = {"en", "es", "pt", "fr", "de"}
R_STYLES = {"paraphrase", "symptom", "everyday_word", "rare_term", "direct", "typo", "non_english"}
KINDS = {"answerable", "unanswerable", "small_talk", "must_escalate"}
CHANNELS = {"email", "whatsapp", "web_form"}
REASONS = {None, "pricing", "refund", "legal", "security", "human_request", "negative_sentiment"}


def norm(s):
    s = s.lower().replace("**", "").replace("*", "").replace("`", "")
    for a, b in (("\u2013", "-"), ("\u2014", "-"), ("\u2019", "'"), ("\u00d7", "x"), ("\u2026", "...")):
        s = s.replace(a, b)
    s = re.sub(r"\s+", " ", s)
    return s.replace(" -> ", " \u2192 ").replace(" > ", " \u2192 ")


def load_kb():
    arts = {}
    for p in KB.glob("*.md"):
        lines = p.read_text(encoding="utf-8").splitlines()
        heads, code = [], False
        for i, line in enumerate(lines):
            if line.startswith("```"):
                code = not code
            m = None if code else re.match(r"^(#{2,3}) (.+?)\s*$", line)
            if m:
                heads.append((len(m.group(1)), m.group(2), i))
        secs = {}
        for j, (lvl, h, ln) in enumerate(heads):
            end = next((ln2 for lvl2, _, ln2 in heads[j + 1 :] if lvl2 <= lvl), len(lines))
            secs[h] = "\n".join(lines[ln:end])
        arts[p.stem] = dict(text="\n".join(lines), sections=secs)
    return arts


def read(path, errors):
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            errors.append(f"{path.name}:{n}: blank line")
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            errors.append(f"{path.name}:{n}: bad JSON: {e}")
    return rows


def check_expected(rid, exp, section, arts, errors, need_section=True):
    if not isinstance(exp, list):
        errors.append(f"{rid}: expected is not a list")
        return None
    for s in exp:
        if s not in arts:
            errors.append(f"{rid}: unknown slug {s!r}")
        elif s in INTERNAL:
            errors.append(f"{rid}: internal policy article {s!r} as expected")
    if len(set(exp)) != len(exp):
        errors.append(f"{rid}: duplicate slug in expected")
    if exp and exp[0] in arts:
        art = arts[exp[0]]
        if need_section and section not in art["sections"]:
            errors.append(f"{rid}: section {section!r} is not a ##/### heading of {exp[0]}")
        return art
    return None


def bold_item(art, title):
    """The text of a bold-titled item (`**title**` and the lines under it, to the next bold title or heading)."""
    lines = art["text"].splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"**{title}**"), None)
    if start is None:
        return None
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith(("**", "#"))), len(lines))
    return "\n".join(lines[start:end])


def check_alternative(aid, case, alt, arts, errors):
    """`also`: another section (a ##/### heading, or a bold-titled item) that answers the case, with
    1-4 facts that occur in that section."""
    if case["kind"] != "answerable" or set(alt) != {"article", "section", "must_contain"}:
        errors.append(f"{aid}: an alternative needs an answerable case and article, section, must_contain")
        return
    art = arts.get(alt["article"])
    if art is None or alt["article"] in INTERNAL:
        errors.append(f"{aid}: alternative article {alt['article']!r} is not a customer article")
        return
    text = art["sections"].get(alt["section"]) or bold_item(art, alt["section"])
    if text is None:
        errors.append(f"{aid}: alternative section {alt['section']!r} is not in {alt['article']}")
        return
    if not 1 <= len(alt["must_contain"]) <= 4:
        errors.append(f"{aid}: an alternative needs 1-4 must_contain facts")
    for f in alt["must_contain"]:
        if norm(f) not in norm(text):
            errors.append(f"{aid}: alternative fact {f!r} not in {alt['article']} {alt['section']!r}")


def table(rows, key, parts):
    keys = sorted({key(r) for p in parts for r in rows[p]})
    out = ["| " + " | ".join(["value", *parts, "total"]) + " |", "|" + "---|" * (len(parts) + 2)]
    for k in keys:
        c = [sum(key(r) == k for r in rows[p]) for p in parts]
        out.append("| " + " | ".join([str(k)] + [str(x) for x in c] + [str(sum(c))]) + " |")
    tot = [len(rows[p]) for p in parts]
    out.append("| **total** | " + " | ".join(str(x) for x in tot) + f" | {sum(tot)} |")
    return "\n".join(out)


def main():
    arts = load_kb()
    errors = []
    parts = ["tuning", "held_out"]
    sets = {}
    for name in ("retrieval", "answers"):
        rows = {p: read(DATA / name / f"{p}.jsonl", errors) for p in parts}
        ids = Counter(r.get("id") for p in parts for r in rows[p])
        errors += [f"{name}: duplicate id {i}" for i, n in ids.items() if n > 1]
        sets[name] = rows

    for p in parts:
        for r in sets["retrieval"][p]:
            rid = r.get("id")
            need = {"id", "question", "expected", "section", "style", "language"}
            if set(r) != need:
                errors.append(f"{rid}: fields {sorted(set(r) ^ need)}")
                continue
            if not re.fullmatch(r"r-\d{4}", rid):
                errors.append(f"{rid}: bad id")
            if r["style"] not in R_STYLES or r["language"] not in LANGS:
                errors.append(f"{rid}: bad style/language")
            if (r["style"] == "non_english") != (r["language"] != "en"):
                errors.append(f"{rid}: style/language mismatch")
            if not r["expected"]:
                errors.append(f"{rid}: empty expected")
            check_expected(rid, r["expected"], r["section"], arts, errors)

        for a in sets["answers"][p]:
            aid = a.get("id")
            need = {
                "id",
                "message",
                "channel",
                "kind",
                "expected",
                "section",
                "must_contain",
                "must_not_contain",
                "escalation_reason",
                "style",
                "language",
            }
            if not need <= set(a) <= need | {"also"}:
                errors.append(f"{aid}: fields {sorted(set(a) ^ need)}")
                continue
            for alt in a.get("also", []):
                check_alternative(aid, a, alt, arts, errors)
            if not re.fullmatch(r"a-\d{4}", aid):
                errors.append(f"{aid}: bad id")
            if (
                a["kind"] not in KINDS
                or a["channel"] not in CHANNELS
                or a["language"] not in LANGS
                or a["escalation_reason"] not in REASONS
            ):
                errors.append(f"{aid}: bad kind/channel/language/reason")
            if (a["kind"] == "must_escalate") != (a["escalation_reason"] is not None):
                errors.append(f"{aid}: escalation_reason must be set exactly for must_escalate")
            if a["kind"] == "answerable":
                art = check_expected(aid, a["expected"], a["section"], arts, errors)
                if not a["expected"] or not (1 <= len(a["must_contain"]) <= 4):
                    errors.append(f"{aid}: answerable needs expected and 1-4 must_contain facts")
                if art:
                    text, sec = norm(art["text"]), norm(art["sections"].get(a["section"], ""))
                    for f in a["must_contain"]:
                        if norm(f) not in text:
                            errors.append(f"{aid}: fact {f!r} not in {a['expected'][0]}")
                        elif norm(f) not in sec:
                            errors.append(f"{aid}: fact {f!r} not in section {a['section']!r}")
                    for f in a["must_not_contain"]:
                        if norm(f) in sec:
                            errors.append(f"{aid}: must_not_contain {f!r} occurs in the answer section")
            else:
                if a["expected"] or a["section"] is not None or a["must_contain"]:
                    errors.append(f"{aid}: {a['kind']} needs expected [], section null, must_contain []")

    # every customer article is the primary target of >= 3 retrieval questions
    prim = Counter(r["expected"][0] for p in parts for r in sets["retrieval"][p])
    customer = sorted(s for s in arts if s not in INTERNAL)
    errors += [f"retrieval: {s} primary for only {prim[s]} questions" for s in customer if prim[s] < 3]

    print(f"articles: {len(arts)} ({len(customer)} customer-facing)")
    for name in ("retrieval", "answers"):
        print(f"{name}: " + ", ".join(f"{p}={len(sets[name][p])}" for p in parts))
    if "--tables" in sys.argv:
        R, A = sets["retrieval"], sets["answers"]
        print("\n### Retrieval: style x split\n")
        print(table(R, lambda r: r["style"], parts))
        print("\n### Retrieval: language x split\n")
        print(table(R, lambda r: r["language"], parts))
        print("\n### Retrieval: primary article x split\n")
        print(table(R, lambda r: r["expected"][0], parts))
        print("\n### Answers: kind x split\n")
        print(table(A, lambda a: a["kind"], parts))
        print("\n### Answers: kind/style x split\n")
        print(table(A, lambda a: f"{a['kind']} / {a['style']}", parts))
        print("\n### Answers: escalation_reason x split (must_escalate)\n")
        print(
            table(
                {p: [a for a in A[p] if a["kind"] == "must_escalate"] for p in parts},
                lambda a: a["escalation_reason"],
                parts,
            )
        )
        print("\n### Answers: channel x split\n")
        print(table(A, lambda a: a["channel"], parts))
        print("\n### Answers: language x split\n")
        print(table(A, lambda a: a["language"], parts))
    for e in errors:
        print("ERROR", e)
    print("validation:", "OK" if not errors else f"{len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
