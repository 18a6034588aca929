"""Fault injection: a steady stream of conversations while every backing process fails in turn.

The stack is the deployed one, started here in its own temporary directory on free ports:
PostgreSQL + pgvector, the Temporal dev server (persisted to a SQLite file), the tansu broker, and
the gateway, bridge and worker as `python -m workers.cli ...` subprocesses. Only the SaaS ends are
fakes: Twilio, Gmail (+ Google's OAuth token endpoint and signing certificates) and OpenAI, local
HTTP servers the official clients talk to; the model answers at once with one `send_response` that
echoes the reference carried by the customer's message.

Customers write on WhatsApp (webhooks signed with twilio's RequestValidator), through the web form,
and by email (the mail lands in a Gmail fake and Pub/Sub pushes an OIDC-signed notification to the
gateway, which reads the new mail with the official Gmail client), and each waits for the answer
before writing again. Like the providers, they retry on a 5xx, a 429 or a dropped connection with
the same MessageSid / form / push. Meanwhile, in this order:

1. kill -9 the worker, aimed at the moment Twilio has accepted a reply but not yet answered the
   worker's HTTP call (the fake holds that one response), then restart it;
2. kill -9 the bridge, then restart it;
3. restart the Temporal dev server (stop + start on the same ports and SQLite file);
4. stop and restart the broker;
5. stop and restart PostgreSQL (same data directory).

Checked at the end, once every workflow is idle: each acknowledged message is stored exactly once;
each acknowledged turn got exactly one reply (matched by its reference, so a lost reply cannot hide
behind a duplicate); no workflow failed or is stuck (no pending messages or activities, no customer
message left unanswered unless the conversation is with a human); ticket numbers are unique and
every conversation has exactly one ticket. A summary line gives messages sent, acknowledged, faults
injected, lost and duplicated; lost and duplicated must be 0.

What this cannot prove, knowingly:

- tansu keeps its log (and committed offsets) in memory, so a broker restart loses every record in
  it. Nothing here can show that records survive a broker crash; that is Apache Kafka's replicated
  log's job in production. What the broker step does show: before the stop, everything the gateway
  acknowledged had been signalled to Temporal (new webhooks are paused and we wait until the
  bridge's committed offsets reach the log end); while the broker is down the gateway answers 5xx,
  never 2xx, so providers keep the message and retry; after the restart (topics re-created with
  `core.kafka.ensure_topics`, as `crm-fte up` does) gateway, bridge and consumer group recover
  without help. An acknowledged record still in the broker when it dies would be lost here.
- A Pub/Sub notification names the mailbox, not a message: a push that gets a 2xx means every mail
  up to its historyId was published. Each customer email here gets its own push (as Gmail sends
  one per change), and "acknowledged" means that push got a 2xx.
- The kill -9 of the worker is aimed at a WhatsApp send; an email send caught mid-flight relies on
  the Gmail adapter's own Message-ID lookup, which this test does not aim at.
- The gateway process itself is not killed (it is stateless; a killed gateway answers nothing and
  the provider retries, which the other steps already exercise).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.requests import Request
from starlette.responses import Response
from temporalio.client import Client, WorkflowExecutionStatus
from twilio.request_validator import RequestValidator

from activities.guardrails import check_output, evaluate_inbound
from core.kafka import client_kwargs, ensure_topics
from core.settings import Settings
from core.temporal import connect_temporal
from crm import db
from tests.channels.gmail_support import AUDIENCE, PUSH_SERVICE_ACCOUNT, GmailOAuthFake
from tests.fakes.google_certs_fake import GoogleCertsFake, pubsub_push_envelope, pubsub_push_headers
from tests.fakes.openai_fake import ChatReply, OpenAIFake, ToolCall
from tests.fakes.twilio_fake import TwilioFake
from workers.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedTemporal, ManagedProcess, free_port
from workflows.contracts import ConversationState, conversation_workflow_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CHANNELS = ("whatsapp", "web_form", "email")
TURNS = {"whatsapp": 3, "web_form": 1, "email": 2}
SPAWN_EVERY_S = 0.9  # a new customer every 0.9 s: about 2 messages/s once conversations overlap
QUIET_BEFORE_FIRST_FAULT_S = 10.0
BETWEEN_FAULTS_S = 10.0
AFTER_LAST_FAULT_S = 12.0
BROKER_DOWN_S = 5.0
POSTGRES_DOWN_S = 5.0
DELIVERY_DEADLINE_S = 120.0  # a provider gives up on a message after this long
REPLY_TIMEOUT_S = 90.0  # a customer waits this long for an answer before giving up on the chat
QUIESCE_TIMEOUT_S = 150.0
TWILIO_FROM = "+14155550000"
REF = re.compile(r"ref-[WFE]\d+-\d+")
QUESTIONS = (
    "How do I add a checklist to a card?",
    "How do I connect Slack to my workspace?",
    "How do I rename a board?",
    "How do I invite a teammate to a project?",
    "How do I set a due date on a task?",
    "How do I export a board to CSV?",
)
REPLY = "Thanks for asking! Here is how to do it."


def answer_with_reference(body: dict[str, Any]) -> ChatReply:
    """The fake model: one send_response echoing the reference in the customer's latest message."""
    ref = "ref-none"
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            found = REF.findall(str(message.get("content") or ""))
            if found:
                ref = found[-1]
                break
    return ChatReply(tool_calls=[ToolCall("send_response", {"message": f"{REPLY} ({ref})"})])


