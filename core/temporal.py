"""The Temporal client factory: one place that knows about TLS, API keys and the data converter."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import TLSConfig

from core.observability import temporal_interceptors
from core.settings import Settings

# Whether this process has tried to connect a client: the Temporal runtime's threads run in it from the
# first attempt, whether or not the server answered.
_connected = False


def client_connected() -> bool:
    """Whether `connect_temporal` has been called in this process (workers.cli's exit reads it)."""
    return _connected


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS when a client cert is configured; plain TLS for API-key auth (Temporal Cloud)."""
    if settings.temporal_tls_cert_path or settings.temporal_tls_ca_path:
        return TLSConfig(
            client_cert=_read(settings.temporal_tls_cert_path),
            client_private_key=_read(settings.temporal_tls_key_path),
            server_root_ca_cert=_read(settings.temporal_tls_ca_path),
        )
    return bool(settings.temporal_tls or settings.temporal_api_key)


async def connect_temporal(settings: Settings, *, identity: str | None = None) -> Client:
    """Connect to the configured Temporal namespace with the pydantic data converter."""
    global _connected
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    kwargs: dict[str, object] = {}
    if identity:
        kwargs["identity"] = identity
    _connected = True
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls_config(settings),
        api_key=api_key,
        interceptors=temporal_interceptors(settings),
        **kwargs,  # type: ignore[arg-type]  # identity is `str`; a typed dict of it would not match connect()'s overloads
    )


def update_refusal(exc: WorkflowUpdateFailedError) -> str:
    """Why a workflow refused an update, in its own words: the validator's ValueError, or an
    ApplicationError its handler raised, without the exception type (at most 300 characters)."""
    cause = exc.cause
    return str(cause.message if isinstance(cause, ApplicationError) else (cause or exc))[:300]
