"""What a real model answers, made safe to act on; and the conversation replayed to it, made safe to send.

Written for any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp), so it assumes nothing the
chat-completions wire format does not promise everywhere:

- a tool call may come without an id, with an empty or repeated id, or without `type`; its
  arguments may be a JSON object instead of JSON text, or JSON that does not parse;
- several tool calls may come in one message (they run in order, each as its own activity);
- the model may refuse (`message.refusal`, or `finish_reason` "content_filter"), answer in plain
  text without a tool call, be cut off at the token limit, or return nothing at all.

Every outcome becomes one of: tool calls to run; tool calls the model is told were invalid (one
repair attempt per turn); a hand-off to a person. None of them fails the conversation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from openai.types.chat import ChatCompletionMessageParam, ChatCompletionMessageToolCallParam

from activities.agent.tools import ModelToolCall, argument_problem
from crm.repositories.agent_steps import StoredStep
from crm.repositories.messages import TranscriptLine

# Marks the tool result that tells the model its call was invalid; a second one in the same turn hands off.
INVALID_CALL: Final = "invalid_tool_call"
# Reasoning models served without a reasoning parser (Qwen3, DeepSeek-R1 on vLLM or llama.cpp) put
# their thinking in the content between these tags: it is never part of an answer.
_THINKING = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ModelTurn:
    """One model response, interpreted.

    `calls` is everything to record for the step, in the model's order; `rejected` maps the id of each
    call that cannot run to the reason the model is told; `handoff` is set when nothing in the
    response can be used and a person must take over.
    """

    content: str | None
    calls: list[ModelToolCall]
    rejected: dict[str, str] = field(default_factory=dict)
    handoff: str | None = None

    @property
    def runnable(self) -> list[ModelToolCall]:
        """The calls the workflow runs: every call that is not rejected."""
        return [c for c in self.calls if c["id"] not in self.rejected]


def call_id(turn: int, step: int, index: int) -> str:
    """A stable id for a call the server sent without a usable one.

    Nine letters and digits, because some servers (Mistral models behind vLLM) accept only that shape
    when the call is sent back to them.
    """
    return hashlib.sha256(f"{turn}/{step}/{index}".encode()).hexdigest()[:9]


def _arguments_text(arguments: object) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    # Some servers send the arguments already parsed; the tools read JSON text.
    return json.dumps(arguments, ensure_ascii=False)


def normalise_calls(raw_calls: Sequence[Any] | None, *, turn: int, step: int) -> list[ModelToolCall]:
    """The tool calls of one response, each with a unique id, a name and its arguments as JSON text."""
    calls: list[ModelToolCall] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_calls or []):
        function = getattr(raw, "function", None)
        if function is None:  # a non-function tool type ("custom"): not one of ours
            name, arguments = str(getattr(raw, "type", "") or "unknown"), "{}"
        else:
            name = str(getattr(function, "name", "") or "")
            arguments = _arguments_text(getattr(function, "arguments", None))
        given = getattr(raw, "id", None)
        identifier = given if isinstance(given, str) and given and given not in seen else call_id(turn, step, index)
        seen.add(identifier)
        calls.append({"id": identifier, "name": name.strip(), "arguments": arguments})
    return calls


def interpret(
    *,
    content: str | None,
    refusal: str | None,
    finish_reason: str | None,
    raw_calls: Sequence[Any] | None,
    turn: int,
    step: int,
    repaired_before: bool,
) -> ModelTurn:
    """Decide what one model response means for the turn (see the module docstring)."""
    calls = normalise_calls(raw_calls, turn=turn, step=step)
    auto_id = f"auto-{turn}-{step}"
    answer = _THINKING.sub("", content or "").strip()
    if calls:
        rejected = {c["id"]: problem for c in calls if (problem := argument_problem(c["name"], c["arguments"]))}
        handoff = None
        if rejected and repaired_before:
            handoff = "the model made invalid tool calls again after one repair attempt: " + "; ".join(
                rejected.values()
            )
        return ModelTurn(content=content, calls=calls, rejected=rejected, handoff=handoff)
    declined = (refusal or "").strip()
    if not declined and finish_reason == "content_filter":
        declined = "the reply was withheld by a content filter"
    if declined:
        # A model that declines is not answered for: a person reads the message instead.
        note = f"The model declined to answer: {declined}"[:500]
        escalate = json.dumps({"reason": "agent_requested", "note": note})
        return ModelTurn(content=content, calls=[{"id": auto_id, "name": "escalate_to_human", "arguments": escalate}])
    if finish_reason == "length":
        return ModelTurn(content=content, calls=[], handoff="the reply was cut off at the token limit")
    if answer:
        # A plain answer is a send_response: nothing the model says reaches a customer unchecked.
        reply = json.dumps({"message": answer})
        return ModelTurn(content=content, calls=[{"id": auto_id, "name": "send_response", "arguments": reply}])
    return ModelTurn(content=content, calls=[], handoff="the model returned neither a reply nor a tool call")


def invalid_call_result(problem: str, arguments: str) -> dict[str, Any]:
    """What the model is told about a call it must make again."""
    return {
        "error": INVALID_CALL,
        "problem": problem,
        "your_arguments": arguments[:500],
        "instruction": "That call was not run. Make it again with valid JSON arguments that match the tool's schema.",
    }


def repaired_before(steps: Sequence[StoredStep]) -> bool:
    """True when an earlier step of this turn already had an invalid call (its one repair attempt is spent)."""
    results = [s.payload.get("result") for s in steps if s.role == "tool"]
    return any(isinstance(r, Mapping) and r.get("error") == INVALID_CALL for r in results)


def _replayable_arguments(arguments: str) -> str:
    """Arguments as they can be sent back: some servers (vLLM) parse them and reject the request if
    they are not JSON, so broken ones are replaced (the model reads what it wrote in the tool result)."""
    try:
        json.loads(arguments)
    except ValueError:
        return "{}"
    return arguments


def replay(transcript: Sequence[TranscriptLine], steps: Sequence[StoredStep]) -> list[ChatCompletionMessageParam]:
    """The recent transcript, then this turn's earlier steps: each assistant message followed by one tool
    message per call, in the order of its calls (the API rejects a call left without its result)."""
    messages: list[ChatCompletionMessageParam] = []
    for line in transcript:
        if line.direction == "inbound":
            messages.append({"role": "user", "content": line.content})
        else:
            messages.append({"role": "assistant", "content": line.content})
    results: dict[tuple[int, str], Any] = {}
    for stored in steps:
        if stored.role == "tool" and stored.tool_call_id is not None:
            results[(stored.step, stored.tool_call_id)] = stored.payload.get("result")
    for stored in steps:
        if stored.role != "assistant":
            continue
        calls = [c for c in stored.payload.get("tool_calls", []) if isinstance(c, Mapping)]
        # Content "" rather than null: llama.cpp rejects a null content sent back to it.
        content = str(stored.payload.get("content") or "")
        if not calls:
            messages.append({"role": "assistant", "content": content})
            continue
        tool_calls: list[ChatCompletionMessageToolCallParam] = [
            {
                "id": str(c["id"]),
                "type": "function",
                "function": {"name": str(c["name"]), "arguments": _replayable_arguments(str(c["arguments"]))},
            }
            for c in calls
        ]
        messages.append({"role": "assistant", "content": content, "tool_calls": tool_calls})
        for c in calls:
            result = results.get((stored.step, str(c["id"])), {"error": "not run"})
            messages.append({"role": "tool", "tool_call_id": str(c["id"]), "content": json.dumps(result, default=str)})
    return messages
