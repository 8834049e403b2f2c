"""Shared by the district benches: ``sipas-district serve`` as its own process, as in production."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_district(
    url: str, data: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``sipas-district serve`` over the database at ``url`` on a free loopback port (its log in
    ``data/district.log``); (the process, its base URL) once ``/api/v1/health`` answers."""
    port = free_port()
    full = {
        **os.environ,
        "SIPAS_DISTRICT_DATABASE_URL": url,
        "SIPAS_DISTRICT_DATA_DIR": str(data),
        "SIPAS_DISTRICT_ENV_FILE": str(data / "none.env"),
        **(env or {}),
    }
    exe = Path(sys.executable).with_name("sipas-district")
    log = open(data / "district.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sipas-district serve exited: see {data / 'district.log'}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("sipas-district serve did not answer within 30 s")
