"""Benchmark 2, end-to-end turn: signed WhatsApp webhook in → reply handed to (fake) Twilio.

The whole pipeline runs as it is deployed, one process each: `crm-fte gateway`, `crm-fte bridge`,
`crm-fte worker` (`python -m workers.cli ...`), on real PostgreSQL, the Temporal dev server and
the tansu Kafka broker (all started in a temporary directory). Only the SaaS ends are fakes, each
in its own process: Twilio (bench/fake_twilio.py, reports every create-message call with its
arrival time) and the model (bench/fake_llm.py, the project's OpenAI fake answering every call
at once with one `send_response` tool call).

A round drives N concurrent conversations (distinct phone numbers), each sending M messages one
after another (the next once the reply to the previous one reached the fake Twilio). A turn's
latency runs from the gateway's 200 (webhook accepted, the record is in Kafka) to the moment the
fake Twilio received the reply. Sustained turns/s = answered turns ÷ (last reply - first send).
Peak RSS of gateway, bridge and worker: sampled with psutil, and the kernel's VmHWM.

Side by side, alternating with the real rounds, two "Temporal floors" (bench/temporal_floor.py):
a trivial workflow per conversation that, per signal, runs as many no-op activities as a real turn
runs — read from the real conversations' histories (ActivityTaskScheduled and local-activity
markers per turn) — on the same Temporal server, driven the same way (signal-with-start per
message, N conversations x M turns). The *mirrored* floor runs each no-op as the real one runs
(local where ours is local); the *regular* floor runs them all as regular activities, the floor as
the benchmark's brief words it ("the same number of no-op activities"). Reported: our turns/s ÷
each floor's.

    .venv/bin/python bench/e2e_turn.py --json bench/results/e2e_turn.json
    .venv/bin/python bench/e2e_turn.py --conversations 200 --messages 3 --rounds 2 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from common import (
    PUBLIC_BASE_URL,
    REPO_ROOT,
    RESULTS_DIR,
    WHATSAPP_FROM,
    WHATSAPP_PATH,
    Children,
    CpuMeter,
    ForeignLoad,
    RssSampler,
    Services,
    child_env,
    code_state,
    http_ok,
    interrupts_as_keyboard_interrupt,
    machine,
    peak_rss_bytes,
    percentile,
    py_spy_path,
    run_and_report,
    top_frames,
    wait_quiet,
)
from temporal_floor import FLOOR_WORKFLOW, TURN_SIGNAL, FloorInput, FloorTurn

from workers.embedded import ManagedProcess, free_port

QUESTIONS = (
    "Hi! How do I add a checklist to a card?",
    "Thanks. Can I also set a due date on each checklist item?",
    "Great, and how do I get a reminder before that due date?",
    "One more: can I copy the checklist to another card?",
    "Does the checklist show up in the mobile app too?",
)
APP_PROCESSES = ("worker", "bridge", "gateway")


# ------------------------------------------------------------------------------------- replies


class ReplyBoard:
    """Futures waiting for a reply, resolved from the fake processes' stdout reader threads."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.unexpected = 0

    def expect(self, key: str) -> asyncio.Future[dict[str, Any]]:
        assert self.loop is not None
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.waiting[key] = future
        return future

    def forget(self, key: str) -> None:
        self.waiting.pop(key, None)

    def line_handler(self, key_of: Callable[[dict[str, Any]], str]) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            if not line.startswith("{") or self.loop is None:
                return
            event = json.loads(line)
            self.loop.call_soon_threadsafe(self._deliver, key_of(event), event)

        return on_line

    def _deliver(self, key: str, event: dict[str, Any]) -> None:
        future = self.waiting.pop(key, None)
        if future is None or future.done():
            self.unexpected += 1
            return
        future.set_result(event)


@dataclass
class TurnRecord:
    conversation: str
    turn: int
    sent: float
    accepted: float | None = None
    accepted_wall: float | None = None
    replied: float | None = None
    replied_wall: float | None = None
    error: str | None = None

    @property
    def latency(self) -> float | None:
        if self.accepted is None or self.replied is None:
            return None
        return self.replied - self.accepted


