"""Question banks (kb/questions.py): reviewable files of customers' wordings per article section."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kb.questions import BankQuestion, QuestionBankError, parse_question_bank, read_question_banks

GOOD = """
# comments are fine
[[section]]
path = []
questions = ["what is this for"]

[[section]]
path = ["FAQ", "Can I connect two Slack workspaces?"]
questions = [
  "we have 2 slack orgs, can both be hooked up??",
  "  ¿Puedo conectar dos espacios de Slack?  ",
]
"""


def test_a_bank_file_becomes_questions_with_their_section_paths() -> None:
    assert parse_question_bank(GOOD, article_id="slack-integration") == [
        BankQuestion("slack-integration", (), "what is this for"),
        BankQuestion(
            "slack-integration",
            ("FAQ", "Can I connect two Slack workspaces?"),
            "we have 2 slack orgs, can both be hooked up??",
        ),
        BankQuestion(
            "slack-integration",
            ("FAQ", "Can I connect two Slack workspaces?"),
            "¿Puedo conectar dos espacios de Slack?",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[[section]\npath = []", "not valid TOML"),
        ("section = 3", "must be an array of tables"),
        ("[[section]]\nquestions = ['a']", "`path` must be a list of headings"),
        ("[[section]]\npath = ['Setup', 3]\nquestions = ['a']", "`path` must be a list of headings"),
        ("[[section]]\npath = ['Setup']\nquestions = ['a', '  ']", "`questions` must be a list of non-empty strings"),
        ("[[section]]\npath = ['Setup']\nquestions = 'how do i'", "`questions` must be a list of non-empty strings"),
    ],
)
def test_a_malformed_bank_is_refused_with_the_file_and_the_reason(text: str, why: str) -> None:
    with pytest.raises(QuestionBankError) as caught:
        parse_question_bank(text, article_id="setup", source="guides/setup.questions.toml")
    assert str(caught.value).startswith("guides/setup.questions.toml")
    assert why in str(caught.value)


def test_banks_are_found_beside_their_articles_in_subfolders(tmp_path: Path) -> None:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text("# Setup\n\n## Install\n\nRun it.\n", encoding="utf-8")
    (tmp_path / "guides" / "setup.questions.toml").write_text(
        "[[section]]\npath = ['Install']\nquestions = ['how do i get it running']\n", encoding="utf-8"
    )
    (tmp_path / "notes.toml").write_text("not a bank = true\n", encoding="utf-8")
    assert read_question_banks(tmp_path) == [BankQuestion("guides/setup", ("Install",), "how do i get it running")]


def test_every_bundled_bank_parses() -> None:
    from kb.ingest import default_docs_path

    questions = read_question_banks(default_docs_path())
    assert len({q.article_id for q in questions}) == len(list(default_docs_path().glob("*.md")))


def test_no_bank_question_is_a_held_out_case() -> None:
    """The held-out answer and retrieval sets measure wording the bank never saw: not one of their
    messages may sit in a bank verbatim (case, spacing and punctuation aside)."""
    import json
    import re

    def norm(text: str) -> str:
        return re.sub(r"\W+", " ", text.lower()).strip()

    root = Path(__file__).resolve().parents[2]
    bank = {norm(q.text) for q in read_question_banks(root / "kb" / "docs")}
    held_out = [
        norm(json.loads(line)[field])
        for name, field in (("answers", "message"), ("retrieval", "question"))
        for line in (root / "bench" / "data" / name / "held_out.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(held_out) > 200
    assert not [text for text in held_out if text in bank]


def test_start_up_vectors_are_cached_on_disk_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bank and the layer's examples are embedded when a worker starts; a restart loads them."""
    import numpy as np

    from kb import embeddings

    monkeypatch.setattr(embeddings, "_vector_cache_dir", lambda: tmp_path / "vectors")
    texts = ["how do i export my board", "¿cómo exporto un tablero?"]
    first = embeddings.cached_use_vectors(texts)
    assert np.allclose(first, embeddings.use_vectors(texts))
    assert len(list((tmp_path / "vectors").glob("*.npy"))) == 1
    calls: list[int] = []
    monkeypatch.setattr(embeddings, "use_vectors", lambda t, batch_size=64: calls.append(1) or first)
    assert np.array_equal(embeddings.cached_use_vectors(texts), first) and calls == []  # read back
    embeddings.cached_use_vectors([*texts, "one more"])  # other texts: another key, computed
    assert calls == [1]


def test_an_unwritable_vector_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kb import embeddings

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")
    monkeypatch.setattr(embeddings, "_vector_cache_dir", lambda: blocker / "vectors")
    assert embeddings.cached_use_vectors(["hello there"]).shape == (1, embeddings.USE_DIM)


def test_a_message_encoded_by_several_steps_of_a_turn_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from kb import embeddings

    message = f"my calendar stopped syncing since tuesday {uuid.uuid4().hex}"
    batched = embeddings.use_vectors([message, *(f"filler {n}" for n in range(embeddings._FEW_TEXTS))])[0]
    first = embeddings.use_vectors([message])
    assert np.allclose(first[0], batched, atol=1e-5)  # the cache's single encode is the batch's row
    encoder = embeddings.use_encoder()
    monkeypatch.setattr(encoder, "encode", lambda texts: pytest.fail(f"encoded again: {texts}"))
    again = embeddings.use_vectors([message, message])
    assert np.array_equal(again, np.stack([first[0], first[0]]))
    again[0, :] = 0.0  # a caller may write into its array: the cached vector is a copy's source, not the array
    assert np.array_equal(embeddings.use_vectors([message])[0], first[0])


def test_a_damaged_array_cache_is_computed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trained model's arrays are read back by their inputs' hash; a file that is not a whole archive
    (cut short, or garbage) is computed again and replaced, not an error at worker start."""
    import numpy as np

    from kb import embeddings

    monkeypatch.setattr(embeddings, "_vector_cache_dir", lambda: tmp_path / "vectors")
    computed: list[int] = []

    def compute() -> dict[str, np.ndarray]:
        computed.append(1)
        return {"weights": np.arange(6.0).reshape(2, 3)}

    first = embeddings.cached_arrays("abc", compute)
    assert np.array_equal(embeddings.cached_arrays("abc", compute)["weights"], first["weights"]) and computed == [1]
    (tmp_path / "vectors" / "abc.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert np.array_equal(embeddings.cached_arrays("abc", compute)["weights"], first["weights"]) and computed == [1, 1]
    assert np.array_equal(embeddings.cached_arrays("abc", compute)["weights"], first["weights"]) and computed == [1, 1]
