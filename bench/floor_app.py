"""The floor for the webhook-intake benchmark: the least an app can do for a Twilio webhook.

A raw ASGI app that does exactly the gateway's necessary work and nothing else: read the form
body, parse it, check `X-Twilio-Signature` with twilio's `RequestValidator` against the public
URL, produce one record to the same topic with the same producer settings
(`core.kafka.producer_kwargs`: acks=all, linger 0, idempotence as configured), wait for the
broker's acknowledgement, answer the empty TwiML. No framework, no middleware, no validation
model, no metrics, no logging.

Run it under the same uvicorn settings as `crm-fte gateway`:

    KAFKA_BOOTSTRAP_SERVERS=... TWILIO_AUTH_TOKEN=... PUBLIC_BASE_URL=... \\
        .venv/bin/python bench/floor_app.py --port 8100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from core.kafka import producer_kwargs  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_XML = [(b"content-type", b"text/xml; charset=utf-8"), (b"content-length", str(len(EMPTY_TWIML)).encode())]


class FloorApp:
    """Form parse + signature check + acks=all produce, as a bare ASGI callable."""

    def __init__(self, settings: Settings) -> None:
        if settings.twilio_auth_token is None or settings.public_base_url is None:
            raise SystemExit("floor_app: TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL are required")
        self.settings = settings
        self.validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
        self.base = str(settings.public_base_url).rstrip("/")
        self.producer: AIOKafkaProducer | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        params = dict(parse_qsl(b"".join(chunks).decode(), keep_blank_values=True))
        signature = next((v.decode() for k, v in scope["headers"] if k == b"x-twilio-signature"), "")
        if not signature or not self.validator.validate(self.base + scope["path"], params, signature):
            await _respond(send, 403, [(b"content-length", b"0")], b"")
            return
        assert self.producer is not None
        await self.producer.send_and_wait(
            self.settings.kafka_topic_inbound,
            value=json.dumps(params).encode(),
            key=f"whatsapp:{params.get('From', '')}".encode(),
        )
        await _respond(send, 200, _XML, EMPTY_TWIML)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.producer = AIOKafkaProducer(**producer_kwargs(self.settings))
                await self.producer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.producer is not None:
                    await self.producer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    from workers.cli import gateway_server_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Exactly the uvicorn settings of `crm-fte gateway` (workers/cli.py).
    settings = get_settings()
    uvicorn.Server(gateway_server_config(FloorApp(settings), settings, host=args.host, port=args.port)).run()


if __name__ == "__main__":
    main()
