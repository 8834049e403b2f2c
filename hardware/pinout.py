"""Read ``hardware/pinout.toml`` and check it against the ESP32's pin rules.

The rules are data (the pin sets below, from Espressif's ESP32 datasheet and technical reference
manual), so each broken rule is reported with the pin, what uses it, the rule and what to do.
Everything here is the standard library: a technician's laptop needs nothing else to run it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PINOUT = HERE / "pinout.toml"

# -- the ESP32's pins (original ESP32, as on WROOM-32/32E/32UE modules) ------------------------------
GPIOS = frozenset([*range(0, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)])
FLASH = frozenset(range(6, 12))  # wired to the module's SPI flash
SERIAL_CONSOLE = frozenset({1, 3})  # UART0 TX/RX: the USB serial port (REPL, flashing, mpremote)
INPUT_ONLY = frozenset(range(34, 40))  # no output driver and no internal pull-up/pull-down
STRAPPING = frozenset({0, 2, 5, 12, 15})  # read at reset: they choose boot mode and flash voltage
BOOT_NOISY = frozenset({5, 14, 15})  # drive a signal during boot (a load on them flickers/chirps)
# RTC GPIOs: the ones ext1 can wake the chip from deep sleep with (ESP_EXT1_WAKEUP_ANY_HIGH).
RTC_GPIOS = frozenset({0, 2, 4, 12, 13, 14, 15, 25, 26, 27, *range(32, 40)})
ADC1 = frozenset(range(32, 40))
ADC2 = frozenset({0, 2, 4, 12, 13, 14, 15, 25, 26, 27})  # unusable while Wi-Fi is on
NOT_ON_MODULE = frozenset({37, 38})  # exist on the chip, not brought out by WROOM/WROVER modules
WROVER_PSRAM = frozenset({16, 17})  # taken by the PSRAM on WROVER modules

LOGIC_VOLTS = 3.3
PIN_MAX_VOLTS = 3.3  # absolute maximum is VDD + 0.3 V; stay at VDD
INPUT_HIGH_VOLTS = 0.75 * LOGIC_VOLTS  # V_IH: a level the pin is guaranteed to read as 1
ADC_ACCURATE_VOLTS = {0: 0.95, 2.5: 1.25, 6: 1.75, 11: 2.45}  # Espressif's recommended span tops
PIN_MAX_MILLIAMPS = 20.0  # default drive strength
MIN_BUTTONS, MAX_BUTTONS = 3, 5
SUPPORTED_CHIPS = ("esp32",)


class PinoutError(ValueError):
    """The pinout file cannot be read: every problem found, one per line."""

    def __init__(self, problems: list[str], source: str = "pinout") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class Button:
    position: int  # 1 = leftmost = level 1 (the most satisfied)
    gpio: int
    led_gpio: int
    active: str
    pull: str
    pull_resistor_ohm: int  # external pull resistor; 0 = only the internal one


@dataclass(frozen=True)
class Divider:
    """A resistor divider from a voltage to a pin: source -- top -- pin -- bottom -- GND."""

    gpio: int
    top_ohm: int
    bottom_ohm: int
    max_volts: float
    min_volts: float | None = None
    attenuation_db: float = 11

    @property
    def ratio(self) -> float:
        """Source volts per pin volt (what firmware multiplies an ADC reading by)."""
        return (self.top_ohm + self.bottom_ohm) / self.bottom_ohm

    def pin_volts(self, source_volts: float) -> float:
        return source_volts / self.ratio


@dataclass(frozen=True)
class Scale:
    vi: tuple[str, ...]
    en: tuple[str, ...]
    smile: tuple[float, ...]
    cap_colour: tuple[str, ...]


@dataclass(frozen=True)
class Pinout:
    chip: str
    module: str
    devkit: str
    buttons: tuple[Button, ...]
    led_colour: str
    led_forward_volts: float
    led_resistor_ohm: int
    buzzer_gpio: int
    buzzer_kind: str
    buzzer_driver: str
    vsupply: Divider | None
    usb_sense: Divider | None
    scales: Mapping[int, Scale]
    reasons_vi: tuple[str, ...]
    reasons_en: tuple[str, ...]
    source: str

    @property
    def led_milliamps(self) -> float:
        return (LOGIC_VOLTS - self.led_forward_volts) / self.led_resistor_ohm * 1000

    def uses(self) -> list[Use]:
        """Every pin with what uses it, in a stable order (buttons, LEDs, buzzer, sensing)."""
        out = [Use(b.gpio, f"button {b.position}", "in") for b in self.buttons]
        out += [Use(b.led_gpio, f"LED {b.position}", "out") for b in self.buttons]
        out.append(Use(self.buzzer_gpio, "buzzer", "out"))
        if self.vsupply:
            out.append(Use(self.vsupply.gpio, "supply voltage (ADC)", "adc"))
        if self.usb_sense:
            out.append(Use(self.usb_sense.gpio, "USB sense", "in"))
        return out


@dataclass(frozen=True)
class Use:
    gpio: int
    role: str  # "button 1", "LED 3", "buzzer", ...
    direction: str  # "in", "out" or "adc"


@dataclass(frozen=True)
class Violation:
    gpio: int | None
    role: str
    rule: str  # short rule name, as listed in hardware/README.md
    message: str  # what is wrong and what to do
    severity: str = "error"  # "error" stops the generators; "warning" is printed

    def __str__(self) -> str:
        where = f"GPIO {self.gpio} ({self.role})" if self.gpio is not None else self.role
        return f"{self.severity}: {where}: [{self.rule}] {self.message}"


# -- reading --------------------------------------------------------------------------------------
class _Reader:
    """Pulls typed values out of the parsed TOML, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(
        self, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str
    ) -> Any:
        if key not in table:
            self.problems.append(f"{where}: missing '{key}'")
            return None
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # a bool is an int to Python; a pin number must not be `true`
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.problems.append(f"{where}: '{key}' must be {names}, not {value!r}")
            return None
        return value

    def table(self, data: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
        value = data.get(key)
        if value is None:
            if not optional:
                self.problems.append(f"missing [{key}] section")
            return None
        if not isinstance(value, dict):
            self.problems.append(f"[{key}] must be a table")
            return None
        return value


def _divider(r: _Reader, t: Mapping[str, Any], name: str, *, sense: bool) -> Divider | None:
    gpio = r.get(t, "gpio", int, f"[{name}]")
    top = r.get(t, "divider_top_ohm", int, f"[{name}]")
    bottom = r.get(t, "divider_bottom_ohm", int, f"[{name}]")
    vmax = r.get(t, "max_volts", (int, float), f"[{name}]")
    vmin = r.get(t, "min_volts", (int, float), f"[{name}]") if sense else None
    att = r.get(t, "attenuation_db", (int, float), f"[{name}]") if not sense else 11
    if None in (gpio, top, bottom, vmax, att) or (sense and vmin is None):
        return None
    if top < 0 or bottom <= 0:
        r.problems.append(f"[{name}]: divider resistors must be positive (bottom > 0)")
        return None
    if att not in ADC_ACCURATE_VOLTS:
        r.problems.append(f"[{name}]: attenuation_db must be one of {sorted(ADC_ACCURATE_VOLTS)}")
        return None
    return Divider(gpio, top, bottom, float(vmax), None if vmin is None else float(vmin), att)


def parse_pinout(data: Mapping[str, Any], source: str = "pinout") -> Pinout:
    """Build a :class:`Pinout` from parsed TOML; raise :class:`PinoutError` listing every problem."""
    r = _Reader()
    if data.get("schema") != 1:
        r.problems.append("'schema = 1' expected at the top (this tool reads version 1)")
    board = r.table(data, "board") or {}
    chip: Any = r.get(board, "chip", str, "[board]") if board else None
    module: Any = r.get(board, "module", str, "[board]") if board else None
    devkit = board.get("devkit", "") if board else ""

    defaults = r.table(data, "buttons", optional=True) or {}
    raw_buttons = data.get("button")
    buttons: list[Button] = []
    if not isinstance(raw_buttons, list) or not raw_buttons:
        r.problems.append("no [[button]] entries (3 to 5 expected)")
        raw_buttons = []
    for i, raw in enumerate(raw_buttons, 1):
        if not isinstance(raw, dict):
            r.problems.append(f"[[button]] #{i} must be a table")
            continue
        t = {**defaults, **raw}
        where = f"[[button]] #{i}"
        vals = [
            r.get(t, "position", int, where),
            r.get(t, "gpio", int, where),
            r.get(t, "led_gpio", int, where),
            r.get(t, "active", str, where),
            r.get(t, "pull", str, where),
            r.get(t, "pull_resistor_ohm", int, where),
        ]
        if None not in vals:
            buttons.append(Button(*vals))
    if raw_buttons and not MIN_BUTTONS <= len(raw_buttons) <= MAX_BUTTONS:
        r.problems.append(
            f"{len(raw_buttons)} buttons: the terminal has {MIN_BUTTONS} to {MAX_BUTTONS} "
            "(one per level of the rating scale)"
        )
    positions = [b.position for b in buttons]
    if len(buttons) == len(raw_buttons) and positions != list(range(1, len(buttons) + 1)):
        r.problems.append(
            f"button positions are {positions}: list them left to right as 1, 2, 3, ... "
            "(position 1 is level 1, the leftmost button as the citizen sees it)"
        )

    leds = r.table(data, "leds") or {}
    led_colour: Any = r.get(leds, "colour", str, "[leds]") if leds else None
    led_vf: Any = r.get(leds, "forward_volts", (int, float), "[leds]") if leds else None
    led_r: Any = r.get(leds, "resistor_ohm", int, "[leds]") if leds else None
    if isinstance(led_r, int) and led_r <= 0:
        r.problems.append("[leds]: resistor_ohm must be positive (an LED needs its resistor)")

    buzzer = r.table(data, "buzzer") or {}
    bz_gpio: Any = r.get(buzzer, "gpio", int, "[buzzer]") if buzzer else None
    bz_kind = buzzer.get("kind", "passive")
    bz_driver = buzzer.get("driver", "npn")

    vs = r.table(data, "vsupply", optional=True)
    vsupply = _divider(r, vs, "vsupply", sense=False) if vs else None
    us = r.table(data, "usb_sense", optional=True)
    usb_sense = _divider(r, us, "usb_sense", sense=True) if us else None

    scales: dict[int, Scale] = {}
    raw_scales = r.table(data, "scales") or {}
    for key, t in raw_scales.items():
        where = f"[scales.{key}]"
        if not (str(key).isdigit() and isinstance(t, dict)):
            r.problems.append(f"{where}: expected [scales.3], [scales.4] or [scales.5]")
            continue
        n = int(key)
        cols = [r.get(t, k, list, where) for k in ("vi", "en", "smile", "cap_colour")]
        if None in cols:
            continue
        if any(len(c) != n for c in cols):
            r.problems.append(f"{where}: vi, en, smile and cap_colour need {n} entries each")
            continue
        vi, en, smile, colour = cols
        scales[n] = Scale(tuple(vi), tuple(en), tuple(float(s) for s in smile), tuple(colour))
    reasons = r.table(data, "reasons", optional=True) or {}
    reasons_vi = tuple(reasons.get("vi", ()))
    reasons_en = tuple(reasons.get("en", ()))

    if r.problems:
        raise PinoutError(r.problems, source)
    return Pinout(
        chip=chip,
        module=module,
        devkit=devkit,
        buttons=tuple(buttons),
        led_colour=led_colour,
        led_forward_volts=float(led_vf),
        led_resistor_ohm=led_r,
        buzzer_gpio=bz_gpio,
        buzzer_kind=bz_kind,
        buzzer_driver=bz_driver,
        vsupply=vsupply,
        usb_sense=usb_sense,
        scales=scales,
        reasons_vi=reasons_vi,
        reasons_en=reasons_en,
        source=source,
    )


def read_toml(path: Path = PINOUT) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise PinoutError([f"cannot read it: {e.strerror}"], str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise PinoutError([f"not valid TOML: {e}"], str(path)) from e


def load_pinout(path: Path = PINOUT) -> Pinout:
    return parse_pinout(read_toml(path), str(path))


# -- the rules ------------------------------------------------------------------------------------
def check_pinout(p: Pinout) -> list[Violation]:
    """Every broken ESP32 rule, errors and warnings, in a stable order."""
    out: list[Violation] = []

    def bad(u: Use | None, rule: str, msg: str, severity: str = "error") -> None:
        out.append(Violation(u.gpio if u else None, u.role if u else "board", rule, msg, severity))

    if p.chip not in SUPPORTED_CHIPS:
        bad(
            None,
            "chip",
            f"chip {p.chip!r}: this pinout and its rules are for the original ESP32 "
            "(ESP32-S3 has other RTC GPIOs, ESP32-C3 has no ext1 wake-up); "
            'set chip = "esp32" or make a pin map for that chip',
        )
    wrover = "WROVER" in p.module.upper()

    uses = p.uses()
    for u in uses:
        g = u.gpio
        if g not in GPIOS:
            bad(u, "not-a-gpio", "the ESP32 has GPIO 0-19, 21-23, 25-27 and 32-39 only")
            continue
        if g in FLASH:
            bad(u, "flash", "GPIO 6-11 are wired to the module's SPI flash: choose another pin")
        if g in SERIAL_CONSOLE:
            bad(u, "serial-console", "GPIO 1 and 3 are the USB serial port (flashing, REPL)")
        if g in NOT_ON_MODULE:
            bad(u, "not-on-module", "GPIO 37 and 38 are not brought out by WROOM/WROVER modules")
        if wrover and g in WROVER_PSRAM:
            bad(u, "psram", "on a WROVER module GPIO 16 and 17 belong to the PSRAM: use a WROOM")
        if g in INPUT_ONLY and u.direction == "out":
            bad(u, "input-only", "GPIO 34-39 are input-only: an output needs another pin")
        if u.direction == "out" and g in STRAPPING:
            bad(
                u,
                "strapping-output",
                "a strapping pin: its level at reset chooses the boot mode, so a load on it can "
                "stop the board from starting; prefer another pin",
                "warning",
            )
        elif u.direction == "out" and g in BOOT_NOISY:
            bad(
                u,
                "boot-noise",
                "drives a signal during boot: this output flickers at each reset",
                "warning",
            )
        if u.direction == "adc":
            if g in ADC2:
                bad(
                    u, "adc2", "ADC2 cannot be read while Wi-Fi is on: use an ADC1 pin (GPIO 32-39)"
                )
            elif g not in ADC1:
                bad(u, "not-adc", "not an ADC pin: use an ADC1 pin (GPIO 32-39)")

    for b in p.buttons:
        u = Use(b.gpio, f"button {b.position}", "in")
        if b.gpio in STRAPPING:
            bad(
                u,
                "strapping",
                "GPIO 0, 2, 5, 12 and 15 are strapping pins: a button held at reset would change "
                "the boot mode (or the flash voltage, GPIO 12); choose another pin",
            )
        if b.gpio in GPIOS and b.gpio not in RTC_GPIOS:
            bad(
                u,
                "ext1-wake",
                "not an RTC GPIO, so ext1 cannot wake the terminal from deep sleep with it: use "
                "GPIO 4, 13, 14, 25-27 or 32-39",
            )
        if b.active != "high" or b.pull != "down":
            bad(
                u,
                "active-high",
                f"wired active-{b.active} with a pull-{b.pull}: buttons must be active-high with "
                "pull-downs (ext1 wakes on ANY_HIGH)",
            )
        if b.gpio in INPUT_ONLY and b.pull_resistor_ohm <= 0:
            bad(
                u,
                "no-internal-pull",
                "GPIO 34-39 have no internal pull resistors: fit an external pull-down "
                "(pull_resistor_ohm = 10000)",
            )

    seen: dict[int, Use] = {}
    for u in uses:
        first = seen.setdefault(u.gpio, u)
        if first is not u:
            bad(u, "duplicate", f"GPIO {u.gpio} is already used by {first.role}")

    if p.led_milliamps > PIN_MAX_MILLIAMPS:
        bad(
            None,
            "led-current",
            f"LEDs: ({LOGIC_VOLTS} V - {p.led_forward_volts} V) / {p.led_resistor_ohm} ohm = "
            f"{p.led_milliamps:.1f} mA, over the {PIN_MAX_MILLIAMPS:.0f} mA a pin gives: "
            "use a larger resistor",
        )
    elif p.led_milliamps <= 0:
        bad(
            None,
            "led-current",
            f"LEDs: forward voltage {p.led_forward_volts} V: will not light at 3.3 V",
        )

    for name, d in (("supply voltage (ADC)", p.vsupply), ("USB sense", p.usb_sense)):
        if d is None:
            continue
        u = Use(d.gpio, name, "in")
        high = d.pin_volts(d.max_volts)
        if high > PIN_MAX_VOLTS:
            bad(
                u,
                "overvoltage",
                f"{d.max_volts} V through the divider is {high:.2f} V at the pin, over "
                f"{PIN_MAX_VOLTS} V: make the top resistor larger",
            )
        elif d is p.vsupply and high > ADC_ACCURATE_VOLTS[d.attenuation_db]:
            bad(
                u,
                "adc-range",
                f"{d.max_volts} V through the divider is {high:.2f} V at the pin, above the "
                f"{ADC_ACCURATE_VOLTS[d.attenuation_db]} V the ADC reads accurately at "
                f"{d.attenuation_db} dB: make the divider ratio larger",
            )
        if d.min_volts is not None and d.pin_volts(d.min_volts) < INPUT_HIGH_VOLTS:
            bad(
                u,
                "sense-level",
                f"{d.min_volts} V through the divider is {d.pin_volts(d.min_volts):.2f} V, "
                f"below the {INPUT_HIGH_VOLTS:.2f} V the pin is sure to read as high: "
                "make the bottom resistor larger",
            )
    return out


def errors(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]
