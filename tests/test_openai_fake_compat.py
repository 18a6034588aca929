"""The OpenAI fake's compatible-server quirks and checks, through the real `openai` client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.openai_fake import ChatReply, OpenAIFake, ToolCall


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(compat_checks=True) as running:
        yield running


def _client(fake: OpenAIFake) -> openai.OpenAI:
    return openai.OpenAI(api_key="k", base_url=fake.api_base, max_retries=0)


def test_tool_calls_come_as_quirky_servers_send_them(fake: OpenAIFake) -> None:
    fake.push(
        ChatReply(
            tool_calls=[
                ToolCall("a", {"x": 1}, compat_id=""),
                ToolCall("b", {"y": 2}, compat_omit_id=True, compat_omit_type=True, compat_arguments_as_object=True),
            ],
            omit_usage=True,
        )
    )
    response = _client(fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    wire = fake.chat_responses[-1]["choices"][0]["message"]["tool_calls"]
    assert wire[0]["id"] == "" and wire[0]["function"]["arguments"] == '{"x": 1}'
    assert "id" not in wire[1] and "type" not in wire[1] and wire[1]["function"]["arguments"] == {"y": 2}
    assert "usage" not in fake.chat_responses[-1] and response.usage is None


def test_refusal_and_malformed_call_scripts(fake: OpenAIFake) -> None:
    fake.push_refusal("No.")
    fake.push_malformed_tool_call("search_knowledge_base")
    client = _client(fake)
    refused = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert refused.choices[0].message.refusal == "No." and refused.choices[0].message.tool_calls is None
    broken = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    calls = broken.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls if c.type == "function"] == ['{"query": "export']


@pytest.mark.parametrize(
    ("assistant", "problem"),
    [
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "'content' to be a string",
        ),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
            },
            "not valid JSON",
        ),
    ],
)
def test_compat_checks_reject_what_stricter_servers_reject(
    fake: OpenAIFake, assistant: dict[str, object], problem: str
) -> None:
    messages = [{"role": "user", "content": "hi"}, assistant, {"role": "tool", "tool_call_id": "c1", "content": "{}"}]
    with pytest.raises(openai.BadRequestError) as err:
        _client(fake).chat.completions.create(model="m", messages=messages)
    assert problem in str(err.value)
    # Without the checks (the fake's default, like OpenAI's own API) the same request is answered.
    with OpenAIFake() as lenient:
        assert _client(lenient).chat.completions.create(model="m", messages=messages).choices