class HoldingTwilio(TwilioFake):
    """Twilio that, when armed, accepts the next message and then holds its HTTP response.

    The message exists at Twilio (it will reach the customer) but the worker has not heard back:
    the moment a crash is most likely to turn into a second send.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arm = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held_to: str | None = None

    async def _create_message(self, request: Request) -> Response:
        response = await super()._create_message(request)
        if response.status_code == 201 and self.arm.is_set():
            self.arm.clear()  # no await since is_set(): exactly one request is held
            self.held_to = json.loads(bytes(response.body))["to"]
            self.holding.set()
            await asyncio.to_thread(self.release.wait, 120)
        return response


# ------------------------------------------------------------------------------------------ stack


class Stack:
    """Our own services and the three product processes, restartable one by one."""

    def __init__(
        self, root: Path, twilio: TwilioFake, model: OpenAIFake, gmail: GmailOAuthFake, certs: GoogleCertsFake
    ) -> None:
        self.root = root
        self.gmail = gmail
        self.certs = certs
        self.logs = root / "logs"
        self.postgres = EmbeddedPostgres(root, free_port(), self.logs, database="crm_fte_faults")
        self.temporal = EmbeddedTemporal(root, free_port(), free_port(), self.logs, headless=True)
        self.kafka = EmbeddedKafka(free_port(), self.logs)
        self.ports = {"gateway": free_port(), "worker": free_port(), "bridge": free_port()}
        self.procs: dict[str, ManagedProcess] = {}
        self.starts: Counter[str] = Counter()
        suffix = uuid.uuid4().hex[:8]
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=self.postgres.url(),
            temporal_address=self.temporal.address,
            temporal_task_queue=f"faults-{suffix}",
            kafka_bootstrap_servers=self.kafka.bootstrap_servers,
            kafka_enable_idempotence=False,
            kafka_topic_inbound=f"faults.inbound.{suffix}",
            kafka_topic_dead_letter=f"faults.dlq.{suffix}",
            kafka_topic_partitions=3,
            kafka_consumer_group=f"faults-bridge-{suffix}",
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=SecretStr(twilio.auth_token),
            twilio_whatsapp_from=TWILIO_FROM,
            twilio_api_base_url=twilio.base_url,
            public_base_url=self.base_url,
            openai_api_key=SecretStr("sk-test"),
            openai_base_url=model.api_base,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self) -> dict[str, str]:
        s = self.settings
        ours = {
            "DATABASE_URL": s.database_dsn,
            "TEMPORAL_ADDRESS": s.temporal_address,
            "TEMPORAL_TASK_QUEUE": s.temporal_task_queue,
            "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "KAFKA_TOPIC_INBOUND": s.kafka_topic_inbound,
            "KAFKA_TOPIC_DEAD_LETTER": s.kafka_topic_dead_letter,
            "KAFKA_TOPIC_PARTITIONS": str(s.kafka_topic_partitions),
            "KAFKA_CONSUMER_GROUP": s.kafka_consumer_group,
            "TWILIO_ACCOUNT_SID": s.twilio_account_sid or "",
            "TWILIO_AUTH_TOKEN": s.twilio_auth_token.get_secret_value() if s.twilio_auth_token else "",
            "TWILIO_WHATSAPP_FROM": TWILIO_FROM,
            "TWILIO_API_BASE_URL": s.twilio_api_base_url or "",
            "PUBLIC_BASE_URL": self.base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": s.openai_base_url or "",
            # Gmail: the support mailbox's OAuth client and Pub/Sub push authentication (OIDC). No
            # GMAIL_WATCH_TOPIC: the watch-renewal schedule is not under test.
            "GMAIL_USER_EMAIL": self.gmail.email_address,
            "GMAIL_CLIENT_ID": self.gmail.client_id,
            "GMAIL_CLIENT_SECRET": self.gmail.client_secret,
            "GMAIL_REFRESH_TOKEN": self.gmail.refresh_token,
            "GMAIL_TOKEN_URI": self.gmail.token_uri,
            "GMAIL_API_BASE_URL": self.gmail.base_url,
            "GMAIL_PUBSUB_AUDIENCE": AUDIENCE,
            "GMAIL_PUBSUB_SERVICE_ACCOUNT": PUSH_SERVICE_ACCOUNT,
            "GMAIL_PUBSUB_CERTS_URL": self.certs.certs_url,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.ports["gateway"]),
            "WORKER_HEALTH_PORT": str(self.ports["worker"]),
            "BRIDGE_HEALTH_PORT": str(self.ports["bridge"]),
            # Per-sender limits are not under test here; a customer retrying through an outage
            # must not be throttled into looking like a lost message.
            "RATE_LIMIT_WEB_FORM": "1000/minute",
            "RATE_LIMIT_WHATSAPP": "1000/minute",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        # Nothing from the developer's environment that Settings would read (DATABASE_URL, ...).
        setting_names = {name.upper() for name in Settings.model_fields}
        inherited = {k: v for k, v in os.environ.items() if k.upper() not in setting_names and k != "PYTHONPATH"}
        return {**inherited, **ours}

    def start_services(self) -> None:
        """Blocking (the embedded starters run their own event loops): call it in a thread."""
        self.postgres.start()
        db.upgrade(self.settings.database_dsn)
        self.temporal.start()
        self.kafka.start()

    def spawn(self, name: str) -> None:
        argv = [sys.executable, "-m", "workers.cli", name]
        proc = ManagedProcess(
            name=name, argv=argv, log_path=self.logs / f"{name}.log", env=self.env(), cwd=self.root, stop_timeout=25
        )
        proc.start()
        self.procs[name] = proc
        self.starts[name] += 1

    async def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        proc = self.procs[name]
        path = "/livez" if name == "gateway" else "/readyz"
        url = f"http://127.0.0.1:{self.ports[name]}{path}"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not proc.alive():
                    raise AssertionError(f"{name} exited with {proc.returncode()}: {proc.log_tail(8)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise AssertionError(f"{name} not ready within {timeout:.0f}s: {proc.log_tail(8)}")

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.alive(), f"{name} was already dead before the fault: {proc.log_tail(8)}"
        proc.send(signal.SIGKILL)
        assert proc.popen is not None
        proc.popen.wait(10)
        proc.stop()  # reaps and closes the log

    def close(self) -> None:
        """Stop everything we started, whatever state it is in (never raises)."""
        for name in ("gateway", "bridge", "worker"):
            proc = self.procs.get(name)
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop(15)
        for service in (self.kafka, self.temporal, self.postgres):
            with contextlib.suppress(Exception):
                service.stop()

    def log_tails(self) -> str:
        lines = []
        for name in ("gateway", "bridge", "worker", "temporal", "kafka", "postgres"):
            path = self.logs / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-6:]
                lines.append(f"--- {name}.log\n" + "\n".join(line[:400] for line in tail))
        return "\n".join(lines)


async def wait_bridge_drained(settings: Settings, timeout: float = 60.0) -> None:
    """Until the bridge's committed offsets reach the end of every inbound partition."""
    topic = settings.kafka_topic_inbound
    probe = AIOKafkaConsumer(
        **client_kwargs(settings), group_id=settings.kafka_consumer_group, enable_auto_commit=False
    )
    await probe.start()  # never subscribes, so it never joins (or rebalances) the bridge's group
    try:
        deadline = time.monotonic() + timeout
        while True:
            await probe.topics()  # refresh metadata
            tps = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
            ends = await probe.end_offsets(tps)
            lag = 0
            for tp in tps:
                lag += max(0, ends[tp] - ((await probe.committed(tp)) or 0))
            if tps and lag == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the bridge did not drain the inbound topic within {timeout:.0f}s (lag {lag})")
            await asyncio.sleep(0.3)
    finally:
        await probe.stop()


