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
    # QR code channel (hub/channels/qr.py, README "QR code"): the address printed in the desks' QR
    # codes must be one a citizen's phone can reach (guest Wi-Fi, or a public address forwarded to
    # the hub); default http://<advertised_host or api_host>:<api_port>
    qr_base_url: str = Field(
        "", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$", description="e.g. http://10.0.5.2:8080"
    )
    qr_scale: int = Field(3, ge=3, le=5, description="levels when the desk has no terminal yet")
    qr_desk_per_minute: int = Field(5, ge=1, description="QR ratings per desk per minute")
    qr_phone_per_day: int = Field(5, ge=1, description="QR ratings per phone number per day")
    qr_client_per_hour: int = Field(20, ge=1, description="QR ratings per client address per hour")
    qr_wifi_name: str = Field(
        "", max_length=64, description="the guest Wi-Fi printed on the QR stickers, if any"
    )
    qr_trust_forwarded: bool = Field(
        False, description="client address from X-Forwarded-For (only behind your own proxy)"
    )

    # Sync to the district server (hub/sync.py, docs/sync.md): off until both are set.
    district_url: str = Field(
        "",
        pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
        description="e.g. https://sipas.huyen.vn",
    )
    district_token: str = Field("", description="the hub token the district issued for us")
    sync_batch_size: int = Field(5000, ge=1, le=10000, description="items per batch at most")
    sync_batch_wait_s: float = Field(
        5, ge=0, le=3600, description="a partial batch waits this long"
    )
    sync_timeout_s: float = Field(30, gt=0, le=600, description="one request's time limit")
    sync_backoff_max_s: float = Field(300, gt=0, le=86400, description="retries back off to this")
    sync_alert_after_minutes: float = Field(
        30, gt=0, le=10080, description="an alert when sync has failed for this long"
    )

    @field_validator("mqtt_password", "api_token", "district_token")
    @classmethod
    def _no_placeholder(cls, v: str) -> str:
        if v.lower() in {"changeme", "change-me", "secret", "password"}:
            raise ValueError("is a placeholder: generate one with `openssl rand -hex 16`")
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hub.sqlite3'}"
