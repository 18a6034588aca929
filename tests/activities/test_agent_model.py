"""What a real model answers, interpreted: tool calls, repair requests, hand-offs; the replay it is sent; its prompt."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from activities.agent.model import (
    INVALID_CALL,
    call_id,
    interpret,
    invalid_call_result,
    normalise_calls,
    repaired_before,
    replay,
)
from activities.agent.prompt import SYSTEM_PROMPT, system_prompt
from activities.agent.step import whole_section
from activities.agent.tools import TOOL_NAMES, TOOLS, argument_problem
from crm.repositories.agent_steps import StoredStep
from crm.repositories.messages import TranscriptLine
from kb.chunking import chunk_article, read_article
from kb.ingest import default_docs_path


def _call(name: str, arguments: Any, id_: str | None = "call_1", type_: str | None = "function") -> SimpleNamespace:
    """A tool call shaped like the openai client's parsed object (missing fields stay None, as it leaves them)."""
    return SimpleNamespace(id=id_, type=type_, function=SimpleNamespace(name=name, arguments=arguments))


def _interpret(**kwargs: Any) -> Any:
    base: dict[str, Any] = {
        "content": None,
        "refusal": None,
        "finish_reason": "stop",
        "raw_calls": None,
        "turn": 3,
        "step": 1,
        "repaired_before": False,
    }
    return interpret(**{**base, **kwargs})


# ----------------------------------------------------------------------------- tool calls as servers send them
def test_missing_empty_and_repeated_ids_get_stable_unique_ids() -> None:
    calls = normalise_calls(
        [
            _call("search_knowledge_base", '{"query": "a"}', id_=None),
            _call("search_knowledge_base", '{"query": "b"}', id_=""),
            _call("get_customer_history", "{}", id_="call_x"),
            _call("send_response", '{"message": "hi"}', id_="call_x"),
        ],
        turn=3,
        step=1,
    )
    ids = [c["id"] for c in calls]
    assert ids == [call_id(3, 1, 0), call_id(3, 1, 1), "call_x", call_id(3, 1, 3)]
    assert len(set(ids)) == 4
    # Mistral models behind vLLM accept nine letters and digits only.
    assert all(len(i) == 9 and i.isalnum() for i in ids if i != "call_x")
    assert call_id(3, 1, 0) == call_id(3, 1, 0) != call_id(3, 2, 0)  # a retried step gets the same ids


def test_a_call_without_type_or_with_object_arguments_still_runs() -> None:
    [call] = normalise_calls([_call("search_knowledge_base", {"query": "dark mode"}, type_=None)], turn=1, step=0)
    assert call["name"] == "search_knowledge_base"
    assert json.loads(call["arguments"]) == {"query": "dark mode"}
    decided = _interpret(raw_calls=[_call("search_knowledge_base", {"query": "dark mode"}, type_=None)])
    assert [c["name"] for c in decided.runnable] == ["search_knowledge_base"] and decided.handoff is None


def test_a_non_function_tool_call_is_rejected_not_run() -> None:
    custom = SimpleNamespace(id="call_c", type="custom", custom=SimpleNamespace(name="x", input="y"))
    decided = _interpret(raw_calls=[custom])
    assert decided.runnable == [] and "call_c" in decided.rejected and decided.handoff is None


def test_parallel_calls_keep_the_models_order() -> None:
    raw = [
        _call("search_knowledge_base", '{"query": "slack"}', id_="a"),
        _call("search_knowledge_base", '{"query": "calendar"}', id_="b"),
        _call("get_customer_history", "{}", id_="c"),
    ]
    decided = _interpret(raw_calls=raw, finish_reason="tool_calls")
    assert [c["id"] for c in decided.runnable] == ["a", "b", "c"] and not decided.rejected


# ----------------------------------------------------------------------------- malformed calls: one repair
@pytest.mark.parametrize(
    ("name", "arguments", "problem"),
    [
        ("search_knowledge_base", '{"query": "export', "not valid JSON"),
        ("search_knowledge_base", '["export"]', "JSON object"),
        ("search_knowledge_base", "{}", "'query' is missing"),
        ("send_response", '{"message": 42}', "must be a string"),
        ("refund_customer", "{}", "no tool named"),
    ],
)
def test_argument_problems_name_what_is_wrong(name: str, arguments: str, problem: str) -> None:
    found = argument_problem(name, arguments)
    assert found is not None and problem in found


