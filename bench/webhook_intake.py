"""Benchmark 1, webhook intake: signed WhatsApp webhooks into the real gateway vs a floor app.

Starts real PostgreSQL (+migrations), the Temporal dev server and the tansu Kafka broker in a
temporary directory, then two HTTP servers side by side, each one uvicorn process with the
settings of `crm-fte gateway`:

* the gateway as deployed: `python -m workers.cli gateway` (FastAPI, the project's middleware,
  signature check, normalisation, acks=all produce, metrics),
* the floor, `bench/floor_app.py`: form parse + twilio `RequestValidator` + aiokafka produce with
  the same producer settings (`core.kafka.producer_kwargs`), empty TwiML, nothing else.

Load comes from Debian's `wrk` (C, epoll; `apt-get install wrk`) with `bench/wrk_signed.lua`,
cycling through requests signed beforehand by Python with unique MessageSids, so the generator
does no signing and no Python under load. For each concurrency level it runs gateway and floor
alternately (ABAB...), then prints throughput, p50/p99/max latency and errors (non-2xx, socket
errors, timeouts) and the ratios the targets are written in.

CPU placement on a 2-core machine (`--pin split`, the default): the app under test on CPU 0,
wrk, the broker and py-spy on CPU 1; PostgreSQL and Temporal stay idle during the runs.
`--pin none` lets the kernel place everything.

    .venv/bin/python bench/webhook_intake.py --json bench/results/webhook_intake.json
    .venv/bin/python bench/webhook_intake.py --concurrency 10 50 200 --duration 12 --rounds 2 --profile
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    PUBLIC_BASE_URL,
    REPO_ROOT,
    RESULTS_DIR,
    WHATSAPP_FROM,
    WHATSAPP_PATH,
    Children,
    CpuMeter,
    ForeignLoad,
    Services,
    child_env,
    code_state,
    interrupts_as_keyboard_interrupt,
    machine,
    py_spy_path,
    run_and_report,
    taskset_prefix,
    top_frames,
    wait_port,
    wait_quiet,
)

from workers.embedded import ManagedProcess, free_port

LUA = REPO_ROOT / "bench" / "wrk_signed.lua"
TARGETS = ("gateway", "floor")
PIN = {"split": {"app": "0", "load": "1"}, "none": {"app": None, "load": None}}


# --------------------------------------------------------------------------------- the requests


def twilio_params(sid: str, phone: str, body: str) -> dict[str, str]:
    """The fields Twilio posts for an inbound WhatsApp text message."""
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "Bench Customer",
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": phone.lstrip("+"),
        "SmsStatus": "received",
        "Body": body,
        "To": f"whatsapp:{WHATSAPP_FROM}",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "ApiVersion": "2010-04-01",
    }


def write_requests(path: Path, *, token: str, count: int, tag: str, senders: int, start: int) -> None:
    """`count` signed requests, one per line: signature TAB urlencoded body, unique MessageSids.

    Senders come round-robin from a pool of `senders` phone numbers, starting at `start`, so no
    sender exceeds the gateway's per-sender rate limit and the limiter holds one key per sender,
    as it would in production.
    """
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    url = f"{PUBLIC_BASE_URL}{WHATSAPP_PATH}"
    questions = (
        "How do I add a checklist to a card?",
        "Can I connect my board to Slack so the team sees new tasks?",
        "Where do I change the due date reminder for an automation?",
        "Hi! How can I invite a guest to one project only?",
    )
    with path.open("w") as out:
        for i in range(count):
            sid = f"SM{tag}{i:010d}".ljust(34, "0")[:34]
            phone = f"+1555{(start + i) % senders:07d}"
            params = twilio_params(sid, phone, questions[i % len(questions)])
            signature = validator.compute_signature(url, params)
            out.write(f"{signature}\t{urlencode(params)}\n")


# ------------------------------------------------------------------------------------------- wrk


def run_wrk(
    *,
    port: int,
    requests_file: Path,
    connections: int,
    threads: int,
    duration: float,
    cpus: str | None,
    log_dir: Path,
    name: str,
) -> dict[str, Any]:
    """One wrk run (bounded by its duration + a margin); the figures its done() hook printed."""
    log_path = log_dir / f"wrk-{name}.log"
    argv = [
        *taskset_prefix(cpus),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        str(requests_file),
        WHATSAPP_PATH,
        str(threads),
    ]
    proc = ManagedProcess(name=f"wrk-{name}", argv=argv, log_path=log_path, stop_timeout=5)
    proc.start()
    assert proc.popen is not None
    try:
        proc.popen.wait(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        proc.stop(2)
        raise RuntimeError(f"wrk did not finish: {proc.log_tail(5)}") from None
    finally:
        proc.stop(2)
    text = log_path.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures: {text[-800:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    lat = raw["latency_us"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "throughput_rps": round(raw["requests"] / seconds, 1),
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": round(lat["mean"] / 1000, 3),
        "errors": sum(errors.values()),
        "error_detail": errors,
    }


# ------------------------------------------------------------------------------------- the bench


def start_apps(children: Children, services: Services, token: str, cpus: str | None) -> dict[str, tuple[Any, int]]:
    env = child_env({**services.settings_env(), "TWILIO_AUTH_TOKEN": token, "PUBLIC_BASE_URL": PUBLIC_BASE_URL})
    apps: dict[str, tuple[Any, int]] = {}
    for name in TARGETS:
        port = free_port()
        if name == "gateway":
            argv = [sys.executable, "-m", "workers.cli", "gateway", "--port", str(port)]
        else:
            argv = [sys.executable, str(REPO_ROOT / "bench" / "floor_app.py"), "--port", str(port)]
        process = children.start(name, [*taskset_prefix(cpus), *argv], env=env, log_path=services.logs / f"{name}.log")
        apps[name] = (process, port)
    for _name, (process, port) in apps.items():
        wait_port("127.0.0.1", port, 60, process)
    return apps


def first_request(port: int, token: str) -> None:
    """One signed request, so the gateway's lazily started producer is up before timing."""
    from urllib.parse import urlencode

    import httpx
    from twilio.request_validator import RequestValidator

    params = twilio_params("SM" + secrets.token_hex(16), "+15550000001", "warm-up")
    signature = RequestValidator(token).compute_signature(f"{PUBLIC_BASE_URL}{WHATSAPP_PATH}", params)
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(
            f"http://127.0.0.1:{port}{WHATSAPP_PATH}",
            content=urlencode(params),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
            timeout=15,
        )
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up request failed: {response.status_code} {response.text[:200]}")
        time.sleep(0.5)


