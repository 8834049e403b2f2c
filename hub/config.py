"""Hub settings, from the environment (prefix ``SIPAS_HUB_``) or a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.alerts import AlertRules


class Settings(BaseSettings):
    # The systemd unit's environment file is read too, so that a technician's `sipas-hub ...` on the
    # Pi sees the same settings as the service.
    model_config = SettingsConfigDict(
        env_prefix="SIPAS_HUB_",
        env_file=(os.environ.get("SIPAS_HUB_ENV_FILE", "/etc/sipas/hub.env"), ".env"),
        extra="ignore",
    )

    office: str = Field("office-1", pattern=r"^[a-z0-9-]{1,32}$", description="this office's id")
    data_dir: Path = Path("/var/lib/sipas-hub")
    database_url: str | None = None  # default: sqlite file in data_dir
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    advertised_host: str = Field(
        "", description="the address terminals use to reach this hub (default: mqtt_host)"
    )
    manage_broker: bool = True  # start and configure our own Mosquitto
    mqtt_user: str = "sipas-hub"
    mqtt_password: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token: str = ""
    max_batch: int = 256
    alert_webhook_url: str = ""
    alert_rules: AlertRules = Field(default_factory=AlertRules)  # JSON, e.g. {"window_minutes": 10}
    case_window_minutes: int = Field(
        10, ge=1, le=240, description="a rating links to a case handed back this recently"
    )
    rollout_timeout_s: float = Field(
        600, ge=1, le=86400, description="over-the-air update: wait this long for each terminal"
    )

    @field_validator("mqtt_password", "api_token")
    @classmethod
    def _no_placeholder(cls, v: str) -> str:
        if v.lower() in {"changeme", "change-me", "secret", "password"}:
            raise ValueError("is a placeholder: generate one with `openssl rand -hex 16`")
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hub.sqlite3'}"
