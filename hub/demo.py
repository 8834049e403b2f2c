"""The demo: a hub with its own Mosquitto on free ports, and simulated terminals pressing buttons."""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from collections import deque
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from hub.broker import find_free_port
from hub.config import Settings
from hub.ingest import NewRating, Result
from hub.service import HubService

OFFICE_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
LEVELS_3 = {1: "Rất hài lòng", 2: "Hài lòng", 3: "Không hài lòng"}


def run_demo(
    *,
    terminals: int = 3,
    duration: float | None = None,
    data_dir: Path | None = None,
    interval: float = 3.0,
    console: Console | None = None,
) -> int:
    console = console or Console()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="sipas-demo-"))
    from provisioning.simulate import SimTerminal  # imports the firmware tree

    settings = Settings(
        office="demo-office",
        data_dir=data_dir,
        mqtt_port=find_free_port(),
        api_port=find_free_port(),
        api_token=secrets.token_urlsafe(16),
    )
    recent: deque[NewRating] = deque(maxlen=12)
    counts = {"stored": 0, "duplicates": 0, "quarantined": 0}

    def on_result(res: Result) -> None:
        recent.extend(res.stored)
        for k in counts:
            counts[k] += res.counts.get(k, 0)

    hub = HubService(settings, on_result=on_result)
    console.print(f"[bold]SIPAS hub demo[/] — dữ liệu: {data_dir}")
    hub.start()
    sims = []
    for i in range(terminals):
        device = hub.add_terminal(desk=f"quay-{i + 1}")
        sim = SimTerminal(device, data_dir / "terminals" / device["terminal_id"])
        sim.start()
        sims.append(sim)
    console.print(f"Mosquitto: {settings.mqtt_host}:{settings.mqtt_port}   API: {hub.api_url}")
    console.print(f"API token: {settings.api_token}")
    console.print(
        f"  thử / try: curl -H 'Authorization: Bearer {settings.api_token}' {hub.api_url}/ratings"
    )
    console.print("Ctrl-C để dừng / to stop\n")

    def render() -> Panel:
        table = Table(expand=True)
        for col in ("Giờ (ICT)", "Quầy / desk", "Thiết bị", "Số TT", "Đánh giá", "Ghi chú"):
            table.add_column(col, no_wrap=True)
        for r in reversed(recent):
            local = r.press_time.astimezone(OFFICE_TZ)
            table.add_row(
                local.strftime("%H:%M:%S %d/%m/%Y"),
                r.desk or "-",
                r.terminal_id,
                str(r.seq),
                LEVELS_3.get(r.level, str(r.level)),
                "bấm lặp / repeat" if r.repeat else "",
            )
        backlog = sum(s.depth() for s in sims)
        footer = (
            f"đã lưu {counts['stored']} · trùng {counts['duplicates']} · cách ly "
            f"{counts['quarantined']} · chờ gửi trên thiết bị {backlog}"
        )
        return Panel(Group(table, footer), title="Đánh giá mới nhất / latest ratings")

    started = time.monotonic()
    next_press = started
    try:
        with Live(render(), console=console, refresh_per_second=4) as live:
            while duration is None or time.monotonic() - started < duration:
                if time.monotonic() >= next_press:
                    random.choice(sims).press(random.choices([1, 2, 3], weights=[5, 4, 1])[0])
                    next_press = time.monotonic() + random.uniform(0.3, 1.7) * interval
                live.update(render())
                time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        for sim in sims:
            sim.stop()
        hub.stop()
    console.print(f"\nĐã lưu {counts['stored']} đánh giá / ratings stored. Dữ liệu: {data_dir}")
    return 0