# ---------------------------------------------------------------------------------------- traffic


@dataclass
class Turn:
    ref: str
    external_id: str  # MessageSid or Gmail message id (empty for the form: the gateway names submissions)
    text: str
    attempts: int = 0
    acknowledged: bool = False
    acknowledged_at: float | None = None  # monotonic
    answered_at: float | None = None  # when the customer saw the reply
    failures: Counter[str] = field(default_factory=Counter)
    rejected: str | None = None  # a 4xx: the request itself was wrong


@dataclass
class Conversation:
    channel: str
    number: int
    key: str | None  # phone, Gmail thread id; the ticket number once the form was accepted
    email: str | None = None
    phone: str | None = None
    turns: list[Turn] = field(default_factory=list)
    stalled: bool = False
    sent_ids: list[str] = field(default_factory=list)  # RFC 822 Message-IDs of the customer's emails

    @property
    def address(self) -> str | None:
        """Where the customer sees replies: phone, email address, or the ticket page."""
        return self.phone or (self.email if self.channel == "email" else self.key)


class Traffic:
    """Customers on the three channels, and what they saw."""

    def __init__(self, stack: Stack, twilio: TwilioFake, engine: AsyncEngine) -> None:
        self.stack = stack
        self.twilio = twilio
        self.gmail = stack.gmail
        self.certs = stack.certs
        self.engine = engine
        self.rng = random.Random(7)
        self.http = httpx.AsyncClient(base_url=stack.base_url, timeout=15)
        token = stack.settings.twilio_auth_token
        assert token is not None
        self.validator = RequestValidator(token.get_secret_value())
        self.conversations: list[Conversation] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.kafka_open = asyncio.Event()
        self.kafka_open.set()
        self.inflight = 0
        self.replies: Counter[tuple[str, str, str]] = Counter()  # (channel, address, ref) -> replies seen
        self._db_replies: Counter[tuple[str, str, str]] = Counter()
        self.reply_totals: Counter[tuple[str, str]] = Counter()  # (channel, address) -> messages received
        self._db_totals: Counter[tuple[str, str]] = Counter()
        self.status_seen: Counter[str] = Counter()
        self.two_xx_while_broker_down = 0
        # Every 5xx but a 503 (an outage must be a 503 with Retry-After): (when, turn, status, body).
        self.server_errors: list[tuple[float, str, int, str]] = []
        # Every 503 that came without a Retry-After header, by turn.
        self.unavailable_without_retry_after: list[str] = []
        self.broker_down = False
        self.closing = False

    # -- the way into Kafka can be paused (only around the broker restart) ----------------------
    @contextlib.asynccontextmanager
    async def through_kafka(self) -> AsyncIterator[None]:
        while not self.kafka_open.is_set():
            await self.kafka_open.wait()
        self.inflight += 1  # no await since the check: a pause sees every request it must wait for
        try:
            yield
        finally:
            self.inflight -= 1

    async def pause_kafka_path(self, timeout: float = 30.0) -> None:
        self.kafka_open.clear()
        deadline = time.monotonic() + timeout
        while self.inflight:
            assert time.monotonic() < deadline, "webhook requests still in flight after the pause"
            await asyncio.sleep(0.05)

    def resume_kafka_path(self) -> None:
        self.kafka_open.set()

    # -- delivery with provider-style retries -------------------------------------------------
    async def deliver(
        self, turn: Turn, attempt: Callable[[], Awaitable[tuple[int, Any]]], *, produces_every_time: bool = True
    ) -> Any:
        """Retry like Twilio / Pub/Sub: same message, backoff, until 2xx, a 4xx, or the deadline.

        `produces_every_time`: a 2xx always means a fresh Kafka ack (webhook, form). Not so for a
        Gmail push, which may find its mail already published by an earlier push.
        """
        deadline = time.monotonic() + DELIVERY_DEADLINE_S
        delay = 0.25
        while time.monotonic() < deadline:
            turn.attempts += 1
            retry_after = 0.0
            try:
                async with self.through_kafka():
                    broker_down = self.broker_down and produces_every_time
                    status, payload = await attempt()
                    if status >= 500:
                        self._note_server_error(turn, status, payload)
            except Exception as exc:  # connection refused/reset, timeouts, Temporal RPC errors
                turn.failures[type(exc).__name__] += 1
                self.status_seen[type(exc).__name__] += 1
            else:
                self.status_seen[str(status)] += 1
                if 200 <= status < 300:
                    if broker_down:
                        self.two_xx_while_broker_down += 1
                    turn.acknowledged = True
                    turn.acknowledged_at = time.monotonic()
                    return payload
                if status == 429:
                    retry_after = float(payload.get("retry_after", 1)) if isinstance(payload, dict) else 1.0
                elif status < 500:
                    turn.rejected = f"{status}: {str(payload)[:300]}"
                    return None
                turn.failures[str(status)] += 1
            await asyncio.sleep(max(retry_after, delay * self.rng.uniform(0.8, 1.2)))
            delay = min(delay * 2, 3.0)
        return None

    def _note_server_error(self, turn: Turn, status: int, payload: Any) -> None:
        if status != 503:
            self.server_errors.append((time.monotonic(), turn.ref, status, str(payload)[:200]))
        elif not (isinstance(payload, dict) and payload.get("retry_after_header")):
            self.unavailable_without_retry_after.append(turn.ref)

    async def wait_reply(self, conv: Conversation, turn: Turn) -> bool:
        assert conv.address is not None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.replies[(conv.channel, conv.address, turn.ref)]:
                turn.answered_at = time.monotonic()
                return True
            await asyncio.sleep(0.2)
        return False

    # -- the customers ------------------------------------------------------------------------
    def new_conversation(self, number: int) -> Conversation:
        channel = CHANNELS[number % len(CHANNELS)]
        letter = {"whatsapp": "W", "web_form": "F", "email": "E"}[channel]
        conv = Conversation(channel=channel, number=number, key=None)
        if channel == "whatsapp":
            conv.phone = conv.key = f"+1555{uuid.uuid4().int % 10**7:07d}"
        else:
            conv.email = f"faults.{number}.{uuid.uuid4().hex[:8]}@example.com"
        for index in range(TURNS[channel]):
            ref = f"ref-{letter}{number}-{index + 1}"
            question = QUESTIONS[(number + index) % len(QUESTIONS)]
            # MessageSid; Gmail assigns its id when the mail arrives; the gateway names form submissions.
            external_id = f"SM{uuid.uuid4().hex}" if channel == "whatsapp" else ""
            conv.turns.append(Turn(ref=ref, external_id=external_id, text=f"{question} ({ref})"))
        self.conversations.append(conv)
        return conv

    async def customer(self, conv: Conversation) -> None:
        send = {"whatsapp": self._whatsapp, "web_form": self._web_form, "email": self._email}[conv.channel]
        for turn in conv.turns:
            if self.closing and turn is not conv.turns[0]:
                return  # the stream is over: customers still wait for answers, but write no more
            await send(conv, turn)
            if not turn.acknowledged:
                return  # the provider gave up (or was refused): this conversation ends here
            if not await self.wait_reply(conv, turn):
                conv.stalled = True
                return
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))  # reading the answer, typing the next one

    async def _whatsapp(self, conv: Conversation, turn: Turn) -> None:
        assert conv.phone is not None
        params = {
            "MessageSid": turn.external_id,
            "AccountSid": self.twilio.account_sid,
            "From": f"whatsapp:{conv.phone}",
            "To": f"whatsapp:{TWILIO_FROM}",
            "Body": turn.text,
            "NumMedia": "0",
            "ProfileName": "Ana",
            "WaId": conv.phone.lstrip("+"),
        }
        path = "/api/v1/webhooks/whatsapp"
        signature = self.validator.compute_signature(f"{self.stack.base_url}{path}", params)

        async def attempt() -> tuple[int, Any]:
            response = await self.http.post(path, data=params, headers={"X-Twilio-Signature": signature})
            return response.status_code, _payload(response)

        await self.deliver(turn, attempt)

    async def _web_form(self, conv: Conversation, turn: Turn) -> None:
        form = {
            "name": "Lisa Chen",
            "email": conv.email,
            "subject": "Question about boards",
            "category": "how_to",
            "message": turn.text,
        }

        async def attempt() -> tuple[int, Any]:
            response = await self.http.post("/api/v1/support/form", json=form)
            return response.status_code, _payload(response)

        accepted = await self.deliver(turn, attempt)
        if turn.acknowledged:
            conv.key = str(accepted["ticket_id"])

    async def _email(self, conv: Conversation, turn: Turn) -> None:
        """The mail arrives in the mailbox, then Pub/Sub pushes the change (redelivered until a 2xx)."""
        assert conv.email is not None
        subject = "Question about boards"
        follow_up = bool(conv.sent_ids)
        stored = self.gmail.inject_email(
            from_=f"Sam Rivera <{conv.email}>",
            subject=f"Re: {subject}" if follow_up else subject,
            text=turn.text,
            in_reply_to=conv.sent_ids[-1] if follow_up else None,
            references=" ".join(conv.sent_ids) if follow_up else None,
        )
        if follow_up:
            assert stored.thread_id == conv.key, "the fake did not thread the follow-up"
        conv.key = stored.thread_id
        conv.sent_ids.append(stored.message_id or "")
        turn.external_id = stored.id
        envelope = pubsub_push_envelope(self.gmail.email_address, self.gmail.history_id)
        headers = pubsub_push_headers(self.certs.sign_pubsub_jwt(audience=AUDIENCE, email=PUSH_SERVICE_ACCOUNT))

        async def attempt() -> tuple[int, Any]:
            response = await self.http.post("/api/v1/webhooks/gmail", json=envelope, headers=headers)
            return response.status_code, _payload(response)

        await self.deliver(turn, attempt, produces_every_time=False)

    # -- observing replies --------------------------------------------------------------------
    async def refresh_replies(self) -> None:
        """Replies seen so far: at the Twilio and Gmail fakes, and on the ticket pages (messages table)."""
        seen: Counter[tuple[str, str, str]] = Counter()
        totals: Counter[tuple[str, str]] = Counter()  # every message a customer received, with a ref or not
        for message in self.twilio.messages:
            phone = message.to.removeprefix("whatsapp:")
            totals[("whatsapp", phone)] += 1
            for ref in REF.findall(message.body):
                seen[("whatsapp", phone, ref)] += 1
        for mail in list(self.gmail.sent):
            recipient = email.utils.parseaddr(mail.to or "")[1].lower()
            totals[("email", recipient)] += 1
            for ref in set(REF.findall(mail.text or "")):
                seen[("email", recipient, ref)] += 1
        with contextlib.suppress(Exception):  # PostgreSQL may be down right now: keep the last view
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT c.channel, c.conversation_key, m.content FROM messages m "
                        "JOIN conversations c ON c.id = m.conversation_id "
                        "WHERE m.direction = 'outbound' AND m.channel = 'web_form'"
                    )
                )
                fresh: Counter[tuple[str, str, str]] = Counter()
                fresh_totals: Counter[tuple[str, str]] = Counter()
                for channel, key, content in rows:
                    fresh_totals[(channel, key)] += 1
                    for ref in REF.findall(content or ""):
                        fresh[(channel, key, ref)] += 1
                self._db_replies, self._db_totals = fresh, fresh_totals
        self.replies = seen + self._db_replies
        self.reply_totals = totals + self._db_totals

    async def watch_replies(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh_replies()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def run(self, stop: asyncio.Event) -> None:
        number = 0
        while not stop.is_set():
            conv = self.new_conversation(number)
            self.tasks.append(asyncio.create_task(self.customer(conv), name=f"customer-{number}"))
            number += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SPAWN_EVERY_S)
        self.closing = True


