"""The gateway as production runs it (uvicorn on a real port), in a thread of the test process:
for what an in-process ASGI transport cannot show (a browser, a server-sent-events stream)."""

from __future__ import annotations

import threading
import time

import uvicorn

from core.settings import Settings
from gateway.app import create_app


class ThreadedGateway:
    """`crm-fte gateway` as production runs it (uvicorn), in a thread of this test process."""

    def __init__(self, settings: Settings, port: int) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            # A page still open in the browser keeps its server-sent-events stream open, which never ends
            # by itself: production gives it 20 s (`crm-fte gateway`); a test stops at once.
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.started:
                return
            if not self.thread.is_alive():
                raise RuntimeError("the gateway thread exited during start-up")
            time.sleep(0.05)
        raise RuntimeError(f"the gateway did not start within {timeout}s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
