"""Human agents: API keys, the escalation queue, cross-channel history and resolving escalations.

`schemas` (the API's models), `auth` (API keys and the FastAPI dependencies that check them),
`service` (queue, history, resolution through the workflow update, audit) and `endpoints` (the
router); `customers`, `customer_service` and `customer_schemas` are the customer records' router,
service and models (merge with a preview, unmerge, GDPR export and erasure); `workspace`,
`workspace_service` and `workspace_schemas` are the team's internal notes and saved replies. The gateway app,
the ticket page and the `crm-fte agents` / `crm-fte escalations` commands import from here.
"""

from crm.repositories.api_keys import ApiKeyInfo
from gateway.agents.auth import (
    SCOPE_READ,
    SCOPE_WRITE,
    SCOPES,
    AnyAgent,
    HumanAgent,
    InvalidCredentials,
    OptionalAgent,
    ReadingAgent,
    WritingAgent,
    authenticate,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from gateway.agents.endpoints import router
from gateway.agents.service import conversation_history, open_escalations, resolve_escalation

__all__ = [
    "SCOPES",
    "SCOPE_READ",
    "SCOPE_WRITE",
    "AnyAgent",
    "ApiKeyInfo",
    "HumanAgent",
    "InvalidCredentials",
    "OptionalAgent",
    "ReadingAgent",
    "WritingAgent",
    "authenticate",
    "conversation_history",
    "create_api_key",
    "list_api_keys",
    "open_escalations",
    "resolve_escalation",
    "revoke_api_key",
    "router",
]
