"""One settings object for every process, read from the environment (and `.env`) at start-up.

Nothing here runs at import time: call :func:`get_settings` from a process entry point or a
FastAPI lifespan. Variable names follow what users already have (``DATABASE_URL``,
``TEMPORAL_ADDRESS``, ``KAFKA_BOOTSTRAP_SERVERS``, ``OPENAI_API_KEY`` ...).
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.whatsapp_window import parse_variable_names

Channel = Literal["email", "whatsapp", "web_form"]
CHANNELS: tuple[Channel, ...] = ("email", "whatsapp", "web_form")

DEFAULT_DATABASE_PORT = 5433
DEFAULT_TEMPORAL_PORT = 7233
DEFAULT_TEMPORAL_UI_PORT = 8233
DEFAULT_KAFKA_PORT = 9092
DEFAULT_GATEWAY_PORT = 8000
# The shortest TICKET_LINK_SECRET accepted (32 characters of `openssl rand -base64` is 192 bits).
MIN_TICKET_LINK_SECRET_CHARS = 32


def parse_holidays(value: str) -> tuple[date, ...]:
    """ "2026-12-25, 2027-01-01" as sorted dates; a word that is not an ISO date is refused, naming it."""
    found: set[date] = set()
    for word in (w.strip() for w in value.split(",")):
        if not word:
            continue
        try:
            found.add(date.fromisoformat(word))
        except ValueError:
            raise ValueError(f"not a date such as 2026-12-25: {word!r}") from None
    return tuple(sorted(found))


class Settings(BaseSettings):
    """Configuration shared by the gateway, bridge, worker and CLI."""

    # hide_input_in_errors: a refused value may be a secret (a webhook URL, a database URL).
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    # --- PostgreSQL (the CRM) -------------------------------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr(f"postgresql+asyncpg://postgres@127.0.0.1:{DEFAULT_DATABASE_PORT}/crm_fte"),
        description="SQLAlchemy/asyncpg URL; postgres:// and postgresql:// are accepted too.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)

    # --- Temporal -------------------------------------------------------------------------
    temporal_address: str = f"127.0.0.1:{DEFAULT_TEMPORAL_PORT}"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "crm-fte"
    temporal_tls: bool = False
    temporal_tls_cert_path: str | None = None
    temporal_tls_key_path: str | None = None
    temporal_tls_ca_path: str | None = None
    temporal_api_key: SecretStr | None = None
    # Custom search attributes (CustomerEmail, TicketNumber, ...). Turn off only where they cannot
    # be registered (e.g. Temporal's time-skipping test server); the UI filters need them.
    temporal_search_attributes: bool = True
    temporal_ui_url: str | None = Field(
        default=None, description="Shown to operators; e.g. the Temporal Web UI behind your ingress."
    )

    # --- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap_servers: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_path: str | None = None
    # Apache Kafka supports the idempotent producer; the embedded tansu broker does not, so
    # `crm-fte up` turns it off. Downstream dedupe (message ids) holds either way.
    kafka_enable_idempotence: bool = True
    kafka_topic_inbound: str = "fte.messages.inbound"
    kafka_topic_dead_letter: str = "fte.messages.dlq"
    kafka_topic_partitions: int = Field(default=6, ge=1, le=1024)
    kafka_topic_replication_factor: int = Field(default=1, ge=1, le=16)
    kafka_consumer_group: str = "crm-fte-bridge"
    # Consumer-group liveness of the bridge. A bridge that dies without leaving the group (kill -9,
    # OOM kill) keeps its partitions until its session times out, so this bounds how long inbound
    # messages wait after such a crash. 6 s is Apache Kafka's default minimum
    # (group.min.session.timeout.ms); aiokafka's own default is 10 s. Heartbeats come from a
    # background task, not from the record loop, so slow Temporal calls do not count against it.
    # The heartbeat interval must be below the session timeout (a third of it or less is usual).
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000, le=300_000)
    kafka_heartbeat_interval_ms: int = Field(default=1000, ge=100, le=100_000)

    # --- LLM and embeddings ----------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o"
    openai_timeout_seconds: float = Field(default=60.0, gt=0)
    # Which request field caps the model's reply. "auto": `max_completion_tokens` for OpenAI itself
    # (its reasoning models reject `max_tokens`), `max_tokens` when OPENAI_BASE_URL points elsewhere.
    openai_max_tokens_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    embedding_provider: Literal["use", "wordllama", "minilm", "openai"] = "use"
    embedding_model: str = "l2_supercat"
    embedding_dim: int = Field(default=512, ge=8, le=4000)

    # --- Conversations, agent budget, escalation SLA, alerts ------------------------------------
    conversation_idle_timeout_seconds: float = Field(default=24 * 3600, gt=0)
    conversation_max_turns_per_run: int = Field(default=200, ge=1)
    escalation_sla_business_hours: float = Field(default=2.0, gt=0)
    # Mon-Fri, UTC: the hours customers are told (holding replies; kb/policies/escalation-rules.md,
    # kb/docs/company-profile.md) and the SLA clock's, so a promise and its timer agree.
    business_day_start_hour: int = Field(default=8, ge=0, le=23)
    business_day_end_hour: int = Field(default=20, ge=1, le=24)
    # CSAT: once a conversation the AI or a person resolved closes, ask the customer for a rating on
    # its channel; wait this long for it; a score at or below CSAT_LOW_SCORE reopens it to a person.
    csat_enabled: bool = True
    csat_window_hours: float = Field(default=72.0, gt=0, le=24 * 30)
    csat_low_score: int = Field(default=2, ge=1, le=4)
    # Days the team does not work (ISO dates, comma-separated, e.g. "2026-12-25,2027-01-01"): the SLA
    # clock skips them like a weekend, and the holding reply's promise ("by Monday 10:00 UTC") follows.
    business_holidays: str = ""
    agent_max_steps: int = Field(default=6, ge=1, le=50)
    agent_max_tokens_per_conversation: int = Field(default=60_000, ge=1000)
    agent_kb_results: int = Field(default=5, ge=1, le=20)
    # One knob for "this customer is unhappy": below it the inbound guardrails escalate a message,
    # and an idle conversation is escalated instead of closed. -0.5 is where the guardrails' labelled
    # set is tuned (at -0.35, polite complaints such as "not happy with the default sound" escalate).
    negative_sentiment_threshold: float = Field(default=-0.5, ge=-1, le=1)
    alert_escalation_rate: float = Field(default=0.25, ge=0, le=1)
    # How long after a merge of two customer records an agent may still undo it (a week by default).
    customer_unmerge_window_hours: float = Field(default=168.0, gt=0)
    alert_latency_ms: float = Field(default=3000, gt=0)

    # --- Channels ---------------------------------------------------------------------------
    public_base_url: AnyHttpUrl | None = Field(
        default=None,
        description="The URL providers call (behind a proxy/ingress); signatures are checked against it.",
    )
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_base_url: str | None = None
    # WhatsApp's 24-hour window (core/whatsapp_window.py): a human reply sent more than 24 h after the
    # customer's last WhatsApp message goes as this approved template (a Twilio Content SID, HX...),
    # else by email to the customer's verified address, else it is refused (the console says which).
    whatsapp_late_reply_content_sid: str | None = Field(default=None, pattern=r"^(HX[0-9a-fA-F]{32})?$")
    # The template's variables in order ({{1}}, {{2}}, ...), comma-separated, each one of
    # customer_first_name, customer_name, ticket_number, agent_name, reply_excerpt (the reply on one
    # line, at most 200 characters). Empty: a template without variables.
    whatsapp_late_reply_content_variables: str = "customer_first_name,ticket_number"
    gmail_api_base_url: str | None = None
    # Gmail: the support mailbox, OAuth credentials for the Gmail API, and Pub/Sub push auth.
    gmail_user_email: str | None = None
    gmail_client_id: str | None = None
    gmail_client_secret: SecretStr | None = None
    gmail_refresh_token: SecretStr | None = None
    gmail_token_uri: str = "https://oauth2.googleapis.com/token"
    gmail_watch_topic: str | None = Field(default=None, description="projects/PROJECT/topics/TOPIC for users.watch")
    gmail_watch_renew_hours: float = Field(default=24.0, gt=0, le=168)
    gmail_pubsub_audience: str | None = None
    gmail_pubsub_service_account: str | None = None
    gmail_pubsub_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # A static bearer token instead of OIDC: explicit opt-in only, for push endpoints behind a proxy.
    gmail_pubsub_static_token: SecretStr | None = None

    # --- Processes -------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=1, le=65535)
    gateway_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Proxies whose X-Forwarded-For/-Proto the gateway believes (uvicorn's forwarded_allow_ips:
    # comma-separated addresses or CIDRs, "*" = anyone). Headers from any other peer are ignored, so
    # a client cannot forge its address or scheme; behind an ingress, list the ingress controller's
    # address or pod CIDR. The default is uvicorn's own: loopback only.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Per-sender limits (limits-library syntax, e.g. "20/minute;200/hour"). In-process per gateway
    # replica: a flood from one sender is refused early and cannot starve the others.
    rate_limit_web_form: str = "5/minute;30/hour"
    rate_limit_whatsapp: str = "30/minute;300/hour"
    # Failed ticket look-ups (wrong ticket number or email) per client address: once used up, that
    # address gets 429 on the ticket endpoint, so ticket numbers cannot be walked for an email.
    # The client address is the peer's, or X-Forwarded-For from FORWARDED_ALLOW_IPS proxies.
    rate_limit_ticket_lookup_failures: str = "20/minute;100/hour"
    # Help-article suggestions and their events (the support form asks as the customer types),
    # per client address.
    rate_limit_help: str = "120/minute;2000/hour"
    health_check_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    worker_health_port: int | None = Field(default=None, ge=1, le=65535)
    bridge_health_port: int | None = Field(default=None, ge=1, le=65535)
    # Where the worker's and the bridge's /livez, /readyz and /metrics listen: loopback by default,
    # like the gateway; a pod sets 0.0.0.0 so the kubelet and Prometheus reach them.
    health_host: str = Field(default="127.0.0.1", min_length=1)

    # --- Tracing (OpenTelemetry; off by default) ------------------------------------------------
    tracing_enabled: bool = False
    # Standard OTLP variable; without it, spans are created (and propagated) but not exported.
    otel_exporter_otlp_endpoint: str | None = None
    # What one model token costs us (for the crm_fte_llm_cost_usd_total metric), in USD per 1k tokens.
    llm_prompt_cost_per_1k_usd: float = Field(default=0.0025, ge=0)
    llm_completion_cost_per_1k_usd: float = Field(default=0.01, ge=0)

    # --- Logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # --- Identity (issue 15) ----------------------------------------------------------------
    # Region (ISO 3166 alpha-2, e.g. "US") for a phone number written without a country code;
    # unset: such a number is not accepted (every channel but the web form sends E.164 anyway).
    identity_phone_default_region: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    # Treat "ann+news@x.com" as "ann@x.com", and "a.n.n@gmail.com" as "ann@gmail.com" (dots are
    # ignored by Gmail/Googlemail only). Off: only case and Unicode normalisation (email-validator).
    identity_email_canonical: bool = False
    # How long a link that confirms a claimed email or phone stays valid.
    identity_confirmation_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    # Confirmation links a ticket may request (limits-library syntax), per ticket.
    rate_limit_identity_confirmation: str = "3/minute;10/day"

    # --- Web-form ticket links (issue 16): the link a reply notice carries ---------------------
    # HMAC-SHA256 key of the per-ticket tokens in the links emailed to web-form customers when a
    # reply is posted (core/ticket_links.py): at least 32 characters (e.g. `openssl rand -base64 48`).
    # Unset: no link is made, no reply notice is sent, and the ticket page refuses every token.
    # Rotating it invalidates every link sent so far.
    ticket_link_secret: SecretStr | None = None

    # --- Inbound guardrails: the model classifier (issue 14) ---------------------------------
    # With a model configured, messages the rules let through are read once more by the model
    # (activity classify_inbound) before the agent step; it may add an escalation, never remove one.
    inbound_classifier_enabled: bool = True
    # The model's own confidence it must state before its reason escalates a message.
    inbound_classifier_min_confidence: float = Field(default=0.6, ge=0, le=1)
    # The learned layer beside the inbound rules (activities/guardrails/learned.py): may add an
    # escalation the rules missed, never removes one. Off: the rules alone decide.
    guardrails_semantic_enabled: bool = True

    # --- Team notifications (issue 16): new escalations, SLAs, customer replies ------------------
    # A sink is on when its setting is set. Email: to these addresses (comma-separated), sent from
    # the support mailbox (the GMAIL_* settings).
    notify_email_to: str | None = None
    # A Slack incoming-webhook URL: a secret (whoever holds it can post to the channel).
    notify_slack_webhook_url: SecretStr | None = None
    # A generic outbound webhook: JSON, signed with HMAC-SHA256 over "timestamp.body" with
    # NOTIFY_WEBHOOK_SECRET (docs/notifications.md); without the secret nothing is sent.
    notify_webhook_url: AnyHttpUrl | None = None
    notify_webhook_secret: SecretStr | None = None
    # One Slack or webhook call; below the activity's 30 s so a slow sink never overlaps its retry.
    notify_http_timeout_seconds: float = Field(default=10.0, gt=0, le=25)
    # How long before an escalation's SLA deadline the team is warned that it is about to pass.
    notify_sla_due_soon_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    # --- Daily report (issue 17) ----------------------------------------------------------------
    # When (HH:MM, UTC) a Temporal Schedule runs the report of the previous UTC day and sends it to
    # the notification sinks above.
    daily_report_time_utc: str = Field(default="06:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncpg_driver(cls, value: object) -> object:
        """Accept the URLs users already have (postgres://, postgresql://) and use asyncpg."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
                if raw.startswith(prefix):
                    return "postgresql+asyncpg://" + raw[len(prefix) :]
            if not raw.startswith("postgresql+asyncpg://"):
                raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator(
        "rate_limit_web_form",
        "rate_limit_whatsapp",
        "rate_limit_ticket_lookup_failures",
        "rate_limit_help",
        "rate_limit_identity_confirmation",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '20/minute;200/hour': {exc}") from None
        return value

    @field_validator("whatsapp_late_reply_content_variables")
    @classmethod
    def _template_variables(cls, value: str) -> str:
        parse_variable_names(value)
        return value

    @field_validator("business_holidays")
    @classmethod
    def _holidays(cls, value: str) -> str:
        parse_holidays(value)
        return value

    @property
    def holiday_dates(self) -> tuple[date, ...]:
        """BUSINESS_HOLIDAYS as dates, sorted."""
        return parse_holidays(self.business_holidays)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _slack_url_is_http(self) -> Settings:
        # Refuse at start-up rather than post a notification to a typo later. An "after" check:
        # pydantic would print a field validator's input, and this URL is a secret.
        url = self.notify_slack_webhook_url
        if url is not None and not url.get_secret_value():
            self.notify_slack_webhook_url = None
        elif url is not None and not re.match(r"^https?://[^\s/]+", url.get_secret_value()):
            raise ValueError("NOTIFY_SLACK_WEBHOOK_URL must be an http(s) URL (https://hooks.slack.com/services/...)")
        return self

    @model_validator(mode="after")
    def _ticket_link_secret_is_long(self) -> Settings:
        # A short key makes every ticket's link guessable: refuse to start. An "after" check, so
        # the refused value (a secret) is never printed.
        secret = self.ticket_link_secret
        if secret is not None and not secret.get_secret_value():
            self.ticket_link_secret = None
        elif secret is not None and len(secret.get_secret_value()) < MIN_TICKET_LINK_SECRET_CHARS:
            raise ValueError(f"TICKET_LINK_SECRET must be at least {MIN_TICKET_LINK_SECRET_CHARS} characters")
        return self

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> Settings:
        # The broker would drop the bridge between two heartbeats: refuse instead of flapping.
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError("KAFKA_HEARTBEAT_INTERVAL_MS must be lower than KAFKA_SESSION_TIMEOUT_MS")
        return self

    @property
    def database_dsn(self) -> str:
        """The SQLAlchemy URL (asyncpg driver); a secret, never log it."""
        return self.database_url.get_secret_value()

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def gmail_configured(self) -> bool:
        return bool(self.gmail_user_email and self.gmail_client_id and self.gmail_refresh_token)

    @property
    def customer_base_url(self) -> str:
        """Where customers and people reach the gateway (links in replies, notices, notifications):
        PUBLIC_BASE_URL, else the gateway's own address (a local `crm-fte up`), without a trailing slash."""
        if self.public_base_url is not None:
            return str(self.public_base_url).rstrip("/")
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::", "") else self.gateway_host
        return f"http://{host}:{self.gateway_port}"

    @property
    def ticket_links_configured(self) -> bool:
        """Secure ticket links can be made: a signing key (they point at `customer_base_url`)."""
        return self.ticket_link_secret is not None

    @property
    def openai_configured(self) -> bool:
        return self.openai_api_key is not None and bool(self.openai_api_key.get_secret_value())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use (never at import)."""
    return Settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the `up` supervisor change the environment)."""
    get_settings.cache_clear()
