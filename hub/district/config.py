"""District server settings, from the environment (prefix ``SIPAS_DISTRICT_``) or a ``.env`` file.

Every API process of one district reads the same settings; they hold no state of their own, so
any number of them can serve behind a load balancer (docs/district.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDERS = frozenset({"changeme", "change-me", "secret", "password", "admin", "token"})


class DistrictSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIPAS_DISTRICT_",
        env_file=(os.environ.get("SIPAS_DISTRICT_ENV_FILE", "/etc/sipas/district.env"), ".env"),
        extra="ignore",
    )

    data_dir: Path = Field(
        Path("/var/lib/sipas-district"), description="the SQLite file lives here (default database)"
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty: SQLite file district.sqlite3 in data_dir. Production: "
        "postgresql+psycopg://user:password@host/dbname",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8090, ge=1, le=65535)
    admin_token: str = Field(
        "",
        description="bootstrap district-admin token (before any token is created); empty: none",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="a sync batch larger than this (unzipped) is 413"
    )

    @field_validator("admin_token")
    @classmethod
    def _no_placeholder(cls, v: str) -> str:
        if v.lower() in PLACEHOLDERS:
            raise ValueError("is a placeholder: generate one with `openssl rand -hex 24`")
        if v and len(v) < 16:
            raise ValueError("is too short: use at least 16 random characters")
        return v

    @property
    def url(self) -> str:
        """The database URL actually used."""
        return self.database_url or f"sqlite:///{self.data_dir / 'district.sqlite3'}"