def test_valid_arguments_have_no_problem_and_enum_words_are_left_to_the_tools() -> None:
    assert argument_problem("search_knowledge_base", '{"query": "export"}') is None
    assert argument_problem("get_customer_history", "{}") is None
    # A made-up reason is mapped to agent_requested by the tool itself, not refused here.
    assert argument_problem("escalate_to_human", '{"reason": "because"}') is None


def test_a_malformed_call_is_rejected_once_then_hands_off() -> None:
    raw = [_call("search_knowledge_base", '{"query": "export', id_="bad")]
    first = _interpret(raw_calls=raw)
    assert first.runnable == [] and "not valid JSON" in first.rejected["bad"] and first.handoff is None
    again = _interpret(raw_calls=raw, repaired_before=True)
    assert again.handoff is not None and "after one repair attempt" in again.handoff


def test_valid_calls_beside_a_malformed_one_still_run() -> None:
    raw = [_call("search_knowledge_base", '{"query": "x', id_="bad"), _call("get_customer_history", "{}", id_="ok")]
    decided = _interpret(raw_calls=raw)
    assert [c["id"] for c in decided.runnable] == ["ok"] and set(decided.rejected) == {"bad"}


def test_repaired_before_reads_the_turns_earlier_results() -> None:
    told = StoredStep(role="tool", tool_call_id="bad", payload={"result": invalid_call_result("x", "{")}, step=0)
    other = StoredStep(role="tool", tool_call_id="s", payload={"result": {"error": "query is required"}}, step=0)
    assert repaired_before([other, told]) and not repaired_before([other])
    assert invalid_call_result("x", "{" * 900)["error"] == INVALID_CALL
    assert len(invalid_call_result("x", "{" * 900)["your_arguments"]) == 500


# ----------------------------------------------------------------------------- refusals, plain text, nothing
def test_a_refusal_hands_off_and_keeps_the_refusal_for_the_human() -> None:
    decided = _interpret(refusal="I can't help with that request.")
    [call] = decided.runnable
    arguments = json.loads(call["arguments"])
    assert call["name"] == "escalate_to_human" and arguments["reason"] == "agent_requested"
    assert "I can't help with that request." in arguments["note"] and decided.handoff is None


def test_a_content_filter_stop_hands_off_like_a_refusal() -> None:
    decided = _interpret(content="", finish_reason="content_filter")
    assert [c["name"] for c in decided.runnable] == ["escalate_to_human"]


def test_plain_text_is_sent_through_send_response() -> None:
    decided = _interpret(content="  Go to Settings → Export.  ")
    [call] = decided.runnable
    assert call["name"] == "send_response" and json.loads(call["arguments"]) == {"message": "Go to Settings → Export."}


def test_a_reasoning_models_thinking_is_never_part_of_the_answer() -> None:
    decided = _interpret(content="<think>The user wants exports. Say Settings.</think>\n\nGo to Settings → Export.")
    assert json.loads(decided.runnable[0]["arguments"]) == {"message": "Go to Settings → Export."}
    only_thinking = _interpret(content="<think>I should search first but")
    assert only_thinking.runnable == [] and only_thinking.handoff is not None


@pytest.mark.parametrize(
    ("content", "finish_reason", "problem"),
    [
        ("Go to Settings and th", "length", "cut off"),
        (None, "stop", "neither a reply nor a tool call"),
        ("   ", "stop", "neither a reply nor a tool call"),
    ],
)
def test_output_that_cannot_be_used_hands_off(content: str | None, finish_reason: str, problem: str) -> None:
    decided = _interpret(content=content, finish_reason=finish_reason)
    assert decided.runnable == [] and decided.handoff is not None and problem in decided.handoff


# ----------------------------------------------------------------------------- what is sent back
def test_replay_answers_every_call_in_order_and_repairs_what_servers_reject() -> None:
    transcript = [
        TranscriptLine(direction="inbound", role="customer", content="How do I export?"),
    ]
    calls = [
        {"id": "b", "name": "search_knowledge_base", "arguments": '{"query": "exp'},
        {"id": "a", "name": "get_customer_history", "arguments": "{}"},
        {"id": "c", "name": "search_knowledge_base", "arguments": '{"query": "export"}'},
    ]
    steps = [
        StoredStep(role="assistant", tool_call_id=None, payload={"content": None, "tool_calls": calls}, step=0),
        # Stored in a different order than the calls, and one (c) never got a result.
        StoredStep(role="tool", tool_call_id="a", payload={"result": {"previous_messages": []}}, step=0),
        StoredStep(role="tool", tool_call_id="b", payload={"result": invalid_call_result("bad", "x")}, step=0),
        # A stale result of an earlier attempt at the same step, under an id the step no longer has.
        StoredStep(role="tool", tool_call_id="zzz", payload={"result": {"hits": []}}, step=0),
    ]
    messages = replay(transcript, steps)
    assert messages[0] == {"role": "user", "content": "How do I export?"}
    assistant = messages[1]
    assert assistant["role"] == "assistant" and assistant["content"] == ""  # never null (llama.cpp)
    sent = {c["id"]: c["function"]["arguments"] for c in dict(assistant)["tool_calls"]}
    assert sent == {"b": "{}", "a": "{}", "c": '{"query": "export"}'}  # broken JSON is not sent back (vLLM parses it)
    tools = [dict(m) for m in messages[2:]]
    assert [m["tool_call_id"] for m in tools] == ["b", "a", "c"]
    assert json.loads(str(tools[0]["content"]))["error"] == INVALID_CALL
    assert json.loads(str(tools[2]["content"])) == {"error": "not run"}