def _payload(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text[:200]}
    if response.status_code == 429 and isinstance(body, dict):
        body["retry_after"] = response.headers.get("retry-after", "1")
    if response.status_code == 503 and isinstance(body, dict):
        body["retry_after_header"] = response.headers.get("retry-after")
    return body


# ----------------------------------------------------------------------------------------- faults


@dataclass
class Fault:
    name: str
    started_at: float  # monotonic
    seconds: float
    note: str = ""


async def inject_faults(stack: Stack, traffic: Traffic, twilio: HoldingTwilio) -> list[Fault]:
    faults: list[Fault] = []

    async def timed(name: str, action: Callable[[], Awaitable[str]]) -> None:
        started = time.monotonic()
        note = await action()
        faults.append(Fault(name, started, time.monotonic() - started, note))
        for proc_name in ("gateway", "bridge", "worker"):
            proc = stack.procs[proc_name]
            assert proc.alive(), f"{proc_name} died during '{name}': {proc.log_tail(8)}"
        await asyncio.sleep(BETWEEN_FAULTS_S)

    async def kill_worker() -> str:
        twilio.arm.set()
        mid_send = await asyncio.to_thread(twilio.holding.wait, 30)
        stack.kill9("worker")
        twilio.arm.clear()
        twilio.release.set()
        await asyncio.sleep(1)
        stack.spawn("worker")
        await stack.wait_ready("worker")
        return f"mid-send to {twilio.held_to}" if mid_send else "no send in flight"

    async def kill_bridge() -> str:
        stack.kill9("bridge")
        await asyncio.sleep(1)
        stack.spawn("bridge")
        await stack.wait_ready("bridge")
        return ""

    async def restart_temporal() -> str:
        await asyncio.to_thread(stack.temporal.stop)
        await asyncio.to_thread(stack.temporal.start)
        return ""

    async def restart_broker() -> str:
        await traffic.pause_kafka_path()
        await wait_bridge_drained(stack.settings)  # all acknowledged records were signalled
        traffic.broker_down = True
        await asyncio.to_thread(stack.kafka.stop)
        traffic.resume_kafka_path()  # providers keep calling: the gateway must not say 2xx now
        await asyncio.sleep(BROKER_DOWN_S)
        await traffic.pause_kafka_path()
        await asyncio.to_thread(stack.kafka.start)
        await ensure_topics(stack.settings)  # tansu forgot them, as `crm-fte up` would re-create
        traffic.broker_down = False
        traffic.resume_kafka_path()
        return "in-memory broker: its log is gone after the restart"

    async def restart_postgres() -> str:
        await asyncio.to_thread(stack.postgres.stop)
        await asyncio.sleep(POSTGRES_DOWN_S)
        await asyncio.to_thread(stack.postgres.start)
        return ""

    await asyncio.sleep(QUIET_BEFORE_FIRST_FAULT_S)
    await timed("worker kill -9", kill_worker)
    await timed("bridge kill -9", kill_bridge)
    await timed("temporal restart", restart_temporal)
    await timed("broker restart", restart_broker)
    await timed("postgres restart", restart_postgres)
    return faults


