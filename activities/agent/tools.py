"""The tools the model may call, as OpenAI function schemas; their word lists come from the vocabulary."""

from __future__ import annotations

from typing import Final, TypedDict

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
            "description": "Search TechCorp's product documentation. Use before answering any product question.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look for."}},
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
            "description": "Send the final answer to the customer on their channel.",
            "parameters": {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The answer body."}},
                "required": ["message"],
            },
        },
    },
]
TOOL_NAMES: Final[frozenset[str]] = frozenset(t["function"]["name"] for t in TOOLS if t["type"] == "function")
