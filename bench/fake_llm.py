"""The instant model for the end-to-end benchmark: the project's OpenAI fake, in its own process.

`tests.fakes.openai_fake.OpenAIFake` speaks the OpenAI wire protocol to the official client; here
its responder answers every chat completion at once with one `send_response` tool call, so a turn
is exactly one model step and the benchmark measures the pipeline, not a model. Its own process
keeps its work off the GIL of anything measured. (The fake keeps every request it saw: a few
MB for a benchmark's thousand or so model calls.) Prints `READY <api base>` on stdout, then serves
until SIGTERM/SIGINT.

    .venv/bin/python bench/fake_llm.py
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.openai_fake import ChatReply, OpenAIFake, ToolCall  # noqa: E402

ANSWER = (
    "Open the card, choose Checklist in the side panel, give it a name and add the items you need. "
    "You can tick them off as your team completes them."
)


def answer_at_once(body: dict[str, Any]) -> ChatReply:
    """Every request: one send_response call, no delay, small token counts."""
    return ChatReply(
        tool_calls=[ToolCall("send_response", {"message": ANSWER})], prompt_tokens=400, completion_tokens=40
    )


def main() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with OpenAIFake(responder=answer_at_once) as fake:
        sys.stdout.write(f"READY {fake.api_base}\n")
        sys.stdout.flush()
        stop.wait()


if __name__ == "__main__":
    main()
