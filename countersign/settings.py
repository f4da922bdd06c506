"""Configuration from the environment (and ``.env``), validated once, in ``main``.

Nothing here runs at import time; ``load_settings()`` builds the object and
turns every problem into ``ConfigError`` with one line naming the variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from countersign.crypto import key_file_for, load_or_create_key
from countersign.policy import EXAMPLE_POLICY_PATH
from storage.engine import DEFAULT_DATABASE_URL, normalize_database_url

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """Configuration that cannot work; the message names the variable."""


class Settings(BaseSettings):
    """Every setting of CONTRACT.md's configuration table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("COUNTERSIGN_DATABASE_URL", "DATABASE_URL"),
    )
    policy: Path | None = Field(default=None, validation_alias="COUNTERSIGN_POLICY")
    public_url: str = Field(
        default="http://127.0.0.1:8080", validation_alias="COUNTERSIGN_PUBLIC_URL"
    )
    admin_token: str | None = Field(default=None, validation_alias="COUNTERSIGN_ADMIN_TOKEN")
    slack_bot_token: str | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    microsoft_app_id: str | None = Field(default=None, validation_alias="MICROSOFT_APP_ID")
    microsoft_app_password: str | None = Field(
        default=None, validation_alias="MICROSOFT_APP_PASSWORD"
    )
    microsoft_app_type: str | None = Field(default=None, validation_alias="MICROSOFT_APP_TYPE")
    microsoft_app_tenant_id: str | None = Field(
        default=None, validation_alias="MICROSOFT_APP_TENANT_ID"
    )
    teams_openid_metadata_url: str | None = Field(
        default=None, validation_alias="TEAMS_OPENID_METADATA_URL"
    )
    teams_token_issuer: str | None = Field(default=None, validation_alias="TEAMS_TOKEN_ISSUER")
    teams_login_url: str | None = Field(default=None, validation_alias="TEAMS_LOGIN_URL")
    teams_allow_unauthenticated: bool = Field(
        default=False, validation_alias="TEAMS_ALLOW_UNAUTHENTICATED"
    )
    secret_key: str | None = Field(default=None, validation_alias="COUNTERSIGN_SECRET_KEY")
    allow_private_callbacks: bool = Field(
        default=False, validation_alias="COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS"
    )
    # PostgreSQL connections a replica keeps open (and as many more under bursts).
    # Too few and requests open and close connections, which costs more than they do.
    database_pool_size: int = Field(
        default=20, ge=1, le=500, validation_alias="COUNTERSIGN_DATABASE_POOL_SIZE"
    )
    # How long a replica owns a callback attempt before another may retry it
    # (more than twice the 10 s delivery timeout).
    callback_lease_seconds: float = Field(
        default=60.0, ge=21.0, le=3600.0, validation_alias="COUNTERSIGN_CALLBACK_LEASE_SECONDS"
    )
    # How long a replica owns a chat job (posting and updating cards) before another
    # may run it: after a crash, cards wait this long. More than a job's own
    # patience (a 10 s platform call, and ~30 s of retries to store a card's id).
    chat_lease_seconds: float = Field(
        default=60.0, ge=45.0, le=3600.0, validation_alias="COUNTERSIGN_CHAT_LEASE_SECONDS"
    )

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("COUNTERSIGN_SECRET_KEY: must be at least 16 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            return normalize_database_url(value)
        except ValueError as exc:
            raise ValueError(f"COUNTERSIGN_DATABASE_URL: {exc}") from exc

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("COUNTERSIGN_PUBLIC_URL: must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _slack_pair(self) -> Settings:
        if bool(self.slack_bot_token) != bool(self.slack_signing_secret):
            missing = "SLACK_SIGNING_SECRET" if self.slack_bot_token else "SLACK_BOT_TOKEN"
            raise ValueError(
                f"{missing}: Slack needs both SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"
            )
        return self

    @model_validator(mode="after")
    def _teams_password(self) -> Settings:
        if self.microsoft_app_id and not self.microsoft_app_password:
            app_type = (self.microsoft_app_type or "MultiTenant").lower()
            if app_type != "userassignedmsi":
                raise ValueError(
                    "MICROSOFT_APP_PASSWORD: Teams needs the app password with MICROSOFT_APP_ID"
                )
        return self

    @property
    def slack_enabled(self) -> bool:
        """Slack is on when both of its secrets are set."""
        return bool(self.slack_bot_token and self.slack_signing_secret)

    @property
    def teams_enabled(self) -> bool:
        """Teams is on with an app id, or explicitly unauthenticated for the emulator."""
        return bool(self.microsoft_app_id) or self.teams_allow_unauthenticated

    def server_key(self) -> str:
        """The key that seals secrets at rest (see ``countersign.crypto``)."""
        if self.secret_key:
            return self.secret_key
        if self.database_url.startswith("sqlite"):
            return load_or_create_key(key_file_for(self.database_url))
        raise ConfigError(
            "COUNTERSIGN_SECRET_KEY: required with PostgreSQL (replicas must share it); "
            "use any random string of 32+ characters"
        )

    def policy_path(self) -> Path:
        """``COUNTERSIGN_POLICY``, else ``./countersign.yaml`` if present, else the example."""
        if self.policy is not None:
            return self.policy
        local = Path("countersign.yaml")
        return local if local.is_file() else EXAMPLE_POLICY_PATH


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; ``ConfigError`` with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if ":" not in message.split(" ")[0]:
            field = ".".join(str(p) for p in first.get("loc", ())) or "configuration"
            message = f"{field.upper()}: {message}"
        raise ConfigError(message) from None