# ----------------------------------------------------------------------------- the prompt
def test_the_prompt_carries_the_channels_brand_voice_and_the_escalation_rules() -> None:
    whatsapp = system_prompt("whatsapp", "TC-9", tone="concise", max_chars=1600, language="es")
    assert "ideally under 80 words" in whatsapp  # brand voice, WhatsApp section
    assert "Email — formal and complete" not in whatsapp and "Web form — semi-formal" not in whatsapp
    assert "Reason codes and triggers" in whatsapp and "security → legal → refund" in whatsapp
    assert "Priorities and response times" not in whatsapp  # the workflow sets priorities, not the model
    assert "'es'" in whatsapp and "1600 characters" in whatsapp and "TC-9" in whatsapp
    email = system_prompt("email", None)
    assert "Email — formal and complete" in email and "ideally under 80 words" not in email
    assert "not yet assigned" in email


def test_the_prompt_asks_for_citations_one_clarifying_question_and_the_customers_language() -> None:
    rules = SYSTEM_PROMPT.lower()
    assert "link" in rules and "one short clarifying question" in rules and "language of the customer" in rules
    # The leak checks read the rules up to the channel line.
    assert "Channel:" in SYSTEM_PROMPT


def test_the_model_rewrites_the_customers_message_into_an_english_search_query() -> None:
    # The help centre is English: a Spanish message searched in Spanish finds little (bench/kb_search.py
    # --quality, non-English questions), so the model is told to search with an English restatement.
    assert "write the query in english" in SYSTEM_PROMPT.lower()
    [search_tool] = [t for t in TOOLS if t["function"]["name"] == "search_knowledge_base"]
    query = search_tool["function"]["parameters"]["properties"]["query"]  # type: ignore[typeddict-item]
    assert "in English" in query["description"] and "not the whole message" in query["description"]


def test_an_unknown_configured_tone_falls_back_to_the_channels() -> None:
    assert "tone: concise and friendly" in system_prompt("whatsapp", None, tone="shouty")


def test_every_tool_has_a_schema_the_validator_knows() -> None:
    for name in TOOL_NAMES:
        assert "no tool named" not in (argument_problem(name, "{}") or "")


# ----------------------------------------------------------------------------- whole sections for the model
def test_a_section_stored_in_pieces_is_read_whole_in_order_without_repeats() -> None:
    article = read_article(default_docs_path() / "plans-overview.md", article_id="plans-overview")
    by_section: dict[tuple[str, ...], list[str]] = {}
    for chunk in chunk_article(article):
        by_section.setdefault(chunk.heading_path, []).append(chunk.content)
    path, pieces = next((p, c) for p, c in by_section.items() if len(c) > 1)  # the bundled KB has one
    joined = whole_section(pieces)
    source = article.body.split(f"## {path[-1]}", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    positions = [joined.find(line) for line in lines]
    assert -1 not in positions and positions == sorted(positions)  # every line of the section, in order
    assert all(joined.count(line) == 1 for line in lines if len(line) > 20)  # the overlap is not repeated
    assert joined.count(f"## {path[-1]}") == 1


def test_pieces_without_overlap_are_joined_and_a_huge_section_is_cut_at_a_line() -> None:
    joined = whole_section(["# T\n\n## S\n\nfirst part.", "# T\n## S\n\nsecond part."])
    assert joined == "# T\n\n## S\n\nfirst part.\n\nsecond part."
    huge = whole_section(["# T\n\n## S\n\n" + "\n".join(f"- item number {i} of a long list" for i in range(400))])
    assert len(huge) <= 6002 and huge.endswith("\n…") and "of a long list\n…" in huge