# ------------------------------------------------------------------------------------------ checks


async def workflows_quiet(client: Client, queue: str) -> tuple[dict[str, ConversationState], list[str], Counter[str]]:
    """Running conversations' states, the reasons any is not idle yet, and all statuses."""
    states: dict[str, ConversationState] = {}
    busy: list[str] = []
    statuses: Counter[str] = Counter()
    running = []
    async for execution in client.list_workflows(f"TaskQueue = '{queue}' AND WorkflowType = 'ConversationWorkflow'"):
        statuses[execution.status.name if execution.status else "UNKNOWN"] += 1
        if execution.status == WorkflowExecutionStatus.RUNNING:
            running.append(execution.id)
    limit = asyncio.Semaphore(8)

    async def inspect(workflow_id: str) -> None:
        async with limit:
            handle = client.get_workflow_handle(workflow_id)
            state = await handle.query("state", result_type=ConversationState)
            described = await handle.describe()
        states[workflow_id] = state
        pending_activities = len(described.raw_description.pending_activities)
        last = state.last_messages[-1].direction if state.last_messages else None
        if state.pending_messages or pending_activities:
            busy.append(f"{workflow_id}: {state.pending_messages} messages, {pending_activities} activities pending")
        elif last == "inbound" and state.status != "escalated":
            busy.append(f"{workflow_id}: customer message without a reply (status {state.status})")

    await asyncio.gather(*(inspect(w) for w in running))
    return states, busy, statuses


