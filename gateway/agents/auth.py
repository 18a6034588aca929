"""API keys for human agents: issuing, revoking, authenticating, and the FastAPI dependencies.

Keys look like ``crmfte_<prefix>_<secret>``: the prefix finds the row, only the SHA-256 of the
secret is stored, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from core.logging import get_logger
from crm.db import transaction
from crm.repositories import api_keys
from crm.repositories.api_keys import ApiKeyInfo
from gateway.deps import ResourcesDep

log = get_logger(__name__)

KEY_SCHEME = "crmfte"
SCOPE_READ = "escalations:read"
SCOPE_WRITE = "escalations:write"
SCOPES: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE)
# last_used_at is a hint for operators, not an audit: one write a minute per key is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_KEY_SHAPE = re.compile(rf"^{KEY_SCHEME}_(?P<prefix>[0-9a-f]{{12}})_(?P<secret>[A-Za-z0-9_-]{{16,128}})$")
# Compared against when no key has the given prefix, so both paths cost one hash and one compare.
_NO_SUCH_KEY = "0" * 64
_NAME_MAX = 100


class InvalidCredentials(Unauthorized):
    """401 with the challenge a bearer-token client expects."""

    headers = {"WWW-Authenticate": f'Bearer realm="{KEY_SCHEME}"'}


@dataclass(frozen=True)
class HumanAgent:
    """The person behind an API key; `name` signs their replies and their audit rows."""

    key_id: uuid.UUID
    name: str
    scopes: frozenset[str]


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A fresh key as (prefix, secret, full key); the full key is shown once and never stored."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{KEY_SCHEME}_{prefix}_{secret}"


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes, sorted and deduplicated; BadRequest for one this API does not know."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise BadRequest(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return sorted(set(scopes))


async def create_api_key(session: AsyncSession, *, name: str, scopes: Sequence[str] = SCOPES) -> tuple[ApiKeyInfo, str]:
    """Store a new key for `name` (hash only) and return it with the full key, to show once."""
    name = " ".join(name.split())
    if not 1 <= len(name) <= _NAME_MAX:
        raise BadRequest(f"the name must be 1 to {_NAME_MAX} characters")
    granted = check_scopes(scopes)
    if await api_keys.has_active_key(session, name=name):
        raise Conflict(f"{name!r} already has an active API key; revoke it first")
    prefix, secret, key = new_api_key()
    info = await api_keys.insert_api_key(
        session, name=name, key_prefix=prefix, key_hash=hash_secret(secret), scopes=granted
    )
    await api_keys.record_human_action(
        session, agent_name=name, api_key_id=info.id, action="api_key.created", detail={"scopes": granted}
    )
    log.info("agents.key_created", agent=name, key_prefix=prefix, scopes=granted)
    return info, key


async def list_api_keys(session: AsyncSession) -> list[ApiKeyInfo]:
    """Every key, active ones first, with when it was last used."""
    return await api_keys.list_api_keys(session)


async def revoke_api_key(session: AsyncSession, *, name: str) -> ApiKeyInfo:
    """Revoke the active key of `name`; it stops working on the next request."""
    info = await api_keys.revoke_active_key(session, name=" ".join(name.split()))
    if info is None:
        raise NotFound(f"no active API key named {name!r}")
    await api_keys.record_human_action(session, agent_name=info.name, api_key_id=info.id, action="api_key.revoked")
    log.info("agents.key_revoked", agent=info.name, key_prefix=info.key_prefix)
    return info


async def authenticate(session: AsyncSession, key: str) -> HumanAgent:
    """The agent a full key belongs to; InvalidCredentials for a malformed, unknown or revoked key."""
    shape = _KEY_SHAPE.match(key.strip())
    prefix, secret = (shape["prefix"], shape["secret"]) if shape else ("", key)
    stored = await api_keys.find_by_prefix(session, key_prefix=prefix) if shape else None
    matches = hmac.compare_digest(hash_secret(secret), stored.key_hash if stored is not None else _NO_SUCH_KEY)
    if stored is None or not matches:
        raise InvalidCredentials("invalid API key")
    if stored.revoked_at is not None:
        raise InvalidCredentials("this API key was revoked")
    await api_keys.touch_last_used(session, key_id=stored.id, resolution=LAST_USED_RESOLUTION)
    return HumanAgent(key_id=stored.id, name=stored.name, scopes=frozenset(stored.scopes))


# ----------------------------------------------------------------------------- FastAPI dependencies


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidCredentials("the Authorization header must be 'Bearer <API key>'")
    return token.strip()


async def _agent_from_request(request: Request, resources: ResourcesDep) -> HumanAgent | None:
    token = _bearer(request)
    if token is None:
        return None
    async with transaction(resources.sessions) as session:
        return await authenticate(session, token)


async def current_agent(request: Request, resources: ResourcesDep) -> HumanAgent:
    """Any valid, unrevoked key (401 otherwise, with a WWW-Authenticate challenge)."""
    agent = await _agent_from_request(request, resources)
    if agent is None:
        raise InvalidCredentials("an API key is required: send 'Authorization: Bearer <API key>'")
    return agent


def require_scope(scope: str) -> Any:
    """A dependency that admits a valid key holding `scope` (403 when the key lacks it)."""

    async def dependency(agent: Annotated[HumanAgent, Depends(current_agent)]) -> HumanAgent:
        if scope not in agent.scopes:
            raise Forbidden(f"this API key lacks the {scope} scope", detail={"required_scope": scope})
        return agent

    return dependency


async def optional_agent(request: Request, resources: ResourcesDep) -> HumanAgent | None:
    """For endpoints customers also use: None without a key; a key must be valid and may read escalations."""
    agent = await _agent_from_request(request, resources)
    if agent is not None and SCOPE_READ not in agent.scopes:
        raise Forbidden(f"this API key lacks the {SCOPE_READ} scope", detail={"required_scope": SCOPE_READ})
    return agent


AnyAgent = Annotated[HumanAgent, Depends(current_agent)]
ReadingAgent = Annotated[HumanAgent, Depends(require_scope(SCOPE_READ))]
WritingAgent = Annotated[HumanAgent, Depends(require_scope(SCOPE_WRITE))]
OptionalAgent = Annotated[HumanAgent | None, Depends(optional_agent)]
