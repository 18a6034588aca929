"""CPU per WhatsApp webhook inside the app: the gateway vs the floor app, broker and HTTP server stubbed.

Companion to bench/webhook_intake.py. There, wrk, uvicorn and the broker share two cores with
the app, so on a busy machine the figures move with everyone else's load. Here each app runs
alone in a fresh interpreter (uvloop, as under uvicorn) and is called as an ASGI app with the same
pre-signed requests (20,000 senders round-robin, as in webhook_intake.py), with the Kafka producer
replaced by one that acknowledges at once. What is left is the Python work the app does per
request — signature check, form parse, framework, validation, rate limiting, metrics, logging,
garbage collection — measured as process CPU time per request. It is the figure to use when
comparing two versions of the gateway code (A/B); it leaves out uvicorn's HTTP parsing and the
Kafka client, which are the same for both apps.

    .venv/bin/python bench/gateway_cpu.py
    .venv/bin/python bench/gateway_cpu.py --requests 30000 --concurrency 1 100 --json bench/results/gateway_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from common import PUBLIC_BASE_URL, REPO_ROOT, WHATSAPP_PATH, code_state, machine, write_json

TARGETS = ("gateway", "floor")


class _InstantProducer:
    """Stands in for AIOKafkaProducer: the broker acknowledges at once."""

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> None:
        return None


class _InstantProducerHolder:
    """Stands in for the gateway's KafkaProducerHolder."""

    async def get(self) -> _InstantProducer:
        return _InstantProducer()

    async def close(self) -> None:
        return None


def _requests(token: str, count: int, senders: int) -> list[tuple[bytes, bytes]]:
    from twilio.request_validator import RequestValidator
    from webhook_intake import twilio_params

    validator = RequestValidator(token)
    url = f"{PUBLIC_BASE_URL}{WHATSAPP_PATH}"
    out = []
    for i in range(count):
        sid = f"SMCPU{i:010d}".ljust(34, "0")
        params = twilio_params(sid, f"+1555{i % senders:07d}", "How do I add a checklist to a card?")
        out.append((urlencode(params).encode(), validator.compute_signature(url, params).encode()))
    return out


async def _lifespan_start(app: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message", "startup failed"))

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(started.wait(), 30)
    return inbox, task


async def _measure(target: str, args: argparse.Namespace) -> dict[str, Any]:
    from core.settings import Settings

    token = secrets.token_hex(16)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        twilio_auth_token=token,
        public_base_url=PUBLIC_BASE_URL,
        kafka_enable_idempotence=False,
        log_level="WARNING",
        log_format="json",
    )
    lifespan: tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None]] | None = None
    if target == "gateway":
        from core.logging import configure_logging
        from gateway.app import create_app

        configure_logging(level="WARNING", log_format="json", process="gateway")
        app: Any = create_app(settings)
        lifespan = await _lifespan_start(app)
        app.state.resources.kafka = _InstantProducerHolder()
    else:
        from floor_app import FloorApp

        app = FloorApp(settings)
        app.producer = _InstantProducer()
    requests = _requests(token, args.requests, args.senders)
    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WHATSAPP_PATH,
        "raw_path": WHATSAPP_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: dict[int, int] = {}

    async def one(body: bytes, signature: bytes) -> None:
        scope = {
            **scope_base,
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
                (b"x-twilio-signature", signature),
            ],
            "state": {},
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def run(batch: list[tuple[bytes, bytes]], concurrency: int) -> None:
        queue = iter(batch)

        async def lane() -> None:
            for body, signature in queue:
                await one(body, signature)

        await asyncio.gather(*(lane() for _ in range(concurrency)))

    results = []
    for concurrency in args.concurrency:
        await run(requests[: args.warmup], concurrency)
        statuses.clear()
        gc_before = [s["collections"] for s in gc.get_stats()]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await run(requests, concurrency)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        gc_after = [s["collections"] for s in gc.get_stats()]
        results.append(
            {
                "concurrency": concurrency,
                "requests": len(requests),
                "cpu_us_per_request": round(cpu * 1e6 / len(requests), 1),
                "wall_us_per_request": round(wall * 1e6 / len(requests), 1),
                "statuses": {str(k): v for k, v in statuses.items()},
                "gc_collections": {f"gen{i}": a - b for i, (a, b) in enumerate(zip(gc_after, gc_before, strict=True))},
            }
        )
    if lifespan is not None:
        inbox, task = lifespan
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)
    return {"target": target, "runs": results}


def _child(target: str, args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(_measure(target, args))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--senders", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeat", type=int, default=3, help="fresh interpreters per app, alternating (default 3)")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args)
        return 0
    passthrough = [
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--senders",
        str(args.senders),
        "--concurrency",
        *map(str, args.concurrency),
    ]
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
    for _ in range(args.repeat):
        for target in TARGETS:
            done = subprocess.run(
                [sys.executable, __file__, "--child", target, *passthrough],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=REPO_ROOT,
                check=False,
            )
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{target} run failed: {done.stderr[-1500:]}")
            runs[target].append(json.loads(line.removeprefix("RESULT ")))
    table = []
    print(f"{'app':<9}{'c':>5}{'CPU us/req (median of runs)':>30}{'runs':>28}{'gc gen2/10k req':>17}")
    for concurrency in args.concurrency:
        row: dict[str, Any] = {"concurrency": concurrency}
        for target in TARGETS:
            values = [next(r for r in run["runs"] if r["concurrency"] == concurrency) for run in runs[target]]
            cpu = sorted(v["cpu_us_per_request"] for v in values)
            gen2 = sum(v["gc_collections"]["gen2"] for v in values) / len(values) * 10_000 / args.requests
            bad = [v["statuses"] for v in values if set(v["statuses"]) != {"200"}]
            row[target] = {"cpu_us_per_request": cpu[len(cpu) // 2], "runs": cpu, "gc_gen2_per_10k": gen2, "bad": bad}
            print(f"{target:<9}{concurrency:>5}{cpu[len(cpu) // 2]:>30.0f}{cpu!s:>28}{gen2:>17.1f}")
            if bad:
                print(f"  non-200 answers: {bad[:2]}")
        row["ratio"] = round(row["gateway"]["cpu_us_per_request"] / row["floor"]["cpu_us_per_request"], 2)
        print(f"{'ratio':<9}{concurrency:>5}{row['ratio']:>30.2f}")
        table.append(row)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "gateway_cpu",
                "machine": machine(),
                "code": code_state(),
                "config": {"requests": args.requests, "senders": args.senders, "repeat": args.repeat},
                "levels": table,
                "raw": runs,
            },
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