async def quiesce(client: Client, queue: str) -> tuple[dict[str, ConversationState], list[str], Counter[str]]:
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    while True:
        try:
            result = await workflows_quiet(client, queue)
        except Exception as exc:  # a query can time out while a workflow task is being retried
            result = ({}, [f"inspection failed: {type(exc).__name__}: {exc}"[:300]], Counter())
        if not result[1] or time.monotonic() > deadline:
            return result
        await asyncio.sleep(2)


@dataclass
class Outcome:
    sent: int = 0
    acknowledged: int = 0
    attempts: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    escalated_turns: int = 0
    delivered_without_2xx: list[str] = field(default_factory=list)


async def account(traffic: Traffic, engine: AsyncEngine, states: dict[str, ConversationState]) -> Outcome:
    """Every acknowledged turn: exactly one inbound row and exactly one reply."""
    await traffic.refresh_replies()
    async with engine.connect() as conn:
        inbound = (
            await conn.execute(
                text(
                    "SELECT c.channel, c.conversation_key, m.external_message_id, m.content FROM messages m "
                    "JOIN conversations c ON c.id = m.conversation_id WHERE m.direction = 'inbound'"
                )
            )
        ).all()
    by_external: Counter[tuple[str, str]] = Counter((r.channel, r.external_message_id) for r in inbound)
    by_ref: dict[str, list[tuple[str, str]]] = {}
    for r in inbound:
        for ref in REF.findall(r.content or ""):
            by_ref.setdefault(ref, []).append((r.channel, r.conversation_key))

    out = Outcome()
    acknowledged_refs: set[str] = set()
    for conv in traffic.conversations:
        escalated = False
        if conv.key is not None:
            state = states.get(conversation_workflow_id(conv.channel, conv.key))
            escalated = state is not None and state.status == "escalated"
        for turn in conv.turns:
            if turn.attempts == 0:
                continue
            out.sent += 1
            out.attempts += turn.attempts
            if not turn.acknowledged:
                continue
            assert conv.key is not None
            out.acknowledged += 1
            acknowledged_refs.add(turn.ref)
            if conv.channel == "web_form":  # the gateway names the submission; the ticket is ours
                stored = sum(1 for where in by_ref.get(turn.ref, []) if where == ("web_form", conv.key))
            else:
                stored = by_external[(conv.channel, turn.external_id)]
            assert conv.address is not None
            replies = traffic.replies[(conv.channel, conv.address, turn.ref)]
            where = f"{conv.channel} {conv.key} {turn.ref}"
            if stored == 0:
                out.lost.append(f"{where}: acknowledged but never stored")
            elif stored > 1:
                out.duplicated.append(f"{where}: stored {stored} times")
            if replies > 1:
                out.duplicated.append(f"{where}: {replies} replies")
            elif replies == 0 and escalated:
                out.escalated_turns += 1
            elif replies == 0:
                out.lost.append(f"{where}: no reply")
        if conv.address is not None and not escalated:
            received = traffic.reply_totals[(conv.channel, conv.address)]
            referenced = sum(traffic.replies[(conv.channel, conv.address, t.ref)] for t in conv.turns)
            if received > referenced:  # a message that answers no turn (a stray template, a resend)
                out.duplicated.append(f"{conv.channel} {conv.address}: {received - referenced} unexpected messages")
    for ref, places in by_ref.items():
        if ref not in acknowledged_refs:
            out.delivered_without_2xx.append(f"{ref} stored in {places} though no attempt got a 2xx")
    return out


