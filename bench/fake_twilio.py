"""A tiny fake of Twilio's Messages API for the end-to-end benchmark, in its own process.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (what `twilio.rest.Client.messages.create`
sends) is checked for HTTP basic auth, answered 201 with a message resource the official client
parses, and reported on stdout as one JSON line, `{"t": <CLOCK_MONOTONIC seconds>, "wall": <time.time()>,
"to": ..., "sid": ...}`, the moment it arrived. CLOCK_MONOTONIC is system-wide on Linux, so the benchmark
compares it with its own clock. `GET .../Messages.json` lists what was sent (`To`/`From` filters,
newest first, one page), which the send activity reads before retrying an interrupted send.
Nothing else: no status callbacks, no validation beyond To/Body.

    .venv/bin/python bench/fake_twilio.py --port 8200 --account-sid AC... --auth-token ...
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

_JSON = [(b"content-type", b"application/json")]


class FakeTwilio:
    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.sent: list[dict[str, Any]] = []
        self.authorization = b"Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        arrived, wall = time.monotonic(), time.time()
        if scope["method"] not in ("POST", "GET") or scope["path"] != self.path:
            await _respond(send, 404, {"code": 20404, "message": "not found", "status": 404})
            return
        if dict(scope["headers"]).get(b"authorization") != self.authorization:
            await _respond(send, 401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        if scope["method"] == "GET":
            await self._list(scope, send)
            return
        form = dict(parse_qsl(b"".join(chunks).decode(), keep_blank_values=True))
        if not form.get("To") or not form.get("Body"):
            await _respond(send, 400, {"code": 21604, "message": "A 'To' and a 'Body' are required", "status": 400})
            return
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(
            {
                "sid": sid,
                "to": form["To"],
                "from": form.get("From"),
                "body": form["Body"],
                "status": "queued",
                "date_created": formatdate(wall, usegmt=True),
            }
        )
        del self.sent[:-10_000]
        report = {"t": arrived, "wall": wall, "to": form["To"], "sid": sid, "chars": len(form["Body"])}
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        await _respond(
            send,
            201,
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"],
                "from": form.get("From"),
                "body": form["Body"],
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"{self.path[:-5]}/{sid}.json",
            },
        )

    async def _list(self, scope: dict[str, Any], send: Any) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        size = max(1, min(int(query.get("PageSize", "50") or 50), 1000))
        found = [
            {**m, "account_sid": self.account_sid, "direction": "outbound-api", "api_version": "2010-04-01"}
            for m in reversed(self.sent)
            if query.get("To", m["to"]) == m["to"] and query.get("From", m["from"]) == m["from"]
        ][:size]
        uri = f"{self.path}?PageSize={size}&Page=0"
        await _respond(
            send,
            200,
            {
                "messages": found,
                "start": 0,
                "end": max(len(found) - 1, 0),
                "page": 0,
                "page_size": size,
                "uri": uri,
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
            },
        )


async def _respond(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    args = parser.parse_args()
    uvicorn.run(
        FakeTwilio(args.account_sid, args.auth_token),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
