"""The inbound WhatsApp webhook's fast path answers exactly as the FastAPI route does (no services)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from core.settings import Settings
from gateway.app import InboundWebhookFastPath, create_app

PUBLIC = "http://gateway.test"
TOKEN = "d" * 32
PATH = "/api/v1/webhooks/whatsapp"


class _Producer:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.records: list[tuple[str, bytes | None, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.records.append((topic, key, value))


class _Holder:
    def __init__(self, fail: bool = False) -> None:
        self.producer = _Producer(fail)

    async def get(self) -> _Producer:
        return self.producer

    async def close(self) -> None:
        return None


def _settings() -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        twilio_auth_token=SecretStr(TOKEN),
        public_base_url=PUBLIC,
        rate_limit_whatsapp="2/minute",
        kafka_topic_inbound="fast.path.inbound",
    )


def _without_fast_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not InboundWebhookFastPath]
    return app


async def _client(app: FastAPI, *, broker_fails: bool = False) -> AsyncIterator[tuple[httpx.AsyncClient, _Holder]]:
    async with LifespanManager(app) as manager:
        holder = _Holder(fail=broker_fails)
        app.state.resources.kafka = holder
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
            yield http, holder


def _signed(params: dict[str, str]) -> dict[str, Any]:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + PATH, params)
    return {"content": urlencode(params).encode(), "headers": _form_headers(signature)}


def _form_headers(signature: str | None) -> dict[str, str]:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return headers


def _params(phone: str, body: str = "How do I add a checklist?") -> dict[str, str]:
    return {"MessageSid": f"SM{phone[1:]:0>32}", "From": f"whatsapp:{phone}", "Body": body, "ProfileName": "Sam"}


def _scenario() -> list[tuple[str, dict[str, Any]]]:
    phone = "+15550001111"
    return [
        ("accepted", {"method": "POST", "url": PATH, **_signed(_params(phone))}),
        ("second", {"method": "POST", "url": PATH, **_signed(_params(phone, "and another"))}),
        ("rate limited", {"method": "POST", "url": PATH, **_signed(_params(phone, "a third"))}),
        ("other sender", {"method": "POST", "url": PATH, **_signed(_params("+15550002222"))}),
        ("no signature", {"method": "POST", "url": PATH, "content": b"MessageSid=SM1", "headers": _form_headers(None)}),
        (
            "bad signature",
            {"method": "POST", "url": PATH, "content": b"MessageSid=SM1", "headers": _form_headers("AA")},
        ),
        (
            "json",
            {"method": "POST", "url": PATH, "json": {"MessageSid": "SM1"}, "headers": {"X-Twilio-Signature": "A"}},
        ),
        ("no sid", {"method": "POST", "url": PATH, **_signed({"From": "whatsapp:+15550003333", "Body": "hi"})}),
        ("bad from", {"method": "POST", "url": PATH, **_signed({"MessageSid": "SM9", "From": "x", "Body": "hi"})}),
        ("get", {"method": "GET", "url": PATH}),
        ("trailing slash", {"method": "POST", "url": PATH + "/", **_signed(_params("+15550004444"))}),
        (
            "too big",
            {"method": "POST", "url": PATH, "content": b"x" * (2 * 1024 * 1024), "headers": _form_headers("A")},
        ),
    ]


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    # Retry-After is compared apart: it counts whole seconds down between the two runs.
    headers = {k: v for k, v in response.headers.items() if k in ("content-type", "allow", "location")}
    headers["has-retry-after"] = str("retry-after" in response.headers)
    body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    return response.status_code, headers, body if body is not None else response.text


async def _run(app: FastAPI) -> tuple[list[tuple[str, tuple[int, dict[str, str], Any]]], list[Any]]:
    answers = []
    async for http, holder in _client(app):
        for name, request in _scenario():
            answers.append((name, _comparable(await http.request(**request))))
        records = [(topic, key, json.loads(value or b"{}")) for topic, key, value in holder.producer.records]
    return answers, records


def _normalised(records: list[Any]) -> list[Any]:
    return [(topic, key, {k: v for k, v in value.items() if k != "received_at"}) for topic, key, value in records]


async def test_the_fast_path_answers_every_case_as_the_fastapi_route_does() -> None:
    fast_app = create_app(_settings())
    assert any(m.cls is InboundWebhookFastPath for m in fast_app.user_middleware)
    fast, fast_records = await _run(fast_app)
    slow, slow_records = await _run(_without_fast_path(create_app(_settings())))
    assert fast == slow
    by_name = dict(fast)
    assert by_name["accepted"][0] == 200 and by_name["accepted"][1]["content-type"].startswith("text/xml")
    assert by_name["rate limited"][0] == 429 and by_name["rate limited"][1]["has-retry-after"] == "True"
    assert "try again in" in by_name["rate limited"][2]["message"]
    assert by_name["rate limited"][2]["error"] == "rate_limited"
    assert by_name["no signature"][0] == 403 and by_name["bad signature"][0] == 403
    assert by_name["json"][0] == 400 and by_name["no sid"][0] == 400 and by_name["bad from"][0] == 400
    assert by_name["get"][0] == 405 and by_name["too big"][0] == 413
    assert len(fast_records) == 3 and _normalised(fast_records) == _normalised(slow_records)
    assert fast_records[0][:2] == ("fast.path.inbound", b"whatsapp:+15550001111")


async def test_a_broker_outage_is_503_on_the_fast_path_too() -> None:
    for app in (create_app(_settings()), _without_fast_path(create_app(_settings()))):
        async for http, _ in _client(app, broker_fails=True):
            response = await http.post(PATH, **_signed(_params("+15550005555")))
            assert response.status_code == 503 and response.json()["error"] == "service_unavailable"


async def test_the_fast_path_is_labelled_with_the_route_in_the_latency_metric() -> None:
    labels = {"method": "POST", "route": PATH, "status": "200"}
    before = REGISTRY.get_sample_value("crm_fte_http_request_seconds_count", labels) or 0.0
    async for http, _ in _client(create_app(_settings())):
        assert (await http.post(PATH, **_signed(_params("+15550006666")))).status_code == 200
    assert REGISTRY.get_sample_value("crm_fte_http_request_seconds_count", labels) == before + 1


@pytest.mark.parametrize("tracing", [False, True])
def test_the_fast_path_is_installed_only_with_tracing_off(tracing: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.app

    monkeypatch.setattr(gateway.app, "configure_tracing", lambda settings, name: tracing)
    app = create_app(_settings())
    assert any(m.cls is InboundWebhookFastPath for m in app.user_middleware) is not tracing