def timeline(traffic: Traffic, faults: list[Fault], t0: float) -> tuple[str, list[str]]:
    """Reply latency figures, and where the slowest answers sit relative to the faults."""
    waits = sorted(
        (t.answered_at - t.acknowledged_at, conv, t)
        for conv in traffic.conversations
        for t in conv.turns
        if t.acknowledged_at is not None and t.answered_at is not None
    )
    figures = "reply latency n/a"
    if waits:
        values = [w for w, _, _ in waits]
        p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
        figures = f"reply latency p50 {p50:.1f}s p99 {p99:.1f}s max {values[-1]:.1f}s"
    notes = [f"fault at +{f.started_at - t0:.0f}s: {f.name} ({f.seconds:.1f}s)" for f in faults]
    buckets: dict[int, list[float]] = {}
    for wait, _, turn in waits:
        assert turn.acknowledged_at is not None
        buckets.setdefault(int((turn.acknowledged_at - t0) // 10) * 10, []).append(wait)
    notes.append(
        "slowest reply by acknowledgement time: "
        + " ".join(f"+{start}s:{max(values):.0f}s" for start, values in sorted(buckets.items()))
    )
    for wait, conv, turn in waits[-5:]:
        assert turn.acknowledged_at is not None
        notes.append(
            f"slow reply: {conv.channel} {conv.key} {turn.ref} acknowledged at +{turn.acknowledged_at - t0:.0f}s, "
            f"answered after {wait:.1f}s"
        )
    for conv in traffic.conversations:
        for turn in conv.turns:
            if turn.acknowledged_at is not None and turn.answered_at is None:
                notes.append(
                    f"unanswered in time: {conv.channel} {conv.key} {turn.ref} "
                    f"acknowledged at +{turn.acknowledged_at - t0:.0f}s"
                )
    return figures, notes


# -------------------------------------------------------------------------------------------- test


def test_the_chosen_messages_are_answered_by_the_ai_not_escalated() -> None:
    """The stream below assumes every message is answered; guardrails must agree."""
    for question in QUESTIONS:
        for channel in CHANNELS:
            decision = evaluate_inbound(f"{question} (ref-W12-3)", channel)
            assert decision.action == "answer", (question, channel, decision)
    assert check_output(f"{REPLY} (ref-W12-3)", kb_passages=[]).allowed


async def test_nothing_acknowledged_is_lost_or_answered_twice_while_every_service_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="crm-fte-faults-"))
    passed = False
    with (
        HoldingTwilio() as twilio,
        OpenAIFake(responder=answer_with_reference) as model,
        GmailOAuthFake() as gmail,
        GoogleCertsFake() as certs,
    ):
        stack = Stack(root, twilio, model, gmail, certs)
        engine: AsyncEngine | None = None
        traffic: Traffic | None = None
        background: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(stack.start_services)
            await ensure_topics(stack.settings)
            for name in ("worker", "bridge", "gateway"):
                stack.spawn(name)
            for name in ("worker", "bridge", "gateway"):
                await stack.wait_ready(name)
            engine = create_async_engine(stack.settings.database_dsn, pool_pre_ping=True, pool_size=4)
            client = await connect_temporal(stack.settings)
            traffic = Traffic(stack, twilio, engine)
            # The first push stores the mailbox's baseline (what `renew_gmail_watch` does in production).
            baseline = await traffic.http.post(
                "/api/v1/webhooks/gmail",
                json=pubsub_push_envelope(gmail.email_address, gmail.history_id),
                headers=pubsub_push_headers(certs.sign_pubsub_jwt(audience=AUDIENCE, email=PUSH_SERVICE_ACCOUNT)),
            )
            assert baseline.status_code == 204, baseline.text

            stop_spawning, stop_watching = asyncio.Event(), asyncio.Event()
            watcher = asyncio.create_task(traffic.watch_replies(stop_watching))
            spawner = asyncio.create_task(traffic.run(stop_spawning))
            background += [watcher, spawner]
            traffic_started = time.monotonic()
            try:
                faults = await inject_faults(stack, traffic, twilio)
                await asyncio.sleep(AFTER_LAST_FAULT_S)
            finally:
                stop_spawning.set()
                await spawner
            # Every customer either got every answer or gave up after REPLY_TIMEOUT_S.
            await asyncio.wait_for(asyncio.gather(*traffic.tasks), DELIVERY_DEADLINE_S + REPLY_TIMEOUT_S + 30)
            traffic_seconds = time.monotonic() - traffic_started
            drain_started = time.monotonic()
            states, busy, statuses = await quiesce(client, stack.settings.temporal_task_queue)
            drain_seconds = time.monotonic() - drain_started
            stop_watching.set()
            await watcher
            outcome = await account(traffic, engine, states)

            async with engine.connect() as conn:
                repeated_numbers = (
                    await conn.execute(
                        text("SELECT ticket_number, count(*) FROM tickets GROUP BY 1 HAVING count(*) > 1")
                    )
                ).all()
                tickets_per_conversation = {
                    (r.channel, r.conversation_key): r.tickets
                    for r in await conn.execute(
                        text(
                            "SELECT c.channel, c.conversation_key, count(t.id) AS tickets FROM conversations c "
                            "LEFT JOIN tickets t ON t.conversation_id = c.id GROUP BY c.id"
                        )
                    )
                }

            latency, notes = timeline(traffic, faults, traffic_started)
            summary = (
                f"fault injection: messages sent={outcome.sent} acknowledged={outcome.acknowledged} "
                f"faults injected={len(faults)} lost={len(outcome.lost)} duplicated={len(outcome.duplicated)} | "
                f"attempts={outcome.attempts} conversations={len(traffic.conversations)} "
                f"stalled={sum(c.stalled for c in traffic.conversations)} escalated turns={outcome.escalated_turns} "
                f"stored without a 2xx={len(outcome.delivered_without_2xx)} "
                f"responses={dict(sorted(traffic.status_seen.items()))} workflows={dict(statuses)} {latency} | "
                + "; ".join(f"{f.name} {f.seconds:.1f}s{f' ({f.note})' if f.note else ''}" for f in faults)
                + f" | startup {traffic_started - started:.0f}s, traffic {traffic_seconds:.0f}s, "
                f"drain {drain_seconds:.0f}s, total before teardown {time.monotonic() - started:.0f}s"
            )
            server_errors = [
                f"{ref} HTTP {status} at +{at - traffic_started:.1f}s"
                + "".join(f" during {f.name}" for f in faults if f.started_at - 1 <= at <= f.started_at + f.seconds + 1)
                + f": {body}"
                for at, ref, status, body in traffic.server_errors
            ]
            with capsys.disabled():
                print(f"\n{summary}")
                for line in notes + outcome.delivered_without_2xx[:10] + server_errors[:10]:
                    print(f"  {line}")

            rejected = [
                f"{c.channel} {t.ref}: {t.rejected}" for c in traffic.conversations for t in c.turns if t.rejected
            ]
            assert not rejected, f"requests refused with a 4xx: {rejected[:10]}"
            assert traffic.two_xx_while_broker_down == 0, "the gateway acknowledged messages with the broker down"
            # An outage is a 503 with Retry-After (providers retry), never a 500.
            assert not server_errors, f"5xx other than 503: {server_errors[:10]}"
            assert not traffic.unavailable_without_retry_after, (
                f"503 without Retry-After: {traffic.unavailable_without_retry_after[:10]}"
            )
            assert not outcome.lost, f"lost: {outcome.lost[:20]}"
            assert not outcome.duplicated, f"duplicated: {outcome.duplicated[:20]}"
            assert outcome.acknowledged >= 0.9 * outcome.sent, "most messages should get through eventually"
            assert not busy, f"stuck workflows: {busy[:20]}"
            bad = {k: v for k, v in statuses.items() if k not in ("RUNNING", "COMPLETED", "CONTINUED_AS_NEW")}
            assert not bad, f"workflows that failed or were terminated: {bad}"
            assert not repeated_numbers, f"ticket numbers used twice: {repeated_numbers}"
            for conv in traffic.conversations:
                if conv.key is not None and any(t.acknowledged for t in conv.turns):
                    assert tickets_per_conversation.get((conv.channel, conv.key)) == 1, (
                        f"{conv.channel} {conv.key}: {tickets_per_conversation.get((conv.channel, conv.key))} tickets"
                    )
            for name, expected in (("gateway", 1), ("bridge", 2), ("worker", 2)):
                proc = stack.procs[name]
                assert proc.alive() and stack.starts[name] == expected, f"{name}: {proc.log_tail(8)}"
            passed = True
        finally:
            twilio.release.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if traffic is not None:
                for task in traffic.tasks:
                    task.cancel()
                await asyncio.gather(*traffic.tasks, return_exceptions=True)
                await traffic.http.aclose()
            if engine is not None:
                await engine.dispose()
            await asyncio.to_thread(stack.close)
            if passed:
                shutil.rmtree(root, ignore_errors=True)
            else:
                with capsys.disabled():
                    print(f"\nfault-injection logs kept in {root}\n{stack.log_tails()}")
