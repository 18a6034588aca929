"""A tiny recording HTTP receiver for webhooks the fakes send (Twilio status callbacks, ...).

Any method on any path is recorded in ``requests`` (see ``RecordedRequest``) and answered
with ``status`` / ``body`` / ``content_type`` (changeable at any time, e.g. to make the
receiver fail with 500); ``fail_next(503, times=2)`` answers only the next requests with a
failure.  ``url("/twilio/status")`` builds an absolute URL on the sink.
"""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from ._server import FakeServer, RecordedRequest, wait_for

__all__ = ["WebhookSink"]


class WebhookSink(FakeServer):
    def __init__(
        self, *, tls: bool = False, status: int = 200, body: str = "", content_type: str = "text/plain"
    ) -> None:
        super().__init__(tls=tls)
        self.status = status
        self.body = body
        self.content_type = content_type
        self._failures: list[int] = []
        self._failures_lock = threading.Lock()

    def fail_next(self, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (then ``status``/``body`` again)."""
        with self._failures_lock:
            self._failures.extend([status] * times)

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def build_app(self) -> ASGIApp:
        async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            request = Request(scope, receive)
            await request.body()
            with self._failures_lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                response = Response("", status_code=failure, media_type="text/plain")
            else:
                response = Response(self.body, status_code=self.status, media_type=self.content_type)
            await response(scope, receive, send)

        return app

    def wait_for_requests(self, count: int, path: str = "/", timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests to paths under ``path`` arrived."""
        return wait_for(lambda: (found := self.requests_to(path)) and len(found) >= count and found, timeout)
