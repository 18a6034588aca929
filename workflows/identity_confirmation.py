"""IdentityConfirmationWorkflow: send one link that confirms a claimed email address or phone number.

A customer on the web ticket page asks to link the ticket to the email or WhatsApp number they
typed (a claim). The gateway starts this workflow under an id derived from the claim, so a double
click starts nothing new while a send is under way; the workflow runs one activity that records the
request (the token's hash, once per run) and sends the link through the support mailbox or
WhatsApp. Opening the link and pressing Confirm (`POST /verify/{token}`) verifies the claim.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field

    from core.vocabulary import IdentifierType
    from workflows.activity_refs import declared_only
    from workflows.contracts import ErrorType

IDENTITY_CONFIRMATION_WORKFLOW = "IdentityConfirmationWorkflow"
SEND_IDENTITY_CONFIRMATION_ACTIVITY = "send_identity_confirmation"

# One provider call (Gmail or Twilio) and two small writes.
SEND_TIMEOUT = timedelta(seconds=30)
# Provider outages and 429s retry with backoff for up to an hour: a link that arrives late is still
# useful, one that never arrives is not. A refusal (bad address, channel not configured) fails at
# once. The activity itself makes a retry safe (it never sends the same request twice).
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,
    non_retryable_error_types=[ErrorType.SEND_REJECTED],
)
SEND_SCHEDULE_TO_CLOSE = timedelta(hours=1)
WORKFLOW_TIMEOUT = timedelta(hours=2)


class IdentityConfirmationInput(BaseModel):
    """Which claim of which customer to confirm, and the ticket the request came from."""

    customer_id: str = Field(min_length=1)
    ticket_number: str = Field(min_length=1)
    identifier_type: IdentifierType
    identifier_value: str = Field(min_length=1)


class SendIdentityConfirmationInput(BaseModel):
    request: IdentityConfirmationInput
    # The workflow run: the activity records one request (one token) per key, however often retried.
    request_key: str = Field(min_length=1)


class IdentityConfirmationSent(BaseModel):
    confirmation_id: str
    # The provider's status ("queued", "sent", "not_configured"), or "uncertain": an earlier attempt
    # died while handing the link to the provider, and sending again might send it twice.
    delivery_status: str
    provider_message_id: str | None = None


def identity_confirmation_workflow_id(*, customer_id: str, identifier_type: IdentifierType, value: str) -> str:
    """One workflow id per claim (the value hashed: no address or number in Temporal's visibility)."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:24]
    return f"identity-confirmation-{customer_id}-{identifier_type}-{digest}"


@activity.defn(name=SEND_IDENTITY_CONFIRMATION_ACTIVITY)
async def send_identity_confirmation(inp: SendIdentityConfirmationInput) -> IdentityConfirmationSent:
    """Record the confirmation request and send its link to the claimed email or phone (at most once)."""
    declared_only(SEND_IDENTITY_CONFIRMATION_ACTIVITY)


@workflow.defn(name=IDENTITY_CONFIRMATION_WORKFLOW)
class IdentityConfirmationWorkflow:
    """Send one confirmation link for a claimed identifier."""

    @workflow.run
    async def run(self, inp: IdentityConfirmationInput) -> IdentityConfirmationSent:
        info = workflow.info()
        result = await workflow.execute_activity(
            send_identity_confirmation,
            SendIdentityConfirmationInput(request=inp, request_key=f"{info.workflow_id}/{info.run_id}"),
            start_to_close_timeout=SEND_TIMEOUT,
            schedule_to_close_timeout=SEND_SCHEDULE_TO_CLOSE,
            retry_policy=SEND_RETRY,
        )
        workflow.logger.info("identity confirmation for ticket %s: %s", inp.ticket_number, result.delivery_status)
        return result
