"""Battery life of a battery-mode terminal versus presses per day.

    python -m hardware.power_budget [--wake-json wake.json] [--capacity-mah 3000] ...

The awake time of one wake comes from the host simulator (``bench/firmware_wake.py`` prints it;
``--wake-json`` reads that output, ``--press-ms``/``--beat-ms`` give it by hand); the currents and
the device-only phases come from published ESP32 figures (``SOURCES``) or from the options.
Prints a table (rich, on stderr) and one JSON object (stdout).

Model, per day (every press is counted as its own wake, which is the worst case: presses close
together share one wake on the device):

- asleep all day at the board's deep-sleep current;
- each wake: MicroPython boots (``boot_ms`` at ``boot_ma``, radio off), Wi-Fi associates
  (``assoc_ms`` at ``radio_ma``), then the measured application work (connect to the broker,
  publish, the hub's ack, a heartbeat if due) at ``radio_ma``;
- a timer wake every ``beat_s`` for the heartbeat (boot + association + a heartbeat wake's work),
  and one extra heartbeat on a press wake every ``beat_wakes`` presses when that is more often.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MS_PER_HOUR = 3_600_000
DAY_S = 86_400

# Where the default figures come from (documents named so they can be looked up).
SOURCES = {
    "chip_sleep_ua": "ESP32 Series Datasheet (Espressif), table 'Power Consumption by Power Modes':"
    " Deep-sleep, RTC timer + RTC memory: 10 µA",
    "boot_ma": "ESP32 Series Datasheet, same table: Modem-sleep (CPU on, radio off) at 240 MHz,"
    " dual-core: 30-68 mA; 50 mA taken",
    "radio_ma": "ESP32 Series Datasheet, 'RF Power-Consumption Specifications': Rx 95-100 mA,"
    " Tx 802.11b 19.5 dBm 240 mA; ESP32-WROOM-32 datasheet: Rx 80-90 mA, Tx 160-260 mA;"
    " 120 mA taken as the average of a mostly-listening radio with short Tx bursts",
    "devkitc_sleep_ua": "lucidar.me, 'Power consumption of ESP32 boards' (measured in deep sleep):"
    " ESP32-DevKitC V4 3.8 mA at 5 V (USB-UART bridge, LED and AMS1117 regulator stay powered);"
    " LOLIN32 12 µA; FireBeetle DFR0478 10 µA",
    "ldo_iq_ua": "Microchip MCP1700 datasheet: quiescent current 1.6 µA typical",
    "divider_ua": "the reference board's supply divider (hardware/pinout.toml: 100k/100k) draws"
    " V/200 kΩ all the time: 18.5 µA at 3.7 V",
    "assoc_ms": "estimate: Wi-Fi association + DHCP, 1-3 s typical (the ESP8266EX datasheet"
    " quotes 0.3-1 s to connect to the AP; DHCP adds to it); measure on the site's access point",
    "boot_ms": "estimate: bootloader (image check), MicroPython start-up, filesystem mount and the"
    " application's imports after a deep-sleep wake; measure on the board",
}


@dataclass(frozen=True)
class Board:
    name: str
    sleep_ua: float  # whole board in deep sleep, µA


BOARDS = (
    Board("ESP32-DevKitC V4 (USB-UART, AMS1117)", 3800.0),
    Board("bare module + low-Iq LDO, 100k/100k divider", 10.0 + 1.6 + 18.5),
    Board("bare module + low-Iq LDO, 1M/1M divider", 10.0 + 1.6 + 1.85),
)


@dataclass(frozen=True)
class Params:
    press_ms: float = 25.0  # measured application work of a press wake (host simulator)
    beat_ms: float = 220.0  # measured work of a wake with a heartbeat (includes the linger)
    boot_ms: float = 400.0
    boot_ma: float = 50.0
    assoc_ms: float = 1500.0
    radio_ma: float = 120.0
    beat_s: float = 21_600.0  # battery_beat_s
    beat_wakes: int = 50  # battery_beat_wakes
    capacity_mah: float = 3000.0  # one 18650 Li-ion cell
    usable: float = 0.8  # regulator cut-off, self-discharge, ageing


def wake_mah(p: Params, work_ms: float) -> float:
    """Charge of one wake in mAh: boot (radio off), then association and the work (radio on)."""
    return (p.boot_ms * p.boot_ma + (p.assoc_ms + work_ms) * p.radio_ma) / MS_PER_HOUR


def daily_mah(p: Params, sleep_ua: float, presses_per_day: float) -> dict[str, float]:
    timer_beats = DAY_S / p.beat_s
    press_beats = presses_per_day / p.beat_wakes
    extra_beats = max(0.0, press_beats - timer_beats)  # heartbeats riding on press wakes
    parts = {
        "sleep": sleep_ua / 1000 * 24,
        "presses": presses_per_day * wake_mah(p, p.press_ms),
        "heartbeat_wakes": timer_beats * wake_mah(p, p.beat_ms),
        "heartbeats_on_presses": extra_beats * (p.beat_ms - p.press_ms) * p.radio_ma / MS_PER_HOUR,
    }
    parts["total"] = sum(parts.values())
    return parts


def life_days(p: Params, sleep_ua: float, presses_per_day: float) -> float:
    return p.capacity_mah * p.usable / daily_mah(p, sleep_ua, presses_per_day)["total"]


def from_wake_json(path: Path) -> dict[str, float]:
    """The p50 awake times from bench/firmware_wake.py's output."""
    data = json.loads(path.read_text())
    return {
        "press_ms": float(data["press"]["wake_to_sleep_ms"]["p50"]),
        "beat_ms": float(data["press_with_heartbeat"]["wake_to_sleep_ms"]["p50"]),
    }


