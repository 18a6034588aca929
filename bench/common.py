"""What the process benchmarks share: the embedded services, child processes, figures.

Every child runs in its own session with a parent-death signal (the project's ManagedProcess),
is registered in one `Children` list and is stopped in reverse order on exit, on Ctrl-C and on
SIGTERM, so a benchmark leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Running as `python bench/x.py` puts bench/ (not the repo) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from workers.embedded import (  # noqa: E402
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedTemporal,
    ManagedProcess,
    free_port,
    wait_for_tcp,
)

RESULTS_DIR = REPO_ROOT / "bench" / "results"
# Variables a developer may have exported that must not leak into the children.
_AMBIENT = {
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "KAFKA_BOOTSTRAP_SERVERS",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_BASE_URL",
    "PUBLIC_BASE_URL",
    "TWILIO_EDGE",
    "TWILIO_REGION",
}
PUBLIC_BASE_URL = "https://crm.bench.test"
WHATSAPP_PATH = "/api/v1/webhooks/whatsapp"
WHATSAPP_FROM = "+14155550000"


# --------------------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        memory_gib = round(kib / 1024 / 1024, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def run_and_report(
    args: Any, run: Callable[[Any], dict[str, Any]], print_table: Callable[[dict[str, Any]], None]
) -> int:
    """A benchmark's main: run it, print its table, write `--json`; 130 on Ctrl-C (all stopped)."""
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        return 130
    print_table(result)
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of the process's resident set (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples the resident set of some processes every `interval` seconds in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self._procs.items():
                with contextlib.suppress(Exception):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class ForeignLoad:
    """CPU used by processes outside this benchmark's process tree (other people's test runs).

    On a shared 2-core machine a figure taken while someone else's test suite runs says little,
    so every run records the foreign load beside its figures, and `wait_quiet` can hold a run back
    until the machine is quiet. Approximate: it scans /proc at the start and the end of a window,
    so a process that lives and dies inside the window is not seen.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = os.getpid()
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    def _ours(self) -> set[int]:
        try:
            me = self._psutil.Process(self._me)
            return {self._me, *(p.pid for p in me.children(recursive=True))}
        except self._psutil.Error:
            return {self._me}

    def _snapshot(self) -> dict[int, float]:
        ours = self._ours()
        times: dict[int, float] = {}
        for proc in self._psutil.process_iter(["cpu_times"]):
            if proc.pid in ours:
                continue
            cpu = proc.info.get("cpu_times")
            if cpu is not None:
                times[proc.pid] = cpu.user + cpu.system
        return times

    def start(self) -> None:
        self._start = self._snapshot()
        self._t0 = time.monotonic()

    def stop(self) -> float:
        """Average number of CPUs the foreign processes kept busy since start()."""
        end = self._snapshot()
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        used = sum(max(0.0, t - self._start.get(pid, 0.0)) for pid, t in end.items())
        return round(used / elapsed, 3)

    def measure(self, seconds: float) -> float:
        self.start()
        time.sleep(seconds)
        return self.stop()


def wait_quiet(load: ForeignLoad, *, threshold: float, max_wait: float, window: float = 2.0) -> float:
    """Wait (at most `max_wait` s) until foreign processes use under `threshold` CPUs; returns the last figure."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        busy = load.measure(window)
        if busy <= threshold or time.monotonic() >= deadline:
            return busy
        if not announced:
            print(f"    (waiting for a quiet machine: other processes use {busy:.2f} CPUs)", flush=True)
            announced = True


class CpuMeter:
    """CPU seconds (user + system, all threads, plus live child processes) of named processes.

    Unlike latency, CPU time per request or per turn hardly moves when other processes compete
    for the cores, so it is the figure to compare on a busy machine.
    """

    def __init__(self, pids: dict[str, int], *, without_children: frozenset[str] = frozenset()) -> None:
        import psutil

        self._psutil = psutil
        self._alone = without_children
        self._procs = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self._procs[name] = psutil.Process(pid)
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, proc in self._procs.items():
            total = 0.0
            with contextlib.suppress(self._psutil.Error):
                cpu = proc.cpu_times()
                total = cpu.user + cpu.system
                for child in [] if name in self._alone else proc.children(recursive=True):
                    with contextlib.suppress(self._psutil.Error):
                        c = child.cpu_times()
                        total += c.user + c.system
            used[name] = total
        return used

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds each process used since start()."""
        end = self._read()
        return {name: round(end[name] - self._start.get(name, 0.0), 3) for name in end}


# ------------------------------------------------------------------------------------- processes


def taskset_prefix(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` in front of a command (every thread it starts inherits the mask)."""
    return ["taskset", "-c", cpus] if cpus else []


