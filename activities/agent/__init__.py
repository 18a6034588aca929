"""The AI agent: the prompt, the tool schemas, one model step per activity, and the offline responder.

The model call is one activity per step; each tool call it makes runs as its own activity.
Without OPENAI_API_KEY an offline responder answers from the knowledge base through the same
tool-call protocol, and says nothing it cannot ground.
"""

from __future__ import annotations

from activities.agent.offline import compose_grounded_answer
from activities.agent.prompt import CHANNEL_TONE, SYSTEM_PROMPT, system_prompt
from activities.agent.step import AgentActivities
from activities.agent.tools import TOOL_NAMES, TOOLS

__all__ = [
    "CHANNEL_TONE",
    "SYSTEM_PROMPT",
    "TOOLS",
    "TOOL_NAMES",
    "AgentActivities",
    "compose_grounded_answer",
    "system_prompt",
]
