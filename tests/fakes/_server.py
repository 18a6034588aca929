"""Shared machinery for the local SaaS fakes.

Every fake is an ASGI app served by uvicorn on ``127.0.0.1`` (a free port chosen by
the kernel) from a daemon thread with its own event loop, so both sync clients
(twilio, googleapiclient) and async clients running on the test's loop can talk to
it over real TCP.  ``FakeServer`` is a context manager (sync and async) and records
every HTTP request it receives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import ipaddress
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")

_STARTUP_TIMEOUT = 5.0
_SHUTDOWN_TIMEOUT = 10.0


@dataclass
class RecordedRequest:
    """One HTTP request as the fake received it (body fully buffered)."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)
    status: int | None = None  # response status, filled in once the response starts

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


class _RecordingMiddleware:
    """Buffers the request body, records the request, then replays the body to the app."""

    def __init__(self, app: ASGIApp, owner: FakeServer) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
        self.owner._add_request(record)

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                if self.owner.tls:
                    # Idle TLS keep-alive connections would stall uvicorn's graceful shutdown
                    # (asyncio waits for the peer's close_notify), so close after each response.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, replay, capture)


class FakeServer:
    """Base class: subclasses implement :meth:`build_app` and expose domain-specific state."""

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._startup_error: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ subclass API
    def build_app(self) -> ASGIApp:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with ``tls=True``), no trailing slash."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_cert_path(self) -> str:
        """With ``tls=True``: PEM file of the fake's self-signed certificate (trust it as a CA)."""
        if self._tls_dir is None:
            raise RuntimeError(f"{type(self).__name__} is not running with tls=True")
        return os.path.join(self._tls_dir.name, "cert.pem")

    def _write_tls_files(self) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._tls_dir = tempfile.TemporaryDirectory(prefix="fake-tls-")
        key_path = os.path.join(self._tls_dir.name, "key.pem")
        with open(key_path, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        with open(self.ca_cert_path, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_cert_path, key_path

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def server_thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        app = _RecordingMiddleware(self.build_app(), self)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        tls_files: dict[str, Any] = {}
        if self.tls:
            cert_path, key_path = self._write_tls_files()
            tls_files = {"ssl_certfile": cert_path, "ssl_keyfile": key_path}
        config = uvicorn.Config(
            app,
            **tls_files,
            lifespan="off",
            loop="asyncio",
            ws="none",
            log_config=None,  # leave the process's logging configuration alone
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                with asyncio.Runner() as runner:
                    self._loop = runner.get_loop()
                    runner.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # uvicorn raises SystemExit on startup failure
                self._startup_error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}:{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"{type(self).__name__} failed to start") from self._startup_error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{type(self).__name__} did not start within {_STARTUP_TIMEOUT}s")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None and thread.is_alive() and self._tasks:
            # Let background work (e.g. status callbacks) finish before the loop goes away.
            future = asyncio.run_coroutine_threadsafe(self._drain_tasks(), loop)
            try:
                future.result(timeout=_SHUTDOWN_TIMEOUT)
            except Exception:
                future.cancel()
        server.should_exit = True
        thread.join(timeout=_SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=_SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not shut down")
        self._thread = None
        self._server = None
        self._loop = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    async def _drain_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ background work
    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | asyncio.Task[T]:
        """Run ``coro`` on the server's loop; callable from the server thread or any other thread.

        The fake waits for spawned work to finish before it shuts down.
        """
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task

        async def tracked() -> T:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await coro
            finally:
                self._tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(tracked(), loop)

    # ------------------------------------------------------------------ recorded requests
    def _add_request(self, record: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(record)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        with self._requests_lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(path_prefix) and (method is None or r.method == method.upper())
            ]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll ``predicate`` (from a sync test) until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], T | Awaitable[T]], within: float = 5.0, interval: float = 0.01) -> T:
    """Async twin of :func:`wait_for` (``within`` seconds); ``predicate`` may be sync or async."""
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            await asyncio.sleep(interval)
