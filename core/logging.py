"""structlog configured once per process, with a stdlib bridge.

uvicorn, SQLAlchemy, aiokafka and Temporal log through the standard library; routing their
records through structlog's ``ProcessorFormatter`` gives every line one renderer: JSON in
production, readable columns on a terminal. A redaction processor runs last so a secret passed
as a field (or embedded in a URL) never reaches the output.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|auth[_-]?token|credential|private[_-]?key|"
    r"database_url|dsn|signature)",
    re.IGNORECASE,
)
# user:password@ in any URL-looking string
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_REDACTED = "***"


def redact_text(text: str) -> str:
    """Remove credentials embedded in free text (URLs with passwords, bearer tokens)."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{_REDACTED}@", text)
    return _BEARER.sub(lambda m: m.group(1) + _REDACTED, text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return _REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking fields and credentials inside strings."""
    for key in list(event_dict):
        if key in ("event", "logger", "level", "timestamp"):
            if key == "event" and isinstance(event_dict[key], str):
                event_dict[key] = redact_text(event_dict[key])
            continue
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class LevelCheckedBoundLogger(structlog.stdlib.BoundLogger):
    """The stdlib-backed BoundLogger, but a call below the logger's level returns at once.

    `filter_by_level` as a processor only drops the event after the bound logger has copied its
    context and started the processor chain; asking the stdlib logger first (`isEnabledFor` is
    cached by `logging`) makes a filtered-out `log.info` on a hot path cost a dict lookup. Per-logger
    levels from `dictConfig` and later `setLevel` calls are honoured as before.
    """

    def _proxy_to_logger(self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any) -> Any:
        level = _METHOD_LEVELS.get(method_name)
        if level is not None and not self._logger.isEnabledFor(level):
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


def _want_json(log_format: str) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not sys.stderr.isatty()


def configure_logging(*, level: str = "INFO", log_format: str = "auto", process: str | None = None) -> None:
    """Configure structlog and the stdlib root logger for this process (idempotent)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
    ]
    if process:
        shared.append(_bind_process(process))
    renderer: Any
    if _want_json(log_format):
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, redact_secrets, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [redact_secrets, renderer]

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structlog": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "foreign_pre_chain": shared,
                    "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
                }
            },
            "handlers": {
                "default": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}
            },
            "root": {"handlers": ["default"], "level": level},
            "loggers": {
                # uvicorn installs its own handlers; route them through ours instead.
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
                "sqlalchemy.engine": {"level": "WARNING"},
                "aiokafka": {"level": "WARNING"},
                "alembic": {"level": "WARNING"},
                "temporalio": {"level": "WARNING" if level != "DEBUG" else "DEBUG"},
                "httpx": {"level": "WARNING"},
                "twilio": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=LevelCheckedBoundLogger,
        cache_logger_on_first_use=True,
    )


def _drop_color_message(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn passes a copy of its message with ANSI colour codes as an `extra`; we have the plain one."""
    event_dict.pop("color_message", None)
    return event_dict


def _bind_process(process: str) -> Any:
    def add_process(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("process", process)
        return event_dict

    return add_process


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; event names are dotted (`bridge.signal_sent`), details are fields."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
