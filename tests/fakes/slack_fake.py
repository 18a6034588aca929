"""A local stand-in for Slack's incoming webhooks (``POST https://hooks.slack.com/services/T…/B…/…``).

Wire format as Slack documents it: a JSON body with ``text`` and/or ``blocks``; the answer is
``200`` with the body ``ok``; errors are a status with a short plain-text code: ``400
invalid_payload`` (not JSON), ``400 no_text`` (neither text nor blocks), ``404 no_service`` (an
unknown or revoked webhook URL), ``429`` with ``Retry-After`` seconds when rate limited, ``500
rollup_error`` when Slack itself fails.

``webhook_url`` is the one URL the fake accepts. ``posts`` holds the JSON of every accepted
message. ``fail_next(status, body, times=, retry_after=)`` queues failures, served before any
success; ``revoke()`` makes the URL answer ``404 no_service`` from now on.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ._server import FakeServer

__all__ = ["SlackFake"]


@dataclass
class _Failure:
    status: int
    body: str
    retry_after: int | None


class SlackFake(FakeServer):
    def __init__(self, *, tls: bool = False) -> None:
        super().__init__(tls=tls)
        self.path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/{secrets.token_hex(12)}"
        self.posts: list[dict[str, Any]] = []
        self.revoked = False
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.path

    def fail_next(self, status: int, body: str, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` posts with ``status`` / ``body`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.extend(_Failure(status, body, retry_after) for _ in range(times))

    def recover(self) -> None:
        """Drop the queued failures: the next post succeeds."""
        with self._lock:
            self._failures.clear()

    def revoke(self) -> None:
        """The webhook was removed in Slack: every post gets ``404 no_service``."""
        self.revoked = True

    def build_app(self) -> Starlette:
        async def post(request: Request) -> Response:
            if self.revoked or request.url.path != self.path:
                return PlainTextResponse("no_service", status_code=404)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
                return PlainTextResponse(failure.body, status_code=failure.status, headers=headers)
            try:
                payload = json.loads(await request.body())
            except ValueError:
                return PlainTextResponse("invalid_payload", status_code=400)
            if not isinstance(payload, dict):
                return PlainTextResponse("invalid_payload", status_code=400)
            if not payload.get("text") and not payload.get("blocks"):
                return PlainTextResponse("no_text", status_code=400)
            if "blocks" in payload and not isinstance(payload["blocks"], list):
                return PlainTextResponse("invalid_blocks", status_code=400)
            with self._lock:
                self.posts.append(payload)
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/{path:path}", post, methods=["POST"])])
