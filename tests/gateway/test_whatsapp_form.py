"""Twilio's form body and signature, checked on a bare request (no services)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from core.errors import BadRequest, Forbidden
from core.settings import Settings
from gateway.whatsapp import MAX_FORM_FIELDS, verified_form

TOKEN = "f" * 32
PUBLIC = "https://crm.example.com"
PATH = "/api/v1/webhooks/whatsapp"


class _MultiDict(dict[str, list[str]]):
    """What Twilio signs when a name repeats: every value (twilio's validator reads `getall`)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"twilio_auth_token": SecretStr(TOKEN), "public_base_url": PUBLIC, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _request(
    body: bytes,
    *,
    signature: str | None,
    content_type: str | None = "application/x-www-form-urlencoded",
    query: bytes = b"",
) -> Request:
    headers = [(b"host", b"gateway:8000"), (b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if signature is not None:
        headers.append((b"x-twilio-signature", signature.encode("latin-1")))
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "server": ("gateway", 8000),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _sign(params: Any, url: str = PUBLIC + PATH) -> str:
    return RequestValidator(TOKEN).compute_signature(url, params)


PARAMS = {"MessageSid": "SM" + "1" * 32, "From": "whatsapp:+15551230000", "Body": "hi there & more = fun +1%"}


async def test_a_signed_form_is_read() -> None:
    form = await verified_form(_request(urlencode(PARAMS).encode(), signature=_sign(PARAMS)), _settings())
    assert form == PARAMS


async def test_the_content_type_may_carry_a_charset_and_the_url_a_port_and_a_query() -> None:
    request = _request(
        urlencode(PARAMS).encode(),
        signature=_sign(PARAMS, f"{PUBLIC}:443{PATH}?tenant=a%20b"),
        content_type="Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        query=b"tenant=a%20b",
    )
    assert await verified_form(request, _settings()) == PARAMS


async def test_a_repeated_field_is_checked_with_all_its_values_and_read_as_the_last() -> None:
    body = urlencode([*PARAMS.items(), ("MediaUrl0", "https://a.example/1"), ("MediaUrl0", "https://a.example/2")])
    signed_all = _MultiDict(
        {k: [v] for k, v in PARAMS.items()} | {"MediaUrl0": ["https://a.example/1", "https://a.example/2"]}
    )
    form = await verified_form(_request(body.encode(), signature=_sign(signed_all)), _settings())
    assert form["MediaUrl0"] == "https://a.example/2"
    # A signature over only one of the values is not Twilio's: refused.
    signed_last = {**PARAMS, "MediaUrl0": "https://a.example/2"}
    with pytest.raises(Forbidden):
        await verified_form(_request(body.encode(), signature=_sign(signed_last)), _settings())


async def test_nul_is_dropped_after_the_signature_check() -> None:
    params = {**PARAMS, "Body": "hi\x00 there", "Profile\x00Name": "Sam\x00"}
    form = await verified_form(_request(urlencode(params).encode(), signature=_sign(params)), _settings())
    assert form["Body"] == "hi there" and form["ProfileName"] == "Sam"


@pytest.mark.parametrize(
    ("signature", "settings"),
    [
        (None, {}),
        ("", {}),
        ("AAAA", {}),
        ("sig\xe9", {}),  # not ASCII: refused, not a 500
        (_sign(PARAMS), {"twilio_auth_token": None}),
        (_sign(PARAMS), {"public_base_url": "https://elsewhere.example.com"}),
    ],
)
async def test_missing_or_wrong_signatures_are_403(signature: str | None, settings: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        await verified_form(_request(urlencode(PARAMS).encode(), signature=signature), _settings(**settings))


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"MessageSid": "SM1"}', "application/json", "content-type application/json"),
        (b"--xyz\r\n", "multipart/form-data; boundary=xyz", "content-type multipart/form-data"),
        (b"MessageSid=SM1", None, "content-type none"),
        (b"MessageSid=SM\xff\xfe&Body=caf\xe9", "application/x-www-form-urlencoded", "UTF-8"),
        (b"MessageSid=SM1&Body=%FF%FE", "application/x-www-form-urlencoded", "UTF-8"),
        (
            "&".join(f"f{i}=v" for i in range(MAX_FORM_FIELDS + 1)).encode(),
            "application/x-www-form-urlencoded",
            f"at most {MAX_FORM_FIELDS} fields",
        ),
    ],
)
async def test_bodies_that_are_not_a_twilio_form_are_400(body: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        await verified_form(_request(body, signature="AAAA", content_type=content_type), _settings())
    assert reason in refused.value.message


async def test_an_empty_body_without_content_type_is_an_empty_form() -> None:
    assert await verified_form(_request(b"", signature=_sign({}), content_type=None), _settings()) == {}


async def test_at_most_the_field_limit_is_accepted_and_blank_values_are_kept() -> None:
    params = {f"f{i}": "" for i in range(MAX_FORM_FIELDS)}
    form = await verified_form(_request(urlencode(params).encode(), signature=_sign(params)), _settings())
    assert form == params