@dataclass
class RoundResult:
    kind: str
    number: int
    turns: list[TurnRecord] = field(default_factory=list)
    foreign_cpus: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        done = [t for t in self.turns if t.latency is not None]
        latencies = [t.latency for t in done if t.latency is not None]
        first = [t.latency for t in done if t.turn == 0 and t.latency is not None]
        later = [t.latency for t in done if t.turn > 0 and t.latency is not None]
        start = min((t.sent for t in self.turns), default=0.0)
        end = max((t.replied for t in done if t.replied is not None), default=start)
        span = max(end - start, 1e-9)
        replies = sorted(t.replied for t in done if t.replied is not None)
        steady = None
        if len(replies) >= 20:
            # The middle 80% of answers: no ramp-up burst, no tail of the last conversations.
            lo, hi = replies[len(replies) // 10], replies[(len(replies) * 9) // 10]
            steady = round((len(replies) * 8 // 10) / max(hi - lo, 1e-9), 2)
        return {
            "kind": self.kind,
            "round": self.number,
            "turns_sent": len(self.turns),
            "turns_answered": len(done),
            "errors": len(self.turns) - len(done),
            "error_examples": sorted({t.error for t in self.turns if t.error})[:5],
            "seconds": round(span, 3),
            "turns_per_s": round(len(done) / span, 2),
            "turns_per_s_steady": steady,
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p90_ms": round(percentile(latencies, 90) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "first_turn_p50_ms": round(percentile(first, 50) * 1000, 1),
            "first_turn_p99_ms": round(percentile(first, 99) * 1000, 1),
            "later_turns_p50_ms": round(percentile(later, 50) * 1000, 1),
            "later_turns_p99_ms": round(percentile(later, 99) * 1000, 1),
            "foreign_cpus": self.foreign_cpus,
            **self.extra,
        }


# ------------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    children: Children
    services: Services
    board: ReplyBoard
    floor_board: ReplyBoard
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    task_queue: str = field(default_factory=lambda: f"bench-e2e-{uuid.uuid4().hex[:8]}")
    floor_queue: str = field(default_factory=lambda: f"bench-floor-{uuid.uuid4().hex[:8]}")
    gateway_port: int = 0
    apps: dict[str, ManagedProcess] = field(default_factory=dict)
    fakes: dict[str, ManagedProcess] = field(default_factory=dict)
    floor_worker: ManagedProcess | None = None

    def start(self) -> None:
        logs = self.services.logs
        twilio_port = free_port()
        fake_twilio = self.children.start(
            "fake-twilio",
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "fake_twilio.py"),
                "--port",
                str(twilio_port),
                "--account-sid",
                self.account_sid,
                "--auth-token",
                self.token,
            ],
            env=child_env({}),
            log_path=logs / "fake-twilio.log",
            on_line=self.board.line_handler(lambda e: str(e["to"])),
        )
        llm_ready: list[str] = []
        fake_llm = self.children.start(
            "fake-llm",
            [sys.executable, str(REPO_ROOT / "bench" / "fake_llm.py")],
            env=child_env({}),
            log_path=logs / "fake-llm.log",
            on_line=lambda line: llm_ready.append(line.split(" ", 1)[1]) if line.startswith("READY ") else None,
        )
        self.fakes = {"fake_twilio": fake_twilio, "fake_llm": fake_llm}
        self.gateway_port = free_port()
        health_ports = {"worker": free_port(), "bridge": free_port()}
        _wait(lambda: bool(llm_ready), 30, "fake LLM", fake_llm)
        _wait(lambda: _listening(twilio_port), 30, "fake Twilio", fake_twilio)
        env = child_env(
            {
                **self.services.settings_env(),
                "TEMPORAL_TASK_QUEUE": self.task_queue,
                "TWILIO_ACCOUNT_SID": self.account_sid,
                "TWILIO_AUTH_TOKEN": self.token,
                "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
                "TWILIO_API_BASE_URL": f"http://127.0.0.1:{twilio_port}",
                "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                "OPENAI_API_KEY": "sk-bench-" + secrets.token_hex(8),
                "OPENAI_BASE_URL": llm_ready[0],
                "GATEWAY_PORT": str(self.gateway_port),
                "WORKER_HEALTH_PORT": str(health_ports["worker"]),
                "BRIDGE_HEALTH_PORT": str(health_ports["bridge"]),
            }
        )
        for name in APP_PROCESSES:
            self.apps[name] = self.children.start(
                name,
                [sys.executable, "-m", "workers.cli", name],
                env=env,
                log_path=logs / f"{name}.log",
                stop_timeout=30,
            )
        for name in APP_PROCESSES:
            if name == "gateway":
                url = f"http://127.0.0.1:{self.gateway_port}/livez"
            else:
                url = f"http://127.0.0.1:{health_ports[name]}/readyz"
            _wait(lambda url=url: http_ok(url), 120, name, self.apps[name])
        assert self.services.temporal is not None
        floor_ready: list[bool] = []
        floor_handler = self.floor_board.line_handler(lambda e: f"{e['id']}#{e['turn']}")

        def on_floor_line(line: str) -> None:
            if line == "READY":
                floor_ready.append(True)
            else:
                floor_handler(line)

        self.floor_worker = self.children.start(
            "floor-worker",
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "temporal_floor.py"),
                "--address",
                self.services.temporal.address,
                "--task-queue",
                self.floor_queue,
            ],
            env=child_env({}),
            log_path=logs / "floor-worker.log",
            on_line=on_floor_line,
        )
        _wait(lambda: bool(floor_ready), 60, "floor worker", self.floor_worker)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.apps.items() if p.pid is not None}

    def all_pids(self) -> dict[str, int]:
        """Every process whose CPU a turn costs (PostgreSQL with its backends), and this driver."""
        services = {
            "temporal": self.services.temporal,
            "postgres": self.services.postgres,
            "kafka": self.services.kafka,
        }
        pids = dict(self.pids())
        for name, service in services.items():
            if service is not None and service.process is not None and service.process.pid is not None:
                pids[name] = service.process.pid
        for name, process in self.fakes.items():
            if process.pid is not None:
                pids[name] = process.pid
        if self.floor_worker is not None and self.floor_worker.pid is not None:
            pids["floor_worker"] = self.floor_worker.pid
        pids["driver"] = os.getpid()
        return pids


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(check: Callable[[], bool], timeout: float, what: str, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{what} exited: {process.log_tail(8)}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s: {process.log_tail(8)}")


# ------------------------------------------------------------------------------------- drivers


def signed_request(token: str, phone: str, text: str) -> tuple[str, dict[str, str]]:
    from twilio.request_validator import RequestValidator

    sid = "SM" + secrets.token_hex(16)
    params = {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "Bench Customer",
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": phone.lstrip("+"),
        "SmsStatus": "received",
        "Body": text,
        "To": f"whatsapp:{WHATSAPP_FROM}",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(token).compute_signature(f"{PUBLIC_BASE_URL}{WHATSAPP_PATH}", params)
    return urlencode(params), {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}


async def drive_real(
    stack: Stack, phones: list[str], messages: int, turn_timeout: float, think: float = 0.0
) -> list[TurnRecord]:
    """Each phone: `messages` webhooks, one after the other, each once the previous reply arrived.

    With `think` > 0 the customer waits that long before writing again, and the conversations
    start spread evenly over one think time (a paced load instead of a closed loop).
    """
    import httpx

    records: list[TurnRecord] = []
    limits = httpx.Limits(max_connections=len(phones) + 8, max_keepalive_connections=len(phones) + 8)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.gateway_port}", limits=limits, timeout=30.0
    ) as http:

        async def conversation(index: int, phone: str) -> None:
            key = f"whatsapp:{phone}"
            if think:
                await asyncio.sleep(think * index / len(phones))
            for turn in range(messages):
                if turn and think:
                    await asyncio.sleep(think)
                body, headers = signed_request(stack.token, phone, QUESTIONS[turn % len(QUESTIONS)])
                record = TurnRecord(conversation=phone, turn=turn, sent=time.monotonic())
                records.append(record)
                reply = stack.board.expect(key)
                try:
                    response = await http.post(WHATSAPP_PATH, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    record.error = f"webhook {type(exc).__name__}"
                else:
                    if response.status_code != 200:
                        record.error = f"webhook HTTP {response.status_code}"
                if record.error:
                    stack.board.forget(key)
                    return
                record.accepted, record.accepted_wall = time.monotonic(), time.time()
                try:
                    event = await asyncio.wait_for(reply, turn_timeout)
                except TimeoutError:
                    stack.board.forget(key)
                    record.error = f"no reply within {turn_timeout:g}s"
                    return
                record.replied = float(event["t"])
                record.replied_wall = float(event["wall"])

        await asyncio.gather(*(conversation(i, phone) for i, phone in enumerate(phones)))
    return records


async def drive_floor(
    client: Any, stack: Stack, ids: list[str], shapes: list[FloorTurn], turn_timeout: float, think: float = 0.0
) -> list[TurnRecord]:
    """The same pattern against the floor workflow: signal-with-start per turn, wait for its "reply"."""
    from temporalio.common import WorkflowIDReusePolicy

    records: list[TurnRecord] = []

    async def conversation(index: int, workflow_id: str) -> None:
        if think:
            await asyncio.sleep(think * index / len(ids))
        for turn in range(len(shapes)):
            if turn and think:
                await asyncio.sleep(think)
            record = TurnRecord(conversation=workflow_id, turn=turn, sent=time.monotonic())
            records.append(record)
            key = f"{workflow_id}#{turn}"
            done = stack.floor_board.expect(key)
            try:
                await client.start_workflow(
                    FLOOR_WORKFLOW,
                    FloorInput(turns=shapes),
                    id=workflow_id,
                    task_queue=stack.floor_queue,
                    start_signal=TURN_SIGNAL,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )
            except Exception as exc:
                stack.floor_board.forget(key)
                record.error = f"signal-with-start {type(exc).__name__}"
                return
            record.accepted, record.accepted_wall = time.monotonic(), time.time()
            try:
                event = await asyncio.wait_for(done, turn_timeout)
            except TimeoutError:
                stack.floor_board.forget(key)
                record.error = f"no reply within {turn_timeout:g}s"
                return
            record.replied = float(event["t"])

    await asyncio.gather(*(conversation(i, workflow_id) for i, workflow_id in enumerate(ids)))
    return records


# ------------------------------------------------------------------------------------- histories


async def turn_shapes(client: Any, workflow_id: str) -> list[list[str]]:
    """The activities a conversation ran, in order, cut into turns; local ones as "local:<type>".

    A turn ends with its metrics activity; should that ever be missing, the cut falls after each
    reply's send instead.
    """
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names: list[str] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity" and "data" in marker.details:
                data = json.loads(marker.details["data"].payloads[0].data)
                names.append(f"local:{data.get('activity_type', '?')}")
    ends = {n for n in names if n.endswith("record_turn_metrics")} or {n for n in names if _is_send(n)}
    turns: list[list[str]] = []
    current: list[str] = []
    for name in names:
        current.append(name)
        if name in ends:
            turns.append(current)
            current = []
    if current:
        turns.append(current)
    return turns


def _is_send(name: str) -> bool:
    return name.startswith("send_") and name.endswith("_reply")


async def signal_times(client: Any, workflow_id: str) -> list[float]:
    """Wall-clock times at which the server recorded each inbound-message signal."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        event.event_time.ToMicroseconds() / 1e6
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
    ]


async def breakdown(client: Any, records: list[TurnRecord], limit: int) -> dict[str, Any]:
    """Where a turn's time goes: webhook accepted → signal in history (Kafka + bridge) → reply at Twilio."""
    from workflows.contracts import conversation_workflow_id

    by_phone: dict[str, list[TurnRecord]] = {}
    for record in records:
        by_phone.setdefault(record.conversation, []).append(record)
    intake: list[float] = []
    workflow: list[float] = []
    for phone in list(by_phone)[:limit]:
        try:
            signals = await signal_times(client, conversation_workflow_id("whatsapp", phone))
        except Exception:
            continue
        for record, signalled in zip(sorted(by_phone[phone], key=lambda r: r.turn), signals, strict=False):
            if record.accepted_wall is None or record.replied_wall is None:
                continue
            intake.append(signalled - record.accepted_wall)
            workflow.append(record.replied_wall - signalled)
    return {
        "conversations_sampled": min(limit, len(by_phone)),
        "accepted_to_signal_p50_ms": round(percentile(intake, 50) * 1000, 1),
        "accepted_to_signal_p99_ms": round(percentile(intake, 99) * 1000, 1),
        "signal_to_reply_p50_ms": round(percentile(workflow, 50) * 1000, 1),
        "signal_to_reply_p99_ms": round(percentile(workflow, 99) * 1000, 1),
    }


async def unanswered(client: Any, records: list[TurnRecord], limit: int = 5) -> list[dict[str, Any]]:
    """For turns that got no reply: where their workflow is (status, pending activities, last events)."""
    from workflows.contracts import conversation_workflow_id

    out: list[dict[str, Any]] = []
    for record in [r for r in records if r.error and r.error.startswith("no reply")][:limit]:
        workflow_id = conversation_workflow_id("whatsapp", record.conversation)
        entry: dict[str, Any] = {"workflow_id": workflow_id, "turn": record.turn}
        try:
            handle = client.get_workflow_handle(workflow_id)
            described = await handle.describe()
            entry["status"] = described.status.name if described.status else None
            raw = described.raw_description
            entry["pending_activities"] = [
                {"type": a.activity_type.name, "attempt": a.attempt, "last_failure": a.last_failure.message[:300]}
                for a in raw.pending_activities
            ]
            history = await handle.fetch_history()
            entry["last_events"] = [
                f"{event.event_id} {event.event_type} {event.event_time.ToJsonString()}"
                for event in history.events[-15:]
            ]
            failures = [
                event.workflow_task_failed_event_attributes.failure.message[:300]
                for event in history.events
                if event.HasField("workflow_task_failed_event_attributes")
            ]
            entry["workflow_task_failures"] = failures[-3:]
        except Exception as exc:  # the report must not lose the round's figures
            entry["describe_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out.append(entry)
    return out


class CrmStats:
    """One plain asyncpg connection for the benchmark's own reads: one transaction per query."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.conn: Any = None

    async def open(self) -> None:
        import asyncpg

        pg = self.services.postgres
        assert pg is not None
        self.conn = await asyncpg.connect(host=pg.host, port=pg.port, user="postgres", database=pg.database)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def transactions(self) -> int:
        """Transactions committed or rolled back in the CRM database (pg_stat_database)."""
        value = await self.conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value or 0)

    async def escalations_since(self, since: float) -> int:
        value = await self.conn.fetchval("SELECT count(*) FROM escalations WHERE created_at >= to_timestamp($1)", since)
        return int(value or 0)


# ------------------------------------------------------------------------------------- profiling


def start_profilers(
    children: Children, targets: dict[str, int], tag: str, logs: Path
) -> list[tuple[str, ManagedProcess, Path | None]]:
    """py-spy on each pid until stopped (SIGINT makes it write its output); raw for all, SVG too."""
    spy = py_spy_path()
    if spy is None:
        return []
    started = []
    for name, pid in targets.items():
        for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
            out = RESULTS_DIR / f"profile_e2e_{tag}{name}.{suffix}"
            argv = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", fmt]
            process = ManagedProcess(
                name=f"py-spy-{name}-{fmt}",
                argv=[*argv, "--output", str(out)],
                log_path=logs / f"py-spy-{name}-{fmt}.log",
                stop_signal=2,  # SIGINT: py-spy writes the profile and exits
                stop_timeout=30,
            )
            children.add(process)
            process.start()
            started.append((name, process, out if fmt == "raw" else None))
    time.sleep(1.0)
    return started


def stop_profilers(children: Children, started: list[tuple[str, ManagedProcess, Path | None]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, process, raw in started:
        children.stop(process)
        if raw is not None and raw.exists():
            found[name] = {
                "raw": str(raw.relative_to(REPO_ROOT)),
                "svg": str(raw.with_suffix(".svg").relative_to(REPO_ROOT)),
                "top": top_frames(raw),
            }
    return found


# ----------------------------------------------------------------------------------------- bench


async def run_rounds(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    from temporalio.client import Client

    assert stack.services.temporal is not None
    loop = asyncio.get_running_loop()
    stack.board.loop = loop
    stack.floor_board.loop = loop
    client = await Client.connect(stack.services.temporal.address)
    stats = CrmStats(stack.services)
    await stats.open()
    load = ForeignLoad()
    results: list[RoundResult] = []
    shapes_seen: list[list[str]] = []
    shapes: list[FloorTurn] | None = None
    rss = dict.fromkeys(APP_PROCESSES, 0)
    profiles: dict[str, Any] = {}

    # Warm-up: connections, caches, the consumer group's partition assignment, the first workflows.
    print("warm-up ...", flush=True)
    warm = [f"+1557{i:07d}" for i in range(args.warmup)]
    warm_records = await drive_real(stack, warm, 1, args.turn_timeout)
    failed = [r.error for r in warm_records if r.error]
    if failed:
        raise RuntimeError(f"warm-up turns failed: {sorted(set(failed))[:3]}")

    kinds = ("real", "floor", "floor-regular") if args.regular_floor else ("real", "floor")
    rounds = [(kind, number) for number in range(1, args.rounds + 1) for kind in kinds]
    if args.profile:
        rounds += [("real-profile", args.rounds + 1), ("floor-profile", args.rounds + 1)]
    for kind, number in rounds:
        if kind.startswith("floor") and shapes is None:
            continue
        await asyncio.to_thread(wait_quiet, load, threshold=args.quiet_threshold, max_wait=args.quiet_wait)
        profiling: list[tuple[str, ManagedProcess, Path | None]] = []
        if kind == "real-profile":
            profiling = start_profilers(stack.children, stack.pids(), "", stack.services.logs)
        elif kind == "floor-profile" and stack.floor_worker is not None and stack.floor_worker.pid is not None:
            profiling = start_profilers(
                stack.children, {"floor_worker": stack.floor_worker.pid}, "", stack.services.logs
            )
        transactions_before = await stats.transactions()
        started_wall = time.time()
        meter = CpuMeter(stack.all_pids(), without_children=frozenset({"driver"}))
        meter.start()
        load.start()
        result = RoundResult(kind=kind, number=number)
        if kind.startswith("real"):
            phones = [f"+1556{number}{i:06d}" for i in range(args.conversations)]
            with RssSampler(stack.pids()) as sampler:
                result.turns = await drive_real(stack, phones, args.messages, args.turn_timeout, args.think)
            for name, value in sampler.peak.items():
                rss[name] = max(rss[name], value)
        else:
            assert shapes is not None
            ids = [f"bench-{kind}-{number}-{i:05d}-{uuid.uuid4().hex[:4]}" for i in range(args.conversations)]
            floor_turns = regular_shapes(shapes) if kind == "floor-regular" else shapes
            result.turns = await drive_floor(client, stack, ids, floor_turns, args.turn_timeout, args.think)
        result.foreign_cpus = await asyncio.to_thread(load.stop)
        cpu = meter.stop()
        answered = max(1, sum(1 for t in result.turns if t.latency is not None))
        result.extra["cpu_ms_per_turn"] = {name: round(sec * 1000 / answered, 2) for name, sec in cpu.items()}
        result.extra["cpu_ms_per_turn_total"] = round(sum(cpu.values()) * 1000 / answered, 2)
        if profiling:
            profiles.update(await asyncio.to_thread(stop_profilers, stack.children, profiling))
        if kind == "real":
            from workflows.contracts import conversation_workflow_id

            # Conversations whose every turn was answered: their histories are complete.
            last_turn = args.messages - 1
            phones_answered = sorted(
                {r.conversation for r in result.turns if r.latency is not None and r.turn == last_turn}
            )
            for phone in phones_answered[:3]:
                shapes_seen.append(
                    [",".join(t) for t in await turn_shapes(client, conversation_workflow_id("whatsapp", phone))]
                )
            if shapes is None and phones_answered:
                first = conversation_workflow_id("whatsapp", phones_answered[0])
                shapes = floor_shapes(await turn_shapes(client, first))
            result.extra["breakdown"] = await breakdown(client, result.turns, args.breakdown_sample)
            result.extra["unanswered"] = await unanswered(client, result.turns)
            result.extra["escalations"] = await stats.escalations_since(started_wall)
            # Backends report their statistics when idle, at most every ~10 s: give them time. The
            # benchmark's own two reads in between are one transaction each.
            await asyncio.sleep(11)
            transactions = await stats.transactions() - transactions_before - 2
            result.extra["db_transactions_per_turn"] = round(transactions / answered, 2)
        if kind.endswith("profile"):
            continue
        results.append(result)
        fig = result.figures()
        print(
            f"  {kind:<5} round {number}: {fig['turns_answered']}/{fig['turns_sent']} turns, "
            f"{fig['turns_per_s']:.1f} turns/s, p50 {fig['p50_ms']:.0f} ms, p99 {fig['p99_ms']:.0f} ms "
            f"(other processes: {fig['foreign_cpus']:.2f} CPUs)",
            flush=True,
        )
    await stats.close()
    hwm = {name: peak_rss_bytes(pid) for name, pid in stack.pids().items()}
    return {
        "rounds": [r.figures() for r in results],
        "activity_shapes": shapes_seen[:3],
        "floor_turns": [s.steps for s in shapes or []],
        "peak_rss_sampled_mb": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "peak_rss_vmhwm_mb": {k: round(v / 2**20, 1) if v else None for k, v in hwm.items()},
        "unexpected_replies": stack.board.unexpected,
        "profiles": profiles,
    }


def floor_shapes(turns: list[list[str]]) -> list[FloorTurn]:
    """Per turn, the floor's steps: a no-op of the same kind (local or not) for each real activity,
    with the last send of the turn as the reporting "reply"."""
    shapes = []
    for names in turns:
        sends = [i for i, name in enumerate(names) if _is_send(name)]
        reply_at = sends[-1] if sends else len(names) - 1
        steps = [
            "reply" if i == reply_at else "local" if name.startswith("local:") else "activity"
            for i, name in enumerate(names)
        ]
        shapes.append(FloorTurn(steps=steps))
    return shapes


def regular_shapes(shapes: list[FloorTurn]) -> list[FloorTurn]:
    """The same turns with every no-op a regular activity."""
    return [FloorTurn(steps=["activity" if step == "local" else step for step in s.steps]) for s in shapes]


def summarise(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    real = [r for r in raw["rounds"] if r["kind"] == "real"]
    floor = [r for r in raw["rounds"] if r["kind"] == "floor"]
    regular = [r for r in raw["rounds"] if r["kind"] == "floor-regular"]

    def per_round(floors: list[dict[str, Any]]) -> list[float]:
        return [
            round(a["turns_per_s"] / b["turns_per_s"], 3)
            for a, b in zip(real, floors, strict=False)
            if b["turns_per_s"]
        ]

    ratios = per_round(floor)
    ratios_regular = per_round(regular)

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(sum(values) / len(values), 2) if values else None

    ours = {k: mean(real, k) for k in ("turns_per_s", "turns_per_s_steady", "p50_ms", "p99_ms", "max_ms")}
    base = {k: mean(floor, k) for k in ("turns_per_s", "turns_per_s_steady", "p50_ms", "p99_ms", "max_ms")}
    ratio = round(sum(ratios) / len(ratios), 3) if ratios else None
    ratio_regular = round(sum(ratios_regular) / len(ratios_regular), 3) if ratios_regular else None
    base_regular = {k: mean(regular, k) for k in ("turns_per_s", "turns_per_s_steady", "p50_ms", "p99_ms", "max_ms")}
    return {
        "benchmark": "e2e_turn",
        "machine": machine(),
        "code": code_state(),
        "config": {
            "conversations": args.conversations,
            "messages_per_conversation": args.messages,
            "think_s": args.think,
            "load": "closed loop: next message as soon as the reply arrived"
            if not args.think
            else f"paced: {args.think:g} s think time, conversations started evenly over one think time",
            "rounds": args.rounds,
            "order": "real, floor (mirrored), floor-regular, real, ... per round",
            "turn_latency": "gateway 200 (record acknowledged by Kafka) → reply received by the fake Twilio",
            "processes": "gateway, bridge, worker: python -m workers.cli …; fakes in their own processes; no pinning",
            "log_level": "WARNING",
            "model": "OpenAI fake, one send_response tool call per request, no delay",
        },
        "summary": {
            "ours": ours,
            "floor": base,
            "turns_per_s_ratio": ratio,
            "ratios_per_round": ratios,
            "floor_regular": base_regular if regular else None,
            "turns_per_s_ratio_regular": ratio_regular,
            "ratios_per_round_regular": ratios_regular,
            "targets": {
                "p50_under_300ms": ours["p50_ms"] is not None and ours["p50_ms"] < 300,
                "p99_under_1500ms": ours["p99_ms"] is not None and ours["p99_ms"] < 1500,
                "ratio_above_0.7": ratio is not None and ratio > 0.7,
                "ratio_above_0.7_vs_regular_floor": ratio_regular is not None and ratio_regular > 0.7,
                "every_turn_answered": all(r["errors"] == 0 for r in real),
            },
        },
        **raw,
    }


def print_table(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print()
    print(
        f"end-to-end turn — {cfg['conversations']} conversations x {cfg['messages_per_conversation']} messages, "
        f"{result['machine']['cpus']} CPUs"
    )
    header = (
        f"{'run':<12}{'turns':>7}{'turns/s':>9}{'steady':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'1st p50':>9}{'later p50':>10}{'errors':>7}{'other CPUs':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rounds"]:
        print(
            f"{r['kind'] + ' ' + str(r['round']):<12}{r['turns_answered']:>7}{r['turns_per_s']:>9.1f}"
            f"{(r['turns_per_s_steady'] or 0):>8.1f}{r['p50_ms']:>8.0f}{r['p99_ms']:>8.0f}{(r['max_ms'] or 0):>8.0f}"
            f"{r['first_turn_p50_ms']:>9.0f}{r['later_turns_p50_ms']:>10.0f}{r['errors']:>7}{r['foreign_cpus']:>11.2f}"
        )
    s = result["summary"]
    print()
    print(f"ours:  {s['ours']['turns_per_s']} turns/s, p50 {s['ours']['p50_ms']} ms, p99 {s['ours']['p99_ms']} ms")
    print(f"floor: {s['floor']['turns_per_s']} turns/s, p50 {s['floor']['p50_ms']} ms, p99 {s['floor']['p99_ms']} ms")
    print(f"turns/s ours ÷ floor: {s['turns_per_s_ratio']} (per round: {s['ratios_per_round']})")
    if s.get("floor_regular"):
        r = s["floor_regular"]
        print(f"regular floor: {r['turns_per_s']} turns/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        ratio, rounds = s["turns_per_s_ratio_regular"], s["ratios_per_round_regular"]
        print(f"turns/s ours ÷ regular floor: {ratio} (per round: {rounds})")
    print("targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in s["targets"].items()))
    print(f"activities per turn (real): {[len(t.split(',')) for t in (result['activity_shapes'] or [[]])[0]]}")
    for r in result["rounds"]:
        if r["kind"] == "real" and "breakdown" in r:
            b = r["breakdown"]
            print(
                f"  round {r['round']}: accepted→signal p50 {b['accepted_to_signal_p50_ms']} ms "
                f"(p99 {b['accepted_to_signal_p99_ms']}), signal→reply p50 {b['signal_to_reply_p50_ms']} ms "
                f"(p99 {b['signal_to_reply_p99_ms']}); escalations {r['escalations']}; "
                f"DB transactions per turn {r.get('db_transactions_per_turn')}"
            )
    for r in result["rounds"]:
        parts = ", ".join(f"{k} {v:g}" for k, v in r["cpu_ms_per_turn"].items() if v >= 0.05)
        print(f"  CPU ms per turn, {r['kind']} {r['round']}: total {r['cpu_ms_per_turn_total']:g} ({parts})")
    print(f"peak RSS (MB), sampled: {result['peak_rss_sampled_mb']}; VmHWM: {result['peak_rss_vmhwm_mb']}")
    for name, prof in result.get("profiles", {}).items():
        print()
        print(f"py-spy, {name} — hottest frames of the event-loop thread by own time:")
        for row in prof["top"]["own"][:10]:
            print(f"  {row['share']:>6.1%}  {row['frame']}")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    children = Children()
    services = Services(children)
    try:
        with interrupts_as_keyboard_interrupt():
            print(f"starting PostgreSQL, Temporal, Kafka (tansu) in {services.directory} ...", flush=True)
            services.start()
            stack = Stack(children, services, ReplyBoard(), ReplyBoard())
            print("starting fake Twilio, fake LLM, worker, bridge, gateway, floor worker ...", flush=True)
            stack.start()
            raw = asyncio.run(run_rounds(stack, args))
    finally:
        children.stop_all()
        if args.keep_logs:
            print(f"logs kept in {services.logs}")
        else:
            services.cleanup()
    return summarise(args, raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200, help="concurrent conversations (default 200)")
    parser.add_argument("--messages", type=int, default=3, help="messages per conversation (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="real/floor round pairs (default 2)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up conversations, one message each")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds a customer waits after a reply before writing again (default 0: closed loop)",
    )
    parser.add_argument("--turn-timeout", type=float, default=120.0, help="give up on a turn after (default 120 s)")
    parser.add_argument("--breakdown-sample", type=int, default=200, help="conversations whose history is read")
    parser.add_argument("--quiet-threshold", type=float, default=0.15, help="see webhook_intake.py")
    parser.add_argument("--quiet-wait", type=float, default=90.0)
    parser.add_argument("--profile", action="store_true", help="extra real and floor rounds under py-spy")
    parser.add_argument(
        "--regular-floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the floor with every no-op a regular activity (default on)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not (1 <= args.conversations <= 2000 and 1 <= args.messages <= 20 and 1 <= args.rounds <= 10):
        parser.error("--conversations in [1, 2000], --messages in [1, 20], --rounds in [1, 10]")
    return run_and_report(args, run_bench, print_table)


if __name__ == "__main__":
    sys.exit(main())
