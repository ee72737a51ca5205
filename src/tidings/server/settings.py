"""The server's settings: command-line options over ``TIDINGS_*`` variables over a TOML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tidings.errors import ConfigurationError
from tidings.server.auth import AuthSettings
from tidings.server.declared import ViewSettings

DEFAULT_PORT = 8700
DEFAULT_STORE = "sqlite:///./tidings.db"


class WsSettings(BaseModel):
    """The WebSocket gateway's bounds (``[ws]`` in the TOML file, ``TIDINGS_WS__*``)."""

    model_config = ConfigDict(extra="forbid")

    max_connections: int = Field(default=10_000, ge=1, description="connections per process")
    max_subscriptions: int = Field(default=100, ge=1, description="subscriptions per connection")
    max_in_flight: int = Field(
        default=4, ge=1, description="unacked batches per subscription (the flow control)"
    )
    batch_events: int = Field(default=100, ge=1, description="the most events in one batch")
    max_message_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="the largest message a client may send"
    )
    queue_messages: int = Field(
        default=1_000, ge=8, description="messages queued to one connection"
    )
    queue_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="bytes queued to one connection"
    )
    send_timeout: float = Field(
        default=10.0, gt=0, description="seconds a connection that reads nothing is waited on"
    )
    live_queue_events: int = Field(
        default=1_000,
        ge=1,
        description="live events kept for a subscription waiting on acks (past it: re-read)",
    )
    live_queue_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="bytes of them kept per subscription"
    )
    auth_timeout: float = Field(
        default=5.0, gt=0, description="seconds to send an auth message when none came before"
    )
    messages_per_second: float = Field(
        default=0.0, ge=0, description="messages per second per caller (0: no limit)"
    )
    max_watches: int = Field(default=100, ge=1, description="watches per connection")
    watch_ttl: float = Field(
        default=60.0, gt=0, description="seconds a watch lives without a want (hydro's 60)"
    )
    compression: bool = Field(
        default=False,
        description="permessage-deflate (costs ~37 KiB per connection and CPU per frame)",
    )


class TlsSettings(BaseModel):
    """A named TLS setting webhooks may use (``[eventstreams.tls.NAME]``)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(default=None, description="CA bundle to trust")
    cert_file: str | None = Field(default=None, description="client certificate to present")
    key_file: str | None = Field(default=None, description="the client certificate's key")
    verify: bool = Field(default=True, description="verify the receiver's certificate")


class EventStreamSettings(BaseModel):
    """Managed event streams (``[eventstreams]``, ``TIDINGS_EVENTSTREAMS__*``): the
    defaults of what a stream's definition leaves unset (not stored with it: a changed
    default reaches every stream that did not set its own) and the runtime's bounds."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="run started event streams on this node")
    batch_size: int = Field(default=50, ge=1, le=10_000, description="events per batch")
    batch_timeout: float = Field(
        default=0.5, ge=0, description="seconds a short batch waits for more events"
    )
    retry_timeout: float = Field(
        default=300.0, gt=0, description="seconds a batch is retried before block or skip"
    )
    blocked_retry_delay: float = Field(
        default=60.0, gt=0, description="seconds between attempts of a blocked stream"
    )
    error_handling: Literal["block", "skip"] = Field(
        default="block", description="after retry_timeout: block, or skip (park the batch)"
    )
    disable_after: float = Field(
        default=5 * 86400.0, gt=0, description="seconds failing without a break: then stop"
    )
    webhook_timeout: float = Field(default=30.0, gt=0, description="seconds per webhook post")
    ack_timeout: float = Field(
        default=120.0, gt=0, description="seconds a WebSocket consumer has to ack a batch"
    )
    allow_private: bool = Field(
        default=False, description="let webhooks reach private addresses (SSRF guard off)"
    )
    allow: list[str] = Field(
        default_factory=list, description="networks webhooks may reach though the guard refuses"
    )
    lease_ttl: float = Field(
        default=30.0, ge=0.5, description="seconds before another node takes a stream over"
    )
    attempt_retention: float = Field(
        default=7 * 86400.0, gt=0, description="seconds delivery attempts are kept"
    )
    secret_overlap: float = Field(
        default=24 * 3600.0, ge=0, description="seconds a rotated-out secret keeps signing"
    )
    tls: dict[str, TlsSettings] = Field(
        default_factory=dict, description="named TLS settings webhooks may refer to"
    )
    proxies: dict[str, str] = Field(
        default_factory=dict,
        description="named egress proxies (http(s) URLs) webhooks may post through",
    )


