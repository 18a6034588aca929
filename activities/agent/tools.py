"""The tools the model may call, as OpenAI function schemas; their word lists come from the vocabulary."""

from __future__ import annotations

import json
from typing import Any, Final, TypedDict

from openai.types.chat import ChatCompletionToolParam

from core.vocabulary import MODEL_ESCALATION_REASONS, PRIORITIES, TICKET_CATEGORIES


class ModelToolCall(TypedDict):
    """One tool call as the model made it (stored in agent_steps, replayed to the model next step)."""

    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it: it may not parse


# `escalate_to_human` accepts `agent_requested` too: it is what any reason outside the list becomes.
_ESCALATION_REASONS = [*MODEL_ESCALATION_REASONS, "agent_requested"]

TOOLS: Final[list[ChatCompletionToolParam]] = [
    {
        "type": "function",
        "function": {
            "name": "search_knowledge_base",
            "description": (
                "Search TechCorp's help centre. Returns whole article sections, each with its title, section "
                "and link. Use before answering any product question; search again with other words if nothing fits."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": (
                            "What to look for, in English (the help centre is written in English): the customer's "
                            "question restated in a few words, with the product's own terms where you know them, "
                            "not the whole message."
                        ),
                    }
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "description": "Set the category and priority of this conversation's support ticket.",
            "parameters": {
                "type": "object",
                "properties": {
                    "category": {"type": "string", "enum": list(TICKET_CATEGORIES)},
                    "priority": {"type": "string", "enum": list(PRIORITIES)},
                },
                "required": ["category"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_customer_history",
            "description": "The customer's earlier conversations on every channel (email, WhatsApp, web form).",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "escalate_to_human",
            "description": "Hand the conversation to a human agent when you cannot or must not answer.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "enum": _ESCALATION_REASONS},
                    "priority": {"type": "string", "enum": list(PRIORITIES)},
                    "note": {"type": "string", "description": "A short note for the human agent."},
                },
                "required": ["reason"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_response",
            "description": (
                "Send your reply to the customer on their channel: the answer (with the link of the section you "
                "used), or one clarifying question when the request is ambiguous."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "The reply body, in the customer's language."}
                },
                "required": ["message"],
            },
        },
    },
]
TOOL_NAMES: Final[frozenset[str]] = frozenset(t["function"]["name"] for t in TOOLS if t["type"] == "function")

_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    t["function"]["name"]: dict(t["function"].get("parameters", {})) for t in TOOLS if t["type"] == "function"
}


def argument_problem(name: str, arguments: str) -> str | None:
    """Why a tool call cannot run as written (unknown tool, arguments not a JSON object, a required field
    missing or not text); None when it can.

    Enum words are not checked here: the tools map a word outside their list to a safe default.
    """
    schema = _SCHEMAS.get(name)
    if schema is None:
        return f"there is no tool named {name!r}; the tools are {', '.join(sorted(TOOL_NAMES))}"
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(parsed, dict):
        return "the arguments must be a JSON object"
    properties: dict[str, Any] = schema.get("properties", {})
    for field in schema.get("required", []):
        if field not in parsed:
            return f"the required field {field!r} is missing"
    for field, value in parsed.items():
        if properties.get(field, {}).get("type") == "string" and not isinstance(value, str):
            return f"the field {field!r} must be a string"
    return None