def profile_app(
    name: str, pid: int, *, port: int, requests_file: Path, args: argparse.Namespace, cpus: str | None, logs: Path
) -> dict[str, Any]:
    """An extra, unrecorded wrk run at one concurrency with py-spy sampling the app."""
    spy = py_spy_path()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    outputs: dict[str, Any] = {}
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        out = RESULTS_DIR / f"profile_webhook_{name}.{suffix}"
        spy_proc = ManagedProcess(
            name=f"py-spy-{name}",
            argv=[
                *taskset_prefix(cpus),
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                # Sampling without pausing the process: the gateway runs dozens of threads, and
                # pausing all of them 200 times a second would itself be the bottleneck.
                "--nonblocking",
                "--duration",
                str(int(args.duration)),
                "--format",
                fmt,
                "--output",
                str(out),
            ],
            log_path=logs / f"py-spy-{name}-{fmt}.log",
            stop_timeout=10,
        )
        spy_proc.start()
        time.sleep(1.0)  # py-spy attaches before the load starts
        run = run_wrk(
            port=port,
            requests_file=requests_file,
            connections=args.profile_concurrency,
            threads=args.threads,
            duration=args.duration,
            cpus=cpus,
            log_dir=logs,
            name=f"profile-{name}-{fmt}",
        )
        assert spy_proc.popen is not None
        try:
            spy_proc.popen.wait(timeout=args.duration + 30)
        except subprocess.TimeoutExpired:
            spy_proc.stop(5)
        outputs[suffix] = str(out.relative_to(REPO_ROOT))
        outputs[f"throughput_rps_under_{fmt}"] = run["throughput_rps"]
        if suffix == "txt" and out.exists():
            outputs["top"] = top_frames(out)
    return outputs


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one target at one level: pooled throughput, mean percentiles, worst max, all errors."""
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    return {
        "rounds": len(runs),
        "requests": requests,
        "throughput_rps": round(requests / seconds, 1),
        "p50_ms": round(sum(r["p50_ms"] for r in runs) / len(runs), 3),
        "p99_ms": round(sum(r["p99_ms"] for r in runs) / len(runs), 3),
        "max_ms": round(max(r["max_ms"] for r in runs), 3),
        "errors": sum(r["errors"] for r in runs),
        "foreign_cpus_max": max(r["foreign_cpus"] for r in runs),
        "app_cpu_us_per_request": round(sum(r["app_cpu_us_per_request"] for r in runs) / len(runs), 1),
        "broker_cpu_us_per_request": round(sum(r["broker_cpu_us_per_request"] for r in runs) / len(runs), 1),
        "app_cpu_utilisation": round(max(r["app_cpu_utilisation"] for r in runs), 3),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("webhook_intake: wrk is not installed (apt-get install -y wrk)")
    pin = PIN[args.pin]
    children = Children()
    services = Services(children)
    token = secrets.token_hex(16)
    runs: list[dict[str, Any]] = []
    load = ForeignLoad()
    profiles: dict[str, Any] = {}
    try:
        with interrupts_as_keyboard_interrupt():
            print(f"starting PostgreSQL, Temporal, Kafka (tansu) in {services.directory} ...", flush=True)
            services.start(kafka_cpus=pin["load"])
            apps = start_apps(children, services, token, pin["app"])
            print(
                "gateway pid {} port {}, floor pid {} port {}; pin: {}".format(
                    apps["gateway"][0].pid, apps["gateway"][1], apps["floor"][0].pid, apps["floor"][1], args.pin
                ),
                flush=True,
            )
            assert services.kafka is not None and services.kafka.process is not None
            meter = CpuMeter(
                {
                    "gateway": apps["gateway"][0].pid,
                    "floor": apps["floor"][0].pid,
                    "kafka": services.kafka.process.pid,
                }
            )
            requests_dir = services.directory / "requests"
            requests_dir.mkdir()
            warm_file = requests_dir / "warmup.tsv"
            write_requests(warm_file, token=token, count=5000, tag="W", senders=args.senders, start=0)
            for name in TARGETS:
                first_request(apps[name][1], token)
                run_wrk(
                    port=apps[name][1],
                    requests_file=warm_file,
                    connections=50,
                    threads=args.threads,
                    duration=args.warmup,
                    cpus=pin["load"],
                    log_dir=services.logs,
                    name=f"warmup-{name}",
                )
            number = 0
            for connections in args.concurrency:
                for round_index in range(args.rounds):
                    for name in TARGETS:
                        number += 1
                        requests_file = requests_dir / f"run{number}.tsv"
                        write_requests(
                            requests_file,
                            token=token,
                            count=args.requests,
                            tag=f"{number:03d}",
                            senders=args.senders,
                            start=number * 7919,
                        )
                        time.sleep(args.pause)
                        wait_quiet(load, threshold=args.quiet_threshold, max_wait=args.quiet_wait)
                        load.start()
                        meter.start()
                        result = run_wrk(
                            port=apps[name][1],
                            requests_file=requests_file,
                            connections=connections,
                            threads=args.threads,
                            duration=args.duration,
                            cpus=pin["load"],
                            log_dir=services.logs,
                            name=f"{name}-c{connections}-r{round_index + 1}",
                        )
                        cpu = meter.stop()
                        result["foreign_cpus"] = load.stop()
                        served = max(result["requests"], 1)
                        result["app_cpu_us_per_request"] = round(cpu[name] * 1e6 / served, 1)
                        result["broker_cpu_us_per_request"] = round(cpu["kafka"] * 1e6 / served, 1)
                        result["app_cpu_utilisation"] = round(cpu[name] / max(result["seconds"], 1e-9), 3)
                        requests_file.unlink()
                        result.update(target=name, concurrency=connections, round=round_index + 1)
                        result["wrapped"] = result["requests"] > args.requests
                        runs.append(result)
                        print(
                            f"  c={connections:<4} {name:<8} round {round_index + 1}: "
                            f"{result['throughput_rps']:>8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                            f"p99 {result['p99_ms']:7.2f} ms  max {result['max_ms']:7.1f} ms  "
                            f"errors {result['errors']}  (other processes: {result['foreign_cpus']:.2f} CPUs)",
                            flush=True,
                        )
            if args.profile:
                profile_file = requests_dir / "profile.tsv"
                write_requests(
                    profile_file, token=token, count=args.requests, tag="P", senders=args.senders, start=4999
                )
                for name in TARGETS:
                    process, port = apps[name]
                    print(f"profiling {name} at c={args.profile_concurrency} with py-spy ...", flush=True)
                    profiles[name] = profile_app(
                        name,
                        process.pid,
                        port=port,
                        requests_file=profile_file,
                        args=args,
                        cpus=pin["load"],
                        logs=services.logs,
                    )
    finally:
        children.stop_all()
        if args.keep_logs:
            print(f"logs kept in {services.logs}")
        else:
            services.cleanup()
    return summarise(args, runs, profiles)


def summarise(args: argparse.Namespace, runs: list[dict[str, Any]], profiles: dict[str, Any]) -> dict[str, Any]:
    levels = []
    for connections in args.concurrency:
        ours = aggregate([r for r in runs if r["concurrency"] == connections and r["target"] == "gateway"])
        floor = aggregate([r for r in runs if r["concurrency"] == connections and r["target"] == "floor"])
        p50_ratio = ours["p50_ms"] / floor["p50_ms"] if floor["p50_ms"] else float("inf")
        throughput_ratio = ours["throughput_rps"] / floor["throughput_rps"] if floor["throughput_rps"] else 0.0
        targets = {
            "p50_within_1.5x_floor": p50_ratio <= 1.5,
            "throughput_at_least_2/3_floor": throughput_ratio >= 2 / 3,
            "no_errors": ours["errors"] == 0,
        }
        if connections == 10:
            targets["p99_under_50ms"] = ours["p99_ms"] < 50
        levels.append(
            {
                "concurrency": connections,
                "gateway": ours,
                "floor": floor,
                "p50_ratio": round(p50_ratio, 3),
                "throughput_ratio": round(throughput_ratio, 3),
                "cpu_ratio": round(ours["app_cpu_us_per_request"] / max(floor["app_cpu_us_per_request"], 1e-9), 3),
                "targets": targets,
            }
        )
    return {
        "benchmark": "webhook_intake",
        "machine": machine(),
        "code": code_state(),
        "config": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "order": "per level: " + ", ".join(TARGETS) + " alternating, rounds times (ABAB)",
            "wrk_threads": args.threads,
            "signed_requests_per_run": args.requests,
            "senders": args.senders,
            "pin": args.pin,
            "pinning": {
                "split": "app under test on CPU 0; wrk, tansu broker and py-spy on CPU 1",
                "none": "no pinning",
            }[args.pin],
            "uvicorn": "one process, uvloop + httptools (uvicorn[standard]), access_log off, LOG_LEVEL=WARNING",
            "kafka": "tansu 0.6 (in-memory), acks=all, enable_idempotence=false, linger_ms=0",
            "quiet_threshold_cpus": args.quiet_threshold,
        },
        "levels": levels,
        "runs": runs,
        "profiles": profiles,
    }


def print_table(result: dict[str, Any]) -> None:
    print()
    print(
        f"webhook intake — {result['machine']['cpus']} CPUs, pin={result['config']['pin']}, "
        f"{result['config']['duration_s']:g}s x {result['config']['rounds']} rounds per target and level"
    )
    header = (
        f"{'c':>4}  {'app':<8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"{'CPU us/req':>11}{'other CPUs':>12}"
    )
    print(header)
    print("-" * len(header))
    for level in result["levels"]:
        for name in TARGETS:
            row = level[name]
            print(
                f"{level['concurrency']:>4}  {name:<8}{row['throughput_rps']:>9.0f}{row['p50_ms']:>9.2f}"
                f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.1f}{row['errors']:>8}"
                f"{row['app_cpu_us_per_request']:>11.0f}{row['foreign_cpus_max']:>12.2f}"
            )
    print()
    header = f"{'c':>4}  {'p50 ours/floor':>15}{'req/s ours/floor':>18}{'CPU/req ours/floor':>20}  targets"
    print(header)
    print("-" * 72)
    for level in result["levels"]:
        verdict = ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in level["targets"].items())
        print(
            f"{level['concurrency']:>4}  {level['p50_ratio']:>15.2f}{level['throughput_ratio']:>18.2f}"
            f"{level['cpu_ratio']:>20.2f}  {verdict}"
        )
    for name, prof in result.get("profiles", {}).items():
        top = prof.get("top")
        if not top:
            continue
        print()
        print(f"py-spy, {name} under load — hottest frames by own time:")
        for row in top["own"][:10]:
            print(f"  {row['share']:>6.1%}  {row['frame']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 200], metavar="C")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per wrk run (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="ABAB rounds per level (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per app (default 3)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of quiet before each run (default 1)")
    parser.add_argument("--requests", type=int, default=50_000, help="pre-signed requests per run (default 50000)")
    parser.add_argument(
        "--senders", type=int, default=20_000, help="distinct WhatsApp senders, used round-robin (default 20000)"
    )
    parser.add_argument("--pin", choices=sorted(PIN), default="split", help="CPU placement (default split)")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="hold each run until other processes use fewer CPUs than this (default 0.15)",
    )
    parser.add_argument("--quiet-wait", type=float, default=90.0, help="but wait at most this long (default 90 s)")
    parser.add_argument("--profile", action="store_true", help="also profile both apps with py-spy (extra runs)")
    parser.add_argument("--profile-concurrency", type=int, default=50)
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with service and wrk logs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.rounds < 1 or args.rounds > 10:
        parser.error("--duration must be in (0, 600] and --rounds in [1, 10]")
    return run_and_report(args, run_bench, print_table)


if __name__ == "__main__":
    sys.exit(main())
