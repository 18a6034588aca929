"""A local, scriptable stand-in for the OpenAI REST API.

Point the official client at it with::

    from openai import AsyncOpenAI
    client = AsyncOpenAI(api_key="test", base_url=fake.base_url + "/v1", max_retries=0)
    # or fake.api_base  (== fake.base_url + "/v1")

Endpoints (wire format of api.openai.com):

* ``POST /v1/chat/completions`` - JSON or SSE (``stream: true``) responses.  Each request
  pops the next scripted item from a FIFO queue: a :class:`ChatReply` (assistant text
  and/or tool calls, usage, optional delay) or a :class:`ChatError` (HTTP 4xx/5xx with
  OpenAI's ``{"error": {message, type, param, code}}`` body and headers such as
  ``retry-after``).  When the queue is empty the ``responder`` hook (request JSON ->
  ``ChatReply | ChatError | dict``) answers; without one the fake echoes the last
  user message.
* ``POST /v1/embeddings`` - deterministic feature-hashed unit vectors (texts sharing
  words get a positive cosine similarity), ``float`` or ``base64`` encoding, optional
  ``dimensions``.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

Like the real API, requests are validated: missing ``model``/``messages``, and ``tool``
messages that do not answer the preceding assistant ``tool_calls`` (or unanswered tool
calls) get a 400 ``invalid_request_error`` (disable with ``strict=False``).  With
``compat_checks=True`` it also rejects what some OpenAI-compatible servers reject: an assistant
message with ``content: null`` (llama.cpp) and replayed tool-call arguments that are not JSON
(vLLM parses them).  Every request body is recorded (``chat_requests``, ``embedding_requests``,
``requests``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import math
import re
import secrets
import string
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._server import FakeServer

__all__ = [
    "ChatError",
    "ChatReply",
    "OpenAIFake",
    "ToolCall",
    "fake_embedding",
]

DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_ALNUM = string.ascii_letters + string.digits


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def estimate_tokens(value: Any) -> int:
    """Crude deterministic token count (~4 characters per token) of any JSON-able value."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return max(1, math.ceil(len(text) / 4)) if text else 0


# ---------------------------------------------------------------------------- script items
@dataclass
class ToolCall:
    """One function call the fake model makes; ``arguments`` may be a dict or a raw JSON string
    (a string that does not parse is how a real model's malformed call looks on the wire).

    The ``compat_*`` switches reproduce what OpenAI-compatible servers send: llama.cpp has sent
    calls with an empty id, some servers leave out ``type`` or the id, and some send the arguments
    as a JSON object instead of JSON text.
    """

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    compat_id: str | None = None  # sent verbatim as the id ("" for an empty one)
    compat_omit_id: bool = False
    compat_omit_type: bool = False
    compat_arguments_as_object: bool = False

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_wire(self) -> dict[str, Any]:
        arguments: Any = self.arguments_json()
        if self.compat_arguments_as_object and isinstance(self.arguments, dict):
            arguments = self.arguments
        wire: dict[str, Any] = {
            "id": self.compat_id if self.compat_id is not None else self.id or _random_id("call_"),
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
        }
        if self.compat_omit_id:
            del wire["id"]
        if self.compat_omit_type:
            del wire["type"]
        return wire


@dataclass
class ChatReply:
    """A scripted successful completion."""

    content: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None  # default: "tool_calls" if tool_calls else "stop"
    prompt_tokens: int | None = None  # default: estimated from the request
    completion_tokens: int | None = None  # default: estimated from the reply
    model: str | None = None  # default: the requested model
    refusal: str | None = None
    delay: float = 0.0  # seconds to wait before answering (to exercise client timeouts)
    headers: dict[str, str] = field(default_factory=dict)
    omit_usage: bool = False  # some OpenAI-compatible servers send no `usage`


