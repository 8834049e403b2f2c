"""The demo: a hub with its own Mosquitto on free ports, and simulated terminals pressing buttons."""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from sqlmodel import Session

from hub import office as ofc
from hub.broker import find_free_port
from hub.config import Settings
from hub.ingest import NewRating, Result
from hub.service import HubService

OFFICE_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
OFFICIALS = [
    ("nguyen.van.an", "Nguyễn Văn An"),
    ("tran.thi.binh", "Trần Thị Bình"),
    ("le.van.cuong", "Lê Văn Cường"),
    ("pham.thi.dung", "Phạm Thị Dung"),
]
FIELDS = ["Hộ tịch", "Chứng thực", "Cư trú", "Người có công", "Bảo trợ xã hội"]
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
    names: dict[str, str] = {}
    with Session(hub.engine) as s:
        for i in range(terminals):
            desk, (oid, name) = f"quay-{i + 1}", OFFICIALS[i % len(OFFICIALS)]
            oid = f"{oid}-{i + 1}" if i >= len(OFFICIALS) else oid
            ofc.create_desk(
                s,
                office=settings.office,
                data=ofc.DeskCreate(id=desk, name=f"Quầy {i + 1} - {FIELDS[i % len(FIELDS)]}"),
                actor="demo",
            )
            ofc.create_official(
                s, office=settings.office, data=ofc.OfficialCreate(id=oid, name=name), actor="demo"
            )
            ofc.check_in(
                s,
                office=settings.office,
                req=ofc.DutyRequest(desk_id=desk, official_id=oid),
                actor="demo",
            )
            names[oid] = name
        s.commit()
    hub.ingestor.reload_terminals()
    for i in range(terminals):
        device = hub.add_terminal(desk=f"quay-{i + 1}")
        device["lockout_s"] = 2  # the demo hands back a case every few seconds, not minutes
        sim = SimTerminal(device, data_dir / "terminals" / device["terminal_id"])
        sim.start()
        sims.append(sim)
    case_codes: dict[int, str] = {}
    console.print(f"Mosquitto: {settings.mqtt_host}:{settings.mqtt_port}   API: {hub.api_url}")
    console.print(f"API token: {settings.api_token}")
    dashboard = hub.api_url.removesuffix("/api/v1") + "/"
    console.print(
        f"Bảng điều khiển / dashboard: {dashboard}  (đăng nhập bằng mã API / log in with the token)"
    )
    console.print(
        f"  thử / try: curl -H 'Authorization: Bearer {settings.api_token}' {hub.api_url}/ratings"
    )
    console.print("Ctrl-C để dừng / to stop\n")

    def render() -> Panel:
        table = Table(expand=True)
        for col in ("Giờ", "Quầy", "Công chức", "Hồ sơ", "Đánh giá", "Ghi chú"):
            table.add_column(col, no_wrap=True, overflow="ellipsis")
        for r in reversed(recent):
            local = r.press_time.astimezone(OFFICE_TZ)
            note = {
                "repeat": "bấm lặp",
                "case_already_rated": "hồ sơ đã có đánh giá",
                "no_case": "không có hồ sơ",
                "late": "muộn",
            }
            table.add_row(
                local.strftime("%H:%M:%S"),
                r.desk or "-",
                names.get(r.official_id or "", "-"),
                case_codes.get(r.case_id or 0, "-"),
                LEVELS_3.get(r.level, str(r.level)),
                note["repeat"] if r.repeat else note.get(r.link_status, ""),
            )
        backlog = sum(s.depth() for s in sims)
        footer = (
            f"đã lưu {counts['stored']} · trùng {counts['duplicates']} · cách ly "
            f"{counts['quarantined']} · chờ gửi trên thiết bị {backlog}"
        )
        return Panel(Group(table, footer), title="Đánh giá mới nhất / latest ratings")

    started = time.monotonic()
    next_press = started
    pending: list[tuple[float, int]] = []
    try:
        with Live(render(), console=console, refresh_per_second=4) as live:
            while duration is None or time.monotonic() - started < duration:
                now = time.monotonic()
                if now >= next_press:
                    # a case is handed back at a desk, the terminal there lights up, and most
                    # of the time the citizen presses a few seconds later
                    i = random.randrange(len(sims))
                    code = f"H12.{random.randint(10, 99)}-{datetime.now(OFFICE_TZ):%y%m%d}-{random.randint(1, 9999):04d}"
                    with Session(hub.engine) as s:
                        case, _ = ofc.record_case(
                            s,
                            office=settings.office,
                            actor="demo",
                            data=ofc.CaseCreate(
                                code=code, desk_id=f"quay-{i + 1}", field=FIELDS[i % len(FIELDS)]
                            ),
                        )
                        s.commit()
                        case_codes[case.id or 0] = code
                    hub.prompt_desk(f"quay-{i + 1}")
                    if random.random() < 0.85:
                        pending.append((now + random.uniform(0.5, 2.0), i))
                    next_press = now + random.uniform(0.5, 1.5) * interval
                for due, i in [p for p in pending if p[0] <= now]:
                    pending.remove((due, i))
                    sims[i].press(random.choices([1, 2, 3], weights=[6, 3, 1])[0])
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