class Settings(BaseSettings):
    """Everything ``tidings serve`` and ``create_app`` can be told.

    Each field is also read from ``TIDINGS_<NAME>`` (``TIDINGS_STORE``, ``TIDINGS_PORT``...;
    nested ones as ``TIDINGS_AUTH__JWT_SECRET``, lists and tables as JSON) and from a TOML
    file given to ``Settings.load`` (``tidings serve --config``; auth under ``[auth]``).
    """

    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_", env_nested_delimiter="__", extra="forbid"
    )

    store: str = Field(
        default=DEFAULT_STORE, description="store URL: sqlite:///file, postgresql://..."
    )
    notify: str | None = Field(
        default="auto",
        description="notifier URL (redis://, nats://, postgresql://), 'auto' or none",
    )
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="port to bind (0: any free)"
    )
    insecure: bool = Field(default=False, description="allow no auth on a non-loopback address")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="request body limit")
    max_page: int = Field(
        default=1000, ge=1, le=100_000, description="the most events one read returns"
    )
    sse_max_clients: int = Field(
        default=2000, ge=1, description="live (SSE) clients at once, past it 503"
    )
    sse_heartbeat: float = Field(
        default=15.0, gt=0, le=15.0, description="seconds between heartbeats"
    )
    sse_retry_ms: int = Field(
        default=1000, ge=0, description="the reconnect delay SSE clients are told"
    )
    sse_queue_events: int = Field(
        default=10_000, ge=1, description="events queued for one live client"
    )
    sse_queue_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="bytes queued per client"
    )
    sse_send_timeout: float = Field(
        default=30.0, gt=0, description="seconds a stuck client is waited on"
    )
    idle_position_every: float = Field(
        default=5.0,
        gt=0,
        description="seconds between id-only events while a filter drops everything",
    )
    shutdown_timeout: float = Field(
        default=10.0, gt=0, description="seconds to finish work on SIGTERM"
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="API keys and JWT (none set: auth off)"
    )
    rate_limit: float = Field(
        default=0.0, ge=0, description="requests per second per caller (0: no limit)"
    )
    rate_burst: int = Field(default=100, ge=1, description="requests a caller may burst")
    views: list[ViewSettings] = Field(
        default_factory=list, description="state views to fold: name, category, reducer"
    )
    types: str | None = Field(
        default=None,
        description="import path of a tidings.Types registry ('pkg.module:types'): reads "
        "asked with upcast=true answer with events renamed and upcast to their current "
        "versions (stored events and other reads are left as they are)",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS and for WebSockets"
    )
    ws: WsSettings = Field(default_factory=WsSettings, description="the WebSocket gateway")
    eventstreams: EventStreamSettings = Field(
        default_factory=EventStreamSettings, description="managed event streams"
    )

    _toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Options given in code win over the environment, which wins over the file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | str | None = None, **options: Any) -> Settings:
        """Settings from ``options`` (None values ignored), the environment and ``config``."""
        given = {k: v for k, v in options.items() if v is not None}
        if config is None:
            return cls(**given)
        path = Path(config)
        if not path.is_file():
            raise ConfigurationError(f"config file {path} does not exist")
        reader = type("FileSettings", (cls,), {"_toml_file": path})
        loaded: Settings = reader(**given)
        return loaded