def budget(p: Params, presses: list[float], boards: tuple[Board, ...] = BOARDS) -> dict[str, Any]:
    rows = []
    for n in presses:
        for b in boards:
            d = daily_mah(p, b.sleep_ua, n)
            rows.append(
                {
                    "presses_per_day": n,
                    "board": b.name,
                    "sleep_ua": round(b.sleep_ua, 2),
                    "mah_per_day": round(d["total"], 3),
                    "sleep_share": round(d["sleep"] / d["total"], 3),
                    "life_days": round(life_days(p, b.sleep_ua, n), 1),
                }
            )
    return {
        "params": asdict(p),
        "wake_mah": {
            "press": round(wake_mah(p, p.press_ms), 5),
            "heartbeat": round(wake_mah(p, p.beat_ms), 5),
        },
        "rows": rows,
        "sources": SOURCES,
    }


def table(result: dict[str, Any], boards: tuple[Board, ...] = BOARDS) -> Table:
    t = Table(title="Battery life, days (usable capacity / daily charge)")
    t.add_column("presses/day", justify="right")
    for b in boards:
        t.add_column(f"{b.name}\n({b.sleep_ua:g} µA asleep)", justify="right")
    by: dict[float, list[str]] = {}
    for r in result["rows"]:
        by.setdefault(r["presses_per_day"], []).append(
            f"{r['life_days']:,.0f} ({r['sleep_share']:.0%} asleep)"
        )
    for n, cells in by.items():
        t.add_row(f"{n:g}", *cells)
    return t


def main(argv: list[str] | None = None) -> int:
    d = Params()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wake-json", type=Path, help="output of bench/firmware_wake.py")
    ap.add_argument("--press-ms", type=float, help=f"work of a press wake (default {d.press_ms})")
    ap.add_argument("--beat-ms", type=float, help=f"work of a heartbeat wake ({d.beat_ms})")
    ap.add_argument("--boot-ms", type=float, default=d.boot_ms)
    ap.add_argument("--boot-ma", type=float, default=d.boot_ma)
    ap.add_argument("--assoc-ms", type=float, default=d.assoc_ms)
    ap.add_argument("--radio-ma", type=float, default=d.radio_ma)
    ap.add_argument("--beat-s", type=float, default=d.beat_s, help="battery_beat_s")
    ap.add_argument("--beat-wakes", type=int, default=d.beat_wakes, help="battery_beat_wakes")
    ap.add_argument("--capacity-mah", type=float, default=d.capacity_mah)
    ap.add_argument("--usable", type=float, default=d.usable)
    ap.add_argument("--presses", default="0,20,50,100,200,500", help="presses per day, comma list")
    a = ap.parse_args(argv)
    measured: dict[str, float] = {}
    if a.wake_json:
        try:
            measured = from_wake_json(a.wake_json)
        except (OSError, ValueError, KeyError) as e:
            print(
                f"cannot read {a.wake_json}: {e}; run `.venv/bin/python bench/firmware_wake.py"
                f" > {a.wake_json}` first",
                file=sys.stderr,
            )
            return 2
    p = Params(
        press_ms=a.press_ms or measured.get("press_ms", d.press_ms),
        beat_ms=a.beat_ms or measured.get("beat_ms", d.beat_ms),
        boot_ms=a.boot_ms,
        boot_ma=a.boot_ma,
        assoc_ms=a.assoc_ms,
        radio_ma=a.radio_ma,
        beat_s=a.beat_s,
        beat_wakes=a.beat_wakes,
        capacity_mah=a.capacity_mah,
        usable=a.usable,
    )
    result = budget(p, [float(x) for x in a.presses.split(",") if x])
    result["awake_times_from"] = str(a.wake_json) if a.wake_json else "defaults/options"
    Console(stderr=True).print(table(result))
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