@dataclass
class ChatError:
    """A scripted HTTP error in OpenAI's error shape."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, message: str | None = None) -> ChatError:
        return cls(
            status=429,
            message=message
            or (
                "Rate limit reached for gpt-4o-mini in organization org-fake on tokens per min (TPM): "
                f"Limit 200000, Used 199990, Requested 1200. Please try again in {retry_after:g}s."
            ),
            type="tokens",
            code="rate_limit_exceeded",
            headers={
                "retry-after": f"{retry_after:g}",
                "retry-after-ms": str(int(retry_after * 1000)),
                "x-ratelimit-limit-tokens": "200000",
                "x-ratelimit-remaining-tokens": "10",
                "x-ratelimit-reset-tokens": f"{retry_after:g}s",
            },
        )

    @classmethod
    def insufficient_quota(cls) -> ChatError:
        return cls(
            status=429,
            message="You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
        )

    @classmethod
    def server_error(cls, status: int = 500, message: str | None = None) -> ChatError:
        return cls(
            status=status,
            message=message or "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )

    @classmethod
    def bad_request(
        cls, message: str = "Invalid request.", param: str | None = None, code: str | None = None
    ) -> ChatError:
        return cls(status=400, message=message, type="invalid_request_error", param=param, code=code)

    @classmethod
    def context_length_exceeded(cls, limit: int = 128000, requested: int = 130000) -> ChatError:
        return cls.bad_request(
            message=(
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {requested} tokens. Please reduce the length of the messages."
            ),
            param="messages",
            code="context_length_exceeded",
        )

    @classmethod
    def unauthorized(cls, message: str = "Incorrect API key provided.") -> ChatError:
        return cls(status=401, message=message, type="invalid_request_error", code="invalid_api_key")


Responder = Callable[[dict[str, Any]], "ChatReply | ChatError | dict[str, Any]"]


# ---------------------------------------------------------------------------- embeddings
_WORD = re.compile(r"\w+", re.UNICODE)


def fake_embedding(text: str, dimensions: int = 1536) -> list[float]:
    """Deterministic unit vector: signed feature hashing of the lower-cased words of ``text``.

    Identical texts give identical vectors; texts sharing words have positive cosine
    similarity, unrelated texts are near-orthogonal.
    """
    if dimensions <= 0:
        raise ValueError("dimensions must be positive")
    vector = [0.0] * dimensions
    tokens = _WORD.findall(text.lower()) or [text]
    for token in tokens:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=16).digest()
        for offset in (0, 8):
            index = int.from_bytes(digest[offset : offset + 4], "little") % dimensions
            sign = 1.0 if digest[offset + 4] & 1 else -1.0
            vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # all features cancelled out: fall back to one hashed axis
        vector[int.from_bytes(hashlib.blake2b(text.encode()).digest()[:4], "little") % dimensions] = 1.0
        norm = 1.0
    return [v / norm for v in vector]


def _encode_base64_floats(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# Default answers to structured-output requests (response_format json_schema), by schema name: the
# project's inbound classifier reads every message the rules let through before the agent step, so a
# test that scripts the agent's replies gets a benign classification without scripting it (and the
# classifier path runs in every model-path test). `push_classification` scripts a different one.
DEFAULT_STRUCTURED: dict[str, dict[str, Any]] = {
    "inbound_classification": {"reason": "none", "confidence": 0.9, "language": "en"},
}


# ---------------------------------------------------------------------------- the fake
class OpenAIFake(FakeServer):
    def __init__(
        self,
        *,
        tls: bool = False,
        api_key: str | None = None,
        models: Iterable[str] = DEFAULT_MODELS,
        reject_unknown_models: bool = False,
        strict: bool = True,
        compat_checks: bool = False,
        responder: Responder | None = None,
        default_embedding_dimensions: int = 1536,
        structured_defaults: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(tls=tls)
        self.api_key = api_key  # None: any bearer token is accepted (but one is required)
        self.models = list(models)
        self.reject_unknown_models = reject_unknown_models
        self.strict = strict
        self.compat_checks = compat_checks
        self.responder = responder
        self.default_embedding_dimensions = default_embedding_dimensions
        self._script: collections.deque[ChatReply | ChatError] = collections.deque()
        # Structured-output requests are answered from their own queue, then by schema-name defaults,
        # so they never consume the replies scripted for the agent's tool loop.
        self._structured_script: collections.deque[ChatReply | ChatError] = collections.deque()
        self.structured_defaults = dict(DEFAULT_STRUCTURED if structured_defaults is None else structured_defaults)
        self._embedding_errors: collections.deque[ChatError] = collections.deque()
        self._lock = threading.Lock()
        self.chat_requests: list[dict[str, Any]] = []
        self.chat_responses: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []

    @property
    def api_base(self) -> str:
        """Value for ``OpenAI(base_url=...)``."""
        return self.base_url + "/v1"

    # ------------------------------------------------------------------ scripting
    def push(self, *items: ChatReply | ChatError) -> None:
        with self._lock:
            self._script.extend(items)

    def push_reply(self, content: str, **kwargs: Any) -> None:
        self.push(ChatReply(content=content, **kwargs))

    def push_tool_call(self, name: str, arguments: dict[str, Any] | str | None = None, **kwargs: Any) -> None:
        self.push(ChatReply(tool_calls=[ToolCall(name, arguments if arguments is not None else {})], **kwargs))

    def push_tool_calls(self, calls: Sequence[ToolCall | tuple[str, dict[str, Any]]], **kwargs: Any) -> None:
        normalized = [c if isinstance(c, ToolCall) else ToolCall(c[0], c[1]) for c in calls]
        self.push(ChatReply(tool_calls=normalized, **kwargs))

    def push_error(self, error: ChatError) -> None:
        self.push(error)

    def push_refusal(self, refusal: str = "I'm sorry, but I can't help with that.", **kwargs: Any) -> None:
        """The model declines: ``message.refusal`` set, no content, no tool call."""
        self.push(ChatReply(refusal=refusal, **kwargs))

    def push_malformed_tool_call(self, name: str, raw_arguments: str = '{"query": "export', **kwargs: Any) -> None:
        """A tool call whose arguments are not valid JSON (a model cut off or confused mid-call)."""
        self.push(ChatReply(tool_calls=[ToolCall(name, raw_arguments)], **kwargs))

    # ---- guardrails: the inbound classifier (issue 14; activities/guardrails/classifier.py) ----
    def push_classification(
        self, reason: str, confidence: float, language: str, *, prompt_tokens: int = 150, completion_tokens: int = 12
    ) -> None:
        """Script the classifier's structured-output answer: the JSON object its schema asks for."""
        content = json.dumps({"reason": reason, "confidence": confidence, "language": language})
        with self._lock:
            self._structured_script.append(
                ChatReply(content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            )

    def push_structured_reply(self, content: str) -> None:
        """The next structured-output request gets `content` as it is (e.g. JSON outside the schema)."""
        with self._lock:
            self._structured_script.append(ChatReply(content=content))

    def push_structured_error(self, error: ChatError) -> None:
        """The next structured-output request (e.g. the classifier) fails with `error`."""
        with self._lock:
            self._structured_script.append(error)

    # ---- end of the guardrails section ----

    def push_rate_limit(self, retry_after: float = 1.0) -> None:
        self.push(ChatError.rate_limit(retry_after))

    def push_embeddings_error(self, error: ChatError) -> None:
        with self._lock:
            self._embedding_errors.append(error)

    @property
    def pending(self) -> int:
        """Scripted chat items not consumed yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._structured_script.clear()
            self._embedding_errors.clear()
            self.chat_requests.clear()
            self.chat_responses.clear()
            self.embedding_requests.clear()
        self.responder = None
        self.clear_requests()

    @property
    def last_chat_request(self) -> dict[str, Any]:
        with self._lock:
            if not self.chat_requests:
                raise LookupError("no chat completion request received")
            return self.chat_requests[-1]

    # ------------------------------------------------------------------ app
    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self._get_model, methods=["GET"]),
            ]
        )

    def _error_response(self, error: ChatError) -> JSONResponse:
        headers = {"x-request-id": _random_id("req_", 32), **error.headers}
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    def _check_auth(self, request: Request) -> ChatError | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return ChatError.unauthorized(
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        key = auth[7:].strip()
        if self.api_key is not None and key != self.api_key:
            return ChatError.unauthorized(
                f"Incorrect API key provided: {key[:3]}***. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        return None

    async def _read_json(self, request: Request) -> dict[str, Any] | ChatError:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return ChatError.bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)"
            )
        if not isinstance(body, dict):
            return ChatError.bad_request("The request body must be a JSON object.")
        return body

    def _check_model(self, body: dict[str, Any]) -> ChatError | None:
        model = body.get("model")
        if not model:
            return ChatError.bad_request("you must provide a model parameter")
        if self.reject_unknown_models and model not in self.models:
            return ChatError(
                status=404,
                message=f"The model `{model}` does not exist or you do not have access to it.",
                type="invalid_request_error",
                code="model_not_found",
            )
        return None

    # ------------------------------------------------------------------ chat completions
    def _validate_messages(self, body: dict[str, Any]) -> ChatError | None:
        messages = body.get("messages")
        if messages is None:
            return ChatError.bad_request(
                "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        if not isinstance(messages, list) or not messages:
            return ChatError.bad_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                "empty array instead.",
                param="messages",
                code="empty_array",
            )
        if not self.strict:
            return None
        pending: list[str] = []  # tool_call ids of the last assistant message still unanswered
        pending_index = -1
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in {"system", "developer", "user", "assistant", "tool", "function"}:
                return ChatError.bad_request(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                    "'function', 'tool', and 'developer'.",
                    param=f"messages[{index}].role",
                    code="invalid_value",
                )
            if role == "tool":
                call_id = message.get("tool_call_id")
                if call_id not in pending:
                    return ChatError.bad_request(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                        "message with 'tool_calls'.",
                        param=f"messages.[{index}].role",
                    )
                pending.remove(call_id)
                continue
            if pending:
                return ChatError.bad_request(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding "
                    "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    + ", ".join(pending),
                    param=f"messages.[{pending_index}].role",
                )
            if role == "assistant" and self.compat_checks:
                compat_error = self._compat_error(message, index)
                if compat_error:
                    return compat_error
            if role == "assistant" and message.get("tool_calls"):
                pending = [call.get("id") for call in message["tool_calls"]]
                pending_index = index
        if pending:
            return ChatError.bad_request(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(pending),
                param=f"messages.[{pending_index}].role",
            )
        return None

    @staticmethod
    def _compat_error(message: dict[str, Any], index: int) -> ChatError | None:
        if message.get("content", None) is None:
            return ChatError.bad_request(
                "Expected 'content' to be a string or an array", param=f"messages.[{index}].content"
            )
        for call in message.get("tool_calls") or []:
            try:
                json.loads((call.get("function") or {}).get("arguments", ""))
            except (TypeError, ValueError):
                return ChatError.bad_request(
                    "tool call arguments are not valid JSON", param=f"messages.[{index}].tool_calls"
                )
        return None

    def _next_item(self, body: dict[str, Any]) -> ChatReply | ChatError | dict[str, Any]:
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            name = str((response_format.get("json_schema") or {}).get("name", ""))
            with self._lock:
                if self._structured_script:
                    return self._structured_script.popleft()
            if name in self.structured_defaults:
                return ChatReply(
                    content=json.dumps(self.structured_defaults[name]), prompt_tokens=120, completion_tokens=10
                )
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return ChatReply(content=f"(fake) {self._last_user_text(body)}")

    @staticmethod
    def _last_user_text(body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return ""

    def _completion_json(self, body: dict[str, Any], reply: ChatReply) -> dict[str, Any]:
        tool_calls = [call.to_wire() for call in reply.tool_calls]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "refusal": reply.refusal,
            "annotations": [],
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else estimate_tokens(body.get("messages")) + (estimate_tokens(body["tools"]) if body.get("tools") else 0)
        )
        completion_tokens = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else estimate_tokens(reply.content or "") + sum(estimate_tokens(c["function"]) for c in tool_calls)
        )
        completion: dict[str, Any] = {
            "id": _random_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason or ("tool_calls" if tool_calls else "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }
        if reply.omit_usage:
            del completion["usage"]
        return completion

    @staticmethod
    def _chunks(text: str, size: int) -> Iterator[str]:
        for start in range(0, len(text), size):
            yield text[start : start + size]

    def _stream_events(self, completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
        choice = completion["choices"][0]
        message = choice["message"]
        base = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "service_tier": completion["service_tier"],
            "system_fingerprint": completion["system_fingerprint"],
        }

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}\n\n".encode()

        yield event({"role": "assistant", "content": "", "refusal": None})
        for piece in self._chunks(message.get("content") or "", 8):
            yield event({"content": piece})
        for index, call in enumerate(message.get("tool_calls") or []):
            yield event(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.get("id"),
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for piece in self._chunks(call["function"]["arguments"], 10):
                yield event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield event({}, choice["finish_reason"])
        if include_usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': completion.get('usage')})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _chat_completions(self, request: Request) -> Response:
        auth_error = self._check_auth(request)
        if auth_error:
            return self._error_response(auth_error)
        body = await self._read_json(request)
        if isinstance(body, ChatError):
            return self._error_response(body)
        with self._lock:
            self.chat_requests.append(body)
        validation_error = self._check_model(body) or self._validate_messages(body)
        if validation_error:
            return self._error_response(validation_error)

        item = self._next_item(body)
        if isinstance(item, dict):  # a full response body supplied by the responder
            with self._lock:
                self.chat_responses.append(item)
            return JSONResponse(item, headers={"x-request-id": _random_id("req_", 32)})
        if item.delay:
            await asyncio.sleep(item.delay)
        if isinstance(item, ChatError):
            return self._error_response(item)

        completion = self._completion_json(body, item)
        with self._lock:
            self.chat_responses.append(completion)
        headers = {
            "x-request-id": _random_id("req_", 32),
            "openai-processing-ms": "12",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            **item.headers,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._stream_events(completion, include_usage), media_type="text/event-stream", headers=headers
            )
        return JSONResponse(completion, headers=headers)

    # ------------------------------------------------------------------ embeddings
    async def _embeddings(self, request: Request) -> Response:
        auth_error = self._check_auth(request)
        if auth_error:
            return self._error_response(auth_error)
        body = await self._read_json(request)
        if isinstance(body, ChatError):
            return self._error_response(body)
        with self._lock:
            self.embedding_requests.append(body)
            scripted = self._embedding_errors.popleft() if self._embedding_errors else None
        error = self._check_model(body)
        if error:
            return self._error_response(error)
        if scripted is not None:
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            return self._error_response(scripted)

        model = body["model"]
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            texts = [raw_input]
        elif isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input):
            texts = [" ".join(str(x) for x in raw_input)]  # a single pre-tokenized input
        elif isinstance(raw_input, list) and raw_input:
            texts = [x if isinstance(x, str) else " ".join(str(t) for t in x) for x in raw_input]
        else:
            return self._error_response(
                ChatError.bad_request(
                    "'$.input' is invalid. Please check the API reference: "
                    "https://platform.openai.com/docs/api-reference.",
                    param="input",
                )
            )
        if any(text == "" for text in texts):
            return self._error_response(
                ChatError.bad_request(
                    "'$.input' is invalid. Please check the API reference: "
                    "https://platform.openai.com/docs/api-reference.",
                    param="input",
                )
            )
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if model == "text-embedding-ada-002":
                return self._error_response(
                    ChatError.bad_request("This model does not support specifying dimensions.", param="dimensions")
                )
            if not isinstance(dimensions, int) or dimensions < 1:
                return self._error_response(
                    ChatError.bad_request(
                        f"Invalid value for 'dimensions' = {dimensions}. Must be a positive integer.",
                        param="dimensions",
                    )
                )
        else:
            dimensions = EMBEDDING_DIMENSIONS.get(model, self.default_embedding_dimensions)
        encoding = body.get("encoding_format") or "float"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _encode_base64_floats(vector) if encoding == "base64" else vector,
                }
            )
        tokens = sum(estimate_tokens(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={"x-request-id": _random_id("req_", 32)},
        )

    # ------------------------------------------------------------------ models
    @staticmethod
    def _model_json(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}

    async def _list_models(self, request: Request) -> Response:
        auth_error = self._check_auth(request)
        if auth_error:
            return self._error_response(auth_error)
        return JSONResponse({"object": "list", "data": [self._model_json(m) for m in self.models]})

    async def _get_model(self, request: Request) -> Response:
        auth_error = self._check_auth(request)
        if auth_error:
            return self._error_response(auth_error)
        model = request.path_params["model"]
        if model not in self.models:
            return self._error_response(
                ChatError(
                    status=404,
                    message=f"The model '{model}' does not exist",
                    type="invalid_request_error",
                    param="model",
                    code="model_not_found",
                )
            )
        return JSONResponse(self._model_json(model))