def pin_process(pid: int, cpus: str | None) -> None:
    """Move an already running process (all its threads) onto CPUS."""
    if cpus:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours minus any ambient service settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Children:
    """Every process a benchmark started, stopped in reverse order exactly once."""

    processes: list[ManagedProcess] = field(default_factory=list)

    def add(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)
        return process

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        stop_timeout: float = 20.0,
        on_line: Callable[[str], None] | None = None,
    ) -> ManagedProcess:
        process: ManagedProcess
        if on_line is not None:
            process = PipedProcess(
                name=name,
                argv=list(argv),
                env=env,
                log_path=log_path,
                cwd=REPO_ROOT,
                stop_timeout=stop_timeout,
                on_line=on_line,
            )
        else:
            process = ManagedProcess(
                name=name, argv=list(argv), env=env, log_path=log_path, cwd=REPO_ROOT, stop_timeout=stop_timeout
            )
        self.add(process)
        process.start()
        return process

    def stop(self, process: ManagedProcess) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self.processes.remove(process)

    def stop_all(self) -> None:
        while self.processes:
            process = self.processes.pop()
            with contextlib.suppress(Exception):
                process.stop()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it if the benchmark dies.
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class PipedProcess(ManagedProcess):
    """A child whose stdout lines go to `on_line` (from a reader thread); stderr goes to the log."""

    on_line: Callable[[str], None] | None = None
    _reader: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in self.popen.stdout:
            if self.on_line is not None:
                with contextlib.suppress(Exception):
                    self.on_line(raw.decode(errors="replace").rstrip("\n"))


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, and a second signal cannot abort the clean-up."""
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process exited")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f}s")


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------------------------- the services


@dataclass
class Services:
    """Real PostgreSQL (+migrations), Temporal dev server and tansu broker on free ports in a temp dir."""

    children: Children
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="crm-fte-bench-")))
    postgres: EmbeddedPostgres | None = None
    temporal: EmbeddedTemporal | None = None
    kafka: EmbeddedKafka | None = None
    topic: str = field(default_factory=lambda: f"bench.inbound.{uuid.uuid4().hex[:8]}")
    dead_letter: str = field(default_factory=lambda: f"bench.dlq.{uuid.uuid4().hex[:8]}")
    partitions: int = 6

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def start(self, *, temporal: bool = True, kafka_cpus: str | None = None) -> None:
        from crm import db

        self.postgres = EmbeddedPostgres(self.directory, free_port(), self.logs, database="crm_fte_bench")
        self.postgres.start()
        assert self.postgres.process is not None
        self.children.add(self.postgres.process)
        db.upgrade(self.postgres.url())
        if temporal:
            self.temporal = EmbeddedTemporal(self.directory, free_port(), free_port(), self.logs, headless=True)
            self.temporal.start()
            assert self.temporal.process is not None
            self.children.add(self.temporal.process)
            asyncio.run(self._search_attributes())
        self.kafka = EmbeddedKafka(free_port(), self.logs)
        self.kafka.start()
        assert self.kafka.process is not None and self.kafka.process.pid is not None
        self.children.add(self.kafka.process)
        pin_process(self.kafka.process.pid, kafka_cpus)
        asyncio.run(self._topics())

    def settings_env(self) -> dict[str, str]:
        """The variables every app process gets (as `crm-fte up` would pass them)."""
        assert self.postgres is not None
        env = {
            "DATABASE_URL": self.postgres.url(),
            # tansu has no idempotent producer (InitProducerId); the project's `up` does the same.
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "KAFKA_TOPIC_INBOUND": self.topic,
            "KAFKA_TOPIC_DEAD_LETTER": self.dead_letter,
            "KAFKA_TOPIC_PARTITIONS": str(self.partitions),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
        if self.temporal is not None:
            env["TEMPORAL_ADDRESS"] = self.temporal.address
        if self.kafka is not None:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap_servers
        return env

    def settings(self, **extra: Any) -> Any:
        from core.settings import Settings

        fields = {k.lower(): v for k, v in self.settings_env().items()}
        fields.update(extra)
        return Settings(_env_file=None, **fields)  # type: ignore[call-arg]

    async def _search_attributes(self) -> None:
        from core.temporal import connect_temporal
        from workers.temporal_setup import ensure_search_attributes

        await ensure_search_attributes(await connect_temporal(self.settings()))

    async def _topics(self) -> None:
        from core.kafka import ensure_topics

        await ensure_topics(self.settings())

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


def open_log(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a")


def log_tail(path: Path, lines: int = 8) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_port(host: str, port: int, timeout: float, process: ManagedProcess) -> None:
    if not wait_for_tcp(host, port, timeout, alive=process.alive):
        raise RuntimeError(f"{process.name} did not listen on {host}:{port}: {process.log_tail(5)}")


# --------------------------------------------------------------------------------------- py-spy


def py_spy_path() -> str | None:
    import shutil

    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("py-spy")


def top_frames(raw_path: Path, limit: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the hottest frames of the main (event-loop) thread.

    Samples of other threads (thread pools, the Temporal SDK's bridge threads) are counted apart:
    their stacks are mostly idle waits that would drown the event loop's frames.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    main_total = other_total = 0
    other_own: dict[str, int] = {}
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[0].startswith("Thread._bootstrap"):
            other_total += count
            other_own[frames[-1]] = other_own.get(frames[-1], 0) + count
            continue
        main_total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int], total: int) -> list[dict[str, Any]]:
        rows = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [{"frame": frame, "samples": n, "share": round(n / total, 4) if total else 0.0} for frame, n in rows]

    # Frames every main-thread sample has (the process's entry point) say nothing: drop them.
    inclusive = {f: n for f, n in inclusive.items() if n < main_total}
    return {
        "main_thread_samples": main_total,
        "other_thread_samples": other_total,
        "own": ranked(own, main_total),
        "inclusive": ranked(inclusive, main_total),
        "other_threads_own": ranked(other_own, other_total)[:5],
    }


def code_state() -> dict[str, Any]:
    """The commit measured and whether product files had uncommitted changes."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    # Porcelain lines are "XY path": the status takes the first three characters.
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_product_files": dirty}
