"""`crm-fte mcp` driven by the official MCP client, over stdio and streamable HTTP, against a real gateway.

The gateway runs under uvicorn on the session's PostgreSQL and Temporal; escalations come from real
ConversationWorkflows (a pricing question escalates) on a real worker. `crm-fte mcp` is spawned as
the console script an assistant would start, with the agent's key in CRM_FTE_AGENT_KEY, so what is
checked is the whole path: MCP client → MCP server → gateway (auth, scopes, validation, audit) →
CRM and workflow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from gateway.agents import SCOPE_READ
from tests.gateway.test_agents_api import audit_rows, escalate, new_key
from tests.gateway_server import ThreadedGateway
from workers.embedded import free_port

CRM_FTE = str(Path(sys.executable).parent / "crm-fte")
TOOLS = {"who_am_i", "escalation_queue", "conversation_history", "kb_search", "claim", "reply", "resolve"}


@pytest.fixture(scope="module")
def gateway_url(settings: Settings) -> Iterator[str]:
    gateway = ThreadedGateway(settings, free_port())
    gateway.start()
    try:
        yield gateway.url
    finally:
        gateway.stop()


def server_env(key: str | None) -> dict[str, str]:
    """The environment an assistant gives `crm-fte mcp`: its own, without a stack or a key unless given."""
    env = {k: v for k, v in os.environ.items() if k not in {"CRM_FTE_AGENT_KEY", "CRM_FTE_GATEWAY_URL"}}
    return env | ({"CRM_FTE_AGENT_KEY": key} if key is not None else {})


@asynccontextmanager
async def stdio_session(gateway_url: str, key: str, tmp_path: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=CRM_FTE, args=["mcp", "--api-url", gateway_url], env=server_env(key), cwd=str(tmp_path)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def result_json(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


# ----------------------------------------------------------------------------- fail closed


def test_without_a_key_the_server_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    for key, why in ((None, "CRM_FTE_AGENT_KEY is not set"), ("not-a-key", "not an agent API key")):
        done = subprocess.run(
            [CRM_FTE, "mcp", "--api-url", "http://127.0.0.1:9"],
            env=server_env(key),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stdout == "", "stdout belongs to the protocol"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], done.stderr
        assert "not-a-key" not in done.stderr, "the key's value is never echoed"


def test_without_a_gateway_it_refuses_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [CRM_FTE, "--data-dir", str(tmp_path), "mcp"],
        env=server_env("crmfte_0123456789ab_" + "x" * 43),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--api-url or CRM_FTE_GATEWAY_URL" in done.stderr


# ----------------------------------------------------------------------------- stdio


async def test_stdio_reads_and_resolves_through_the_gateway_with_its_audit(
    gateway_url: str,
    worker: Worker,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    ticket = await escalate(client, settings, sessions)
    name, key = await new_key(sessions)
    reader_name, reader_key = await new_key(sessions, scopes=(SCOPE_READ,))

    async with stdio_session(gateway_url, key, tmp_path) as mcp:
        tools = (await mcp.list_tools()).tools
        assert {t.name for t in tools} == TOOLS
        assert all(t.description for t in tools)

        assert result_json(await mcp.call_tool("who_am_i", {}))["name"] == name

        queue = result_json(await mcp.call_tool("escalation_queue", {"ticket": ticket, "channel": ["web_form"]}))
        [item] = [i for i in queue["escalations"] if i["ticket_id"] == ticket]
        assert item["reason"] and item["priority"] and queue["counts"]["total"] >= 1

        history = result_json(await mcp.call_tool("conversation_history", {"conversation_id": item["conversation_id"]}))
        assert history["conversation_id"] == item["conversation_id"]
        messages = [m for c in history["conversations"] for m in c["messages"]]
        assert any("Pro plan" in m["content"] for m in messages if m["direction"] == "inbound")

        found = result_json(await mcp.call_tool("kb_search", {"query": "reset my password", "limit": 3}))
        assert 1 <= len(found["hits"]) <= 3
        assert all("/help/" in h["url"] and h["content"] and h["title"] for h in found["hits"])

        bad = await mcp.call_tool("conversation_history", {"conversation_id": "../escalations"})
        assert bad.is_error and "Traceback" not in text_of(bad)

    async with stdio_session(gateway_url, reader_key, tmp_path) as reader:
        refused = await reader.call_tool(
            "resolve", {"ticket_id": ticket, "reply": "From a read-only key.", "action": "close"}
        )
        assert refused.is_error
        assert "HTTP 403" in text_of(refused) and "escalations:write" in text_of(refused)
        assert "Traceback" not in text_of(refused)

    reply = "Our sales team will send you a quote for 40 seats today."
    async with stdio_session(gateway_url, key, tmp_path) as mcp:
        outcome = result_json(
            await mcp.call_tool("resolve", {"ticket_id": ticket, "reply": reply, "action": "resume_ai"})
        )
        assert outcome["ticket_id"] == ticket and outcome["resolved_by"] == name
        assert outcome["delivery_status"] == "delivered"
        again = await mcp.call_tool("resolve", {"ticket_id": ticket, "reply": "Twice?", "action": "close"})
        assert again.is_error and "HTTP 409 conflict" in text_of(again)

    audit = await audit_rows(sessions, ticket)
    assert [(a["action"], a["agent_name"], (a["detail"] or {}).get("outcome")) for a in audit] == [
        ("conversation.viewed", name, None),
        ("escalation.resolve", name, "completed"),
        ("escalation.resolve", name, "refused"),
    ], "the MCP server's actions are the agent's, audited by the gateway as the console's are"
    assert {a["key_name"] for a in audit} == {name}, f"nothing recorded for the read-only key {reader_name}"
    assert audit[1]["detail"]["reply"] == reply and audit[1]["detail"]["via"] == "api"


# ----------------------------------------------------------------------------- streamable HTTP


@asynccontextmanager
async def http_server(gateway_url: str, key: str, tmp_path: Path) -> AsyncIterator[str]:
    """`crm-fte mcp --transport http` on a free loopback port; yields its MCP endpoint once it answers."""
    port = free_port()
    log_path = tmp_path / "mcp-http.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            CRM_FTE,
            *("mcp", "--transport", "http", "--port", str(port), "--api-url", gateway_url),
            env=server_env(key),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                assert process.returncode is None, log_path.read_text()
                try:
                    await probe.get(url, timeout=1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_streamable_http_serves_the_same_tools_and_surfaces_gateway_refusals(
    gateway_url: str, sessions: async_sessionmaker[AsyncSession], kb_ingested: None, tmp_path: Path
) -> None:
    _, reader_key = await new_key(sessions, scopes=(SCOPE_READ,))
    async with (
        http_server(gateway_url, reader_key, tmp_path) as url,
        streamable_http_client(url) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        queue = result_json(await mcp.call_tool("escalation_queue", {"limit": 5, "priority": ["urgent", "high"]}))
        assert {"escalations", "counts"} <= set(queue) and len(queue["escalations"]) <= 5
        found = result_json(await mcp.call_tool("kb_search", {"query": "export my data to CSV"}))
        assert found["hits"] and found["query"] == "export my data to CSV"

        refused = await mcp.call_tool("resolve", {"ticket_id": "TKT-0001", "reply": "hi", "action": "close"})
        assert refused.is_error and "HTTP 403" in text_of(refused)
        invalid = await mcp.call_tool("escalation_queue", {"priority": ["whenever"]})
        assert invalid.is_error and "Traceback" not in text_of(invalid)


# ----------------------------------------------------------------------------- claim and reply


async def test_claim_and_reply_act_as_the_agent_and_a_held_conversation_names_its_holder(
    gateway_url: str,
    worker: Worker,
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    ticket = await escalate(client, settings, sessions)
    name, key = await new_key(sessions)
    other_name, other_key = await new_key(sessions)
    async with stdio_session(gateway_url, key, tmp_path) as mcp:
        queue = result_json(await mcp.call_tool("escalation_queue", {"ticket": ticket}))
        [item] = [i for i in queue["escalations"] if i["ticket_id"] == ticket]
        conversation = item["conversation_id"]
        claimed = result_json(await mcp.call_tool("claim", {"conversation_id": conversation}))
        assert claimed["assignee"] == name and claimed["done"] is True
        text = "I am looking into your quote and will write again within the hour."
        sent = result_json(await mcp.call_tool("reply", {"conversation_id": conversation, "reply": text}))
        assert sent["assignee"] == name and sent["reply_message_ids"]
        assert sent["delivery_status"] == "delivered"  # what the web channel records for a reply

    async with stdio_session(gateway_url, other_key, tmp_path) as other:
        held = await other.call_tool("claim", {"conversation_id": conversation})
        assert held.is_error and "HTTP 409 conflict" in text_of(held)
        assert f"held by {name}" in text_of(held), "the refusal names the current holder"

    audit = await audit_rows(sessions, ticket)
    assert [(a["action"], a["agent_name"], a["detail"]["outcome"]) for a in audit] == [
        ("conversation.claim", name, "completed"),
        ("conversation.reply", name, "completed"),
        ("conversation.claim", other_name, "refused"),
    ]
    assert [a["key_name"] for a in audit] == [name, name, other_name]
    assert audit[1]["detail"]["reply"] == text


# ----------------------------------------------------------------------------- which gateway


def test_the_gateway_is_the_api_url_then_the_environment_then_the_running_stack(tmp_path: Path) -> None:
    from workers.stack import GATEWAY_URL_VARIABLE, StackError, resolve_gateway_url

    env = {GATEWAY_URL_VARIABLE: "http://10.0.0.5:8800/"}
    assert resolve_gateway_url(tmp_path, explicit="https://fte.example/", environ=env).url == "https://fte.example"
    assert resolve_gateway_url(tmp_path, environ=env).url == "http://10.0.0.5:8800"
    with pytest.raises(StackError, match="no stack is running"):
        resolve_gateway_url(tmp_path, environ={})
    with pytest.raises(StackError, match="CRM_FTE_GATEWAY_URL must be an http"):
        resolve_gateway_url(tmp_path, environ={GATEWAY_URL_VARIABLE: "127.0.0.1:8000"})
