"""`crm-fte mcp`: the human-agent API as an MCP server, for the team's own assistants.

The server is a thin, typed client of the gateway's agent HTTP API, not a second way into the CRM:
every tool is one request with the agent's API key, so who may do what (the key and its scopes),
what is valid, and what lands in the `human_actions` audit trail are exactly the gateway's, as for
the console. The key comes from CRM_FTE_AGENT_KEY only (argv is visible to every local user in
`ps`), is sent only in the Authorization header, and is never logged or echoed.

A gateway error (4xx/5xx) becomes an MCP tool error carrying the gateway's own message and detail,
so the assistant reads "this conversation is held by Sam" rather than a traceback.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field, SecretStr

from core.logging import get_logger
from core.version import VERSION
from core.vocabulary import Channel, EscalationReason, Priority, ResolutionAction
from workflows.contracts import MAX_TEXT_CHARS

log = get_logger(__name__)

KEY_VARIABLE = "CRM_FTE_AGENT_KEY"
KEY_SCHEME_PREFIX = "crmfte_"
Transport = Literal["stdio", "http"]
# The streamable-HTTP endpoint's path, the SDK's and most clients' default.
HTTP_PATH = "/mcp"
# A resolution or a reply waits for the channel's answer (the gateway waits up to 30 s for it).
REQUEST_TIMEOUT_S = 60.0
# How much of an unexpected (non-JSON) error body an assistant is shown.
_ERROR_TEXT_CHARS = 500

ConversationId = Annotated[uuid.UUID, Field(description="The conversation's id (from escalation_queue)")]
TicketId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9-]{1,32}$", description="The ticket number, e.g. TKT-0042 (from escalation_queue)")
]
ReplyText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_CHARS, description="What the customer receives, signed with your name"),
]


class KeyProblem(ValueError):
    """CRM_FTE_AGENT_KEY is missing or cannot be an agent key; the message never contains the value."""


def agent_key_from(environ: dict[str, str] | Any) -> SecretStr:
    """The agent's API key from the environment, refused (KeyProblem) when absent or malformed: fail closed."""
    raw = (environ.get(KEY_VARIABLE) or "").strip()
    if not raw:
        raise KeyProblem(f"{KEY_VARIABLE} is not set: create a key with `crm-fte agents create NAME` and export it")
    if not raw.startswith(KEY_SCHEME_PREFIX) or any(c.isspace() or not c.isprintable() for c in raw):
        raise KeyProblem(f"{KEY_VARIABLE} is not an agent API key ({KEY_SCHEME_PREFIX}…)")
    return SecretStr(raw)


def check_http_host(host: str) -> None:
    """Refuse (ValueError) a non-loopback address: whoever reaches the port acts with the agent's key."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"--host {host} is not a loopback address: anyone who reaches it would act with the agent's key; "
            "serve on 127.0.0.1 (or ::1) and let each person run their own"
        )


def gateway_error_text(response: httpx.Response) -> str:
    """The gateway's own words for a refusal: `HTTP 409 conflict: <message> (<detail>)`."""
    prefix = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:_ERROR_TEXT_CHARS]
        return f"{prefix}: {text or response.reason_phrase}"
    if not isinstance(body, dict):
        return f"{prefix}: {str(body)[:_ERROR_TEXT_CHARS]}"
    code, message, detail = body.get("error"), body.get("message"), body.get("detail")
    words = f"{prefix} {code}" if isinstance(code, str) else prefix
    parts = [p for p in (message if isinstance(message, str) else None, _detail_text(detail)) if p]
    text = " — ".join(dict.fromkeys(parts))
    return f"{words}: {text}" if text else words


def _detail_text(detail: Any) -> str | None:
    """A gateway `detail` as one line: field errors as `field: message`, a mapping as `key: value`."""
    if detail is None or detail == "":
        return None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        items = [
            f"{d.get('field')}: {d.get('message')}" if isinstance(d, dict) and "field" in d else str(d) for d in detail
        ]
        return "; ".join(items)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {v}" for k, v in detail.items())
    return str(detail)


