"""``sipas-hub report``: the satisfaction report in the terminal, and the monthly XLSX/CSV."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

HEAD: dict[str, dict[str, Any]] = {
    "vi": {
        "title": "Mức độ hài lòng · {period} · theo {by}",
        "by": {"office": "đơn vị", "desk": "quầy", "official": "công chức", "field": "lĩnh vực"},
        "unit": {"office": "Đơn vị", "desk": "Quầy", "official": "Công chức", "field": "Lĩnh vực"},
        "cols": ["Hạng", "Hợp lệ", "Hài lòng %", "KTC 95 %", "Mức 1/2/3…", "Bị loại",
                 "Giấy", "Hồ sơ", "Phản hồi %", "Đủ mẫu"],
        "yes": "đủ", "no": "chưa đủ", "unknown": "?",
        "excluded": "Bị loại theo lý do",
    },
    "en": {
        "title": "Satisfaction · {period} · by {by}",
        "by": {"office": "office", "desk": "desk", "official": "official", "field": "field"},
        "unit": {"office": "Office", "desk": "Desk", "official": "Official", "field": "Field"},
        "cols": ["Rank", "Valid", "Satisfied %", "95 % CI", "Levels 1/2/3…", "Left out",
                 "Paper", "Cases", "Response %", "Sample ok"],
        "yes": "yes", "no": "no", "unknown": "?",
        "excluded": "Left out, per reason",
    },
}  # fmt: skip


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def render(rep: dict[str, Any], lang: str, console: Console) -> None:
    h = HEAD[lang]
    t = Table(title=h["title"].format(period=rep["period"], by=h["by"][rep["by"]]))
    t.add_column(h["unit"][rep["by"]])
    for i, c in enumerate(h["cols"]):
        t.add_column(c, justify="left" if i == 4 else "right")
    for r in [*rep["rows"], rep["total"]]:
        ad = r["adequacy"]["ok"]
        ci = "–" if r["ci_low"] is None else f"{_pct(r['ci_low'])}–{_pct(r['ci_high'])}"
        t.add_row(
            r["label"],
            "" if r["rank"] is None else str(r["rank"]),
            str(r["valid"]),
            _pct(r["rate"]),
            ci,
            "/".join(str(v) for v in r["levels"].values()),
            str(r["excluded"]),
            str(r["paper"]),
            str(r["cases"]),
            _pct(r["response_rate"]),
            h["unknown"] if ad is None else h["yes"] if ad else h["no"],
            end_section=r is rep["rows"][-1] if rep["rows"] else False,
        )
    console.print(t)
    reasons = rep["total"]["excluded_by_reason"]
    if reasons:
        console.print(h["excluded"] + ":")
        for k, n in reasons.items():
            label = rep["reason_labels"].get(k, k).split(" / ")
            console.print(f"  {label[0] if lang == 'vi' else label[-1]}: {n}")


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        period: str = typer.Option(
            None, help="day:YYYY-MM-DD | month:YYYY-MM | quarter:YYYY-Qn | year:YYYY"
        ),
        from_: datetime = typer.Option(None, "--from", formats=["%Y-%m-%d"], help="first day"),
        to: datetime = typer.Option(None, "--to", formats=["%Y-%m-%d"], help="last day"),
        by: str = typer.Option("office", help="office | desk | official | field"),
        channel: str = typer.Option(None, help="terminal,qr,paper (default: all)"),
        lang: str = typer.Option("vi", help="vi | en"),
        xlsx: Path = typer.Option(None, help="also write the monthly report (needs month:...)"),
        csv_dir: Path = typer.Option(
            None, "--csv", help="also write the monthly report as CSV files into this folder"
        ),
    ) -> None:
        """Satisfaction per office, desk, official or field (Vietnamese headings; --lang en)."""
        from hub import reports
        from hub.config import Settings
        from hub.db import make_engine
        from hub.exports import SHEETS, monthly, to_csv, to_xlsx
        from hub.office import OfficeError
        from hub.periods import resolve

        out, err = Console(), Console(stderr=True)
        if lang not in HEAD:
            err.print("[red]--lang must be vi or en[/]")
            raise typer.Exit(2)
        settings = Settings()
        engine = make_engine(settings.db_url)
        try:
            first: date | None = from_.date() if from_ else None
            last: date | None = to.date() if to else None
            p = resolve(period, first, last)
            rep = reports.satisfaction(
                engine,
                p,
                by=by,
                channels=reports.parse_channels(channel),
                office=settings.office,
                lang=lang,
            )
            render(rep, lang, out)
            if xlsx or csv_dir:
                if not period or not period.startswith("month:"):
                    err.print("[red]--xlsx/--csv need --period month:YYYY-MM[/]")
                    raise typer.Exit(2)
                m = monthly(engine, period[6:], office=settings.office, lang=lang)
                if xlsx:
                    xlsx.write_bytes(to_xlsx(m))
                    err.print(f"monthly report written to {xlsx}")
                if csv_dir:
                    csv_dir.mkdir(parents=True, exist_ok=True)
                    for s in SHEETS:
                        f = csv_dir / f"bao-cao-{period[6:]}-{s}.csv"
                        f.write_text(to_csv(m, s), encoding="utf-8")
                    err.print(f"CSV files written to {csv_dir}")
        except OfficeError as e:
            err.print(f"[red]{e}[/]")
            raise typer.Exit(2) from e
        finally:
            engine.dispose()