@dataclass(frozen=True)
class AgentApi:
    """The gateway's agent API with one agent's key: each call one request, errors as ToolError."""

    base_url: str
    key: SecretStr
    timeout: float = REQUEST_TIMEOUT_S

    def _client(self) -> httpx.AsyncClient:
        headers = {
            "Authorization": f"Bearer {self.key.get_secret_value()}",
            "User-Agent": f"crm-fte-mcp/{VERSION}",
            "Accept": "application/json",
        }
        # A client per call: a tool call is rare next to its HTTP cost, and nothing outlives the loop.
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout)

    async def get(self, path: str, params: Sequence[tuple[str, str | int]] = ()) -> dict[str, Any]:
        """GET `path` (query parameters may repeat) and return the JSON object the gateway answered."""
        return await self._request("GET", path, params=list(params))

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST `body` as JSON to `path` and return the JSON object the gateway answered."""
        return await self._request("POST", path, json=body if body is not None else {})

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The exception's text may carry the URL, never the key; its type says enough.
            raise ToolError(f"cannot reach the gateway at {self.base_url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            log.info("mcp.gateway_refused", method=method, path=path, status=response.status_code)
            raise ToolError(gateway_error_text(response))
        try:
            body = response.json()
        except ValueError:
            raise ToolError(f"the gateway answered HTTP {response.status_code} without JSON") from None
        if not isinstance(body, dict):
            raise ToolError(f"the gateway answered HTTP {response.status_code} with JSON that is not an object")
        return body


def _queue_params(
    *,
    limit: int,
    breached: bool | None,
    channel: Sequence[str],
    reason: Sequence[str],
    priority: Sequence[str],
    ticket: str | None,
) -> list[tuple[str, str | int]]:
    """The query string GET /api/v1/escalations takes: each filter repeated per value."""
    params: list[tuple[str, str | int]] = [("limit", limit)]
    if breached is not None:
        params.append(("breached", "true" if breached else "false"))
    params += [("channel", c) for c in channel] + [("reason", r) for r in reason] + [("priority", p) for p in priority]
    if ticket:
        params.append(("ticket", ticket))
    return params


_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_ACT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)

INSTRUCTIONS = (
    "Tools for a human support agent of the CRM Digital FTE: the queue of conversations the AI handed "
    "to a person, a customer's history on every channel, the product help centre, and acting on a "
    "conversation (claim, reply, resolve). Everything runs as the person whose API key this server holds, "
    "with their permissions, and every action is recorded in the team's audit trail under their name. "
    "Replies reach real customers: show the person the text and get their approval before reply or resolve."
)


def build_server(api: AgentApi) -> MCPServer:
    """The MCP server with one tool per agent-API operation, each a request to `api`."""
    server: MCPServer = MCPServer("crm-fte", version=VERSION, instructions=INSTRUCTIONS)

    @server.tool(annotations=_READ)
    async def who_am_i() -> dict[str, Any]:
        """Whose API key this server uses and its scopes (escalations:read to look, escalations:write to act)."""
        return await api.get("/api/v1/agents/me")

    @server.tool(annotations=_READ)
    async def escalation_queue(
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many")] = 100,
        breached: Annotated[
            bool | None, Field(description="true: only those past their SLA due time; false: only those within it")
        ] = None,
        channel: Annotated[list[Channel] | None, Field(description="Only these channels")] = None,
        reason: Annotated[list[EscalationReason] | None, Field(description="Only these escalation reasons")] = None,
        priority: Annotated[list[Priority] | None, Field(description="Only these priorities")] = None,
        ticket: Annotated[
            str | None,
            Field(pattern=r"^[A-Za-z0-9-]{0,32}$", description="Part of a ticket number, e.g. 0042 or TKT-0042"),
        ] = None,
    ) -> dict[str, Any]:
        """Open escalations waiting for a person, most urgent first, then SLA due soonest, then oldest.

        Each item has the ticket, conversation id, reason, priority, SLA due time, `overdue`, channel,
        customer and their latest message; `counts` totals everything the filters match.
        """
        params = _queue_params(
            limit=limit,
            breached=breached,
            channel=channel or (),
            reason=reason or (),
            priority=priority or (),
            ticket=ticket,
        )
        return await api.get("/api/v1/escalations", params)

    @server.tool(annotations=_READ)
    async def conversation_history(conversation_id: ConversationId) -> dict[str, Any]:
        """The customer's whole history on every channel for this conversation: messages with delivery
        status, tickets, escalations, the knowledge-base articles the AI used, and the team's internal
        notes. Opening it is recorded in the audit trail, as in the console."""
        return await api.get(f"/api/v1/conversations/{conversation_id}")

    @server.tool(annotations=_READ)
    async def kb_search(
        query: Annotated[str, Field(min_length=1, max_length=500, description="What to look up, in words")],
        limit: Annotated[int, Field(ge=1, le=20, description="At most this many sections")] = 5,
    ) -> dict[str, Any]:
        """Search the product help centre as the AI does: whole sections with the help-centre link to cite."""
        return await api.get("/api/v1/kb/search", [("q", query), ("limit", limit)])

    @server.tool(annotations=_ACT)
    async def claim(conversation_id: ConversationId) -> dict[str, Any]:
        """Take the conversation as yours, so teammates see who answers it; refused (with the current
        holder's name) when someone else holds it."""
        return await api.post(f"/api/v1/conversations/{conversation_id}/claim")

    @server.tool(annotations=_ACT)
    async def reply(conversation_id: ConversationId, reply: ReplyText) -> dict[str, Any]:
        """Send the customer a message on their channel while you own the conversation (replying to one
        that waits for a person claims it), without ending the hand-off; returns its delivery status.
        The customer receives it: confirm the text with the person first."""
        return await api.post(f"/api/v1/conversations/{conversation_id}/replies", {"reply": reply})

    @server.tool(annotations=_ACT)
    async def resolve(
        ticket_id: TicketId,
        reply: ReplyText,
        action: Annotated[
            ResolutionAction,
            Field(description="resume_ai: hand the conversation back to the AI; close: close the conversation"),
        ],
    ) -> dict[str, Any]:
        """Answer the escalated ticket's customer and end the hand-off: the reply is sent on the customer's
        channel and its `delivery_status` returned. Refused when the ticket was already resolved. The
        customer receives it: confirm the text and the action with the person first."""
        return await api.post(f"/api/v1/escalations/{ticket_id}/resolve", {"reply": reply, "action": action})

    return server


async def serve_http(server: MCPServer, *, host: str, port: int) -> None:
    """Streamable HTTP at http://HOST:PORT/mcp under uvicorn, with this process's logging (not uvicorn's)."""
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    await uvicorn.Server(config).serve()


def run(*, api: AgentApi, transport: Transport, host: str, port: int) -> None:
    """Serve until the client closes stdin (stdio) or the process is stopped (http)."""
    import anyio

    server = build_server(api)
    log.info("mcp.started", transport=transport, gateway=api.base_url)
    if transport == "stdio":
        anyio.run(server.run_stdio_async)
    else:
        anyio.run(lambda: serve_http(server, host=host, port=port))
