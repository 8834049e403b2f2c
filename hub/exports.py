"""The monthly report an office sends to the district (seed 000: "định kỳ hàng tháng tổng hợp, báo
cáo kết quả đánh giá"), as XLSX (three sheets) or CSV (one sheet per file), Vietnamese headings.

- by official: STT | Đơn vị | Công chức | Tổng số phiếu | per level: số lượng, tỷ lệ % | ...
- by field (lĩnh vực): the same with the field instead of the official;
- by case (hồ sơ): every case handed back in the month, with its rating (or "Chưa đánh giá").

"Tổng số phiếu" counts the valid ratings of every channel (terminal, QR code, paper tallies); the
ratings left out are in their own column and, per reason, in the note above each table.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from hub.alerts import LEVEL_LABELS
from hub.office import OFFICE_TZ
from hub.periods import resolve
from hub.reports import REASON_LABELS, satisfaction
from hub.reports.rollup import (
    ACTIVE_EXCLUSION,
    OFFICIAL,
    day_bounds,
    month_version,
    rollups_for,
)

LEVEL_LABELS_EN: dict[int, dict[int, str]] = {
    3: {1: "Very satisfied", 2: "Satisfied", 3: "Dissatisfied"},
    4: {1: "Very satisfied", 2: "Satisfied", 3: "Dissatisfied", 4: "Very dissatisfied"},
    5: {
        1: "Very satisfied",
        2: "Satisfied",
        3: "Neutral",
        4: "Dissatisfied",
        5: "Very dissatisfied",
    },
}
SHEETS = ("official", "field", "case")
TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "official": "Theo công chức",
        "field": "Theo lĩnh vực",
        "case": "Theo hồ sơ",
        "title": "BÁO CÁO KẾT QUẢ ĐÁNH GIÁ SỰ HÀI LÒNG CỦA NGƯỜI DÂN, TỔ CHỨC THÁNG {m}",
        "unit_line": "Đơn vị: {office} · Lập lúc {at}",
        "excluded_line": "Số phiếu bị loại (không tính vào kết quả): {n}{why}",
        "no": "STT",
        "unit": "Đơn vị",
        "official_h": "Công chức",
        "field_h": "Lĩnh vực",
        "total": "Tổng số phiếu",
        "count": "{label}: số lượng",
        "share": "{label}: tỷ lệ %",
        "rate": "Tỷ lệ hài lòng %",
        "ci": "Khoảng tin cậy 95 %",
        "excluded": "Số phiếu bị loại",
        "paper": "Trong đó phiếu giấy",
        "cases": "Số hồ sơ đã trả",
        "response": "Tỷ lệ phản hồi %",
        "code": "Mã hồ sơ",
        "procedure": "Thủ tục hành chính",
        "desk": "Quầy",
        "handed_back": "Ngày trả kết quả",
        "rating": "Mức đánh giá",
        "rated_at": "Thời gian đánh giá",
        "status": "Ghi chú",
        "not_rated": "Chưa đánh giá",
        "valid": "Hợp lệ",
        "left_out": "Bị loại: {why}",
        "sum": "Tổng cộng",
        "none_official": "(chưa gắn công chức)",
        "none_field": "(không rõ lĩnh vực)",
    },
    "en": {
        "official": "By official",
        "field": "By field",
        "case": "By case",
        "title": "CITIZEN SATISFACTION REPORT, {m}",
        "unit_line": "Unit: {office} · Made {at}",
        "excluded_line": "Ratings left out (not counted): {n}{why}",
        "no": "No.",
        "unit": "Unit",
        "official_h": "Official",
        "field_h": "Field",
        "total": "Total ratings",
        "count": "{label}: count",
        "share": "{label}: %",
        "rate": "Satisfaction %",
        "ci": "95 % interval",
        "excluded": "Left out",
        "paper": "Of which paper",
        "cases": "Cases handed back",
        "response": "Response rate %",
        "code": "Case code",
        "procedure": "Procedure",
        "desk": "Desk",
        "handed_back": "Handed back",
        "rating": "Rating",
        "rated_at": "Rated at",
        "status": "Note",
        "not_rated": "Not rated",
        "valid": "Valid",
        "left_out": "Left out: {why}",
        "sum": "Total",
        "none_official": "(no official)",
        "none_field": "(no field)",
    },
}


def level_label(scale: int, level: int, lang: str = "vi") -> str:
    table = LEVEL_LABELS if lang == "vi" else LEVEL_LABELS_EN
    return table.get(scale, {}).get(level, f"{level}/{scale}")


@dataclass
class Monthly:
    """The monthly report as tables of cells: headings and rows per sheet, notes above them."""

    month: str
    office: str
    lang: str
    headings: dict[str, list[str]]
    rows: dict[str, list[list[Any]]]
    notes: dict[str, list[str]]


def _pct(n: int, d: int) -> float | None:
    return round(100 * n / d, 1) if d else None


def _level_columns(reports: list[dict[str, Any]]) -> list[tuple[int, int]]:
    scales: set[int] = set()
    for rep in reports:
        for r in [*rep["rows"], rep["total"]]:
            scales.update(int(s) for s in r["by_scale"])
    return [(s, lv) for s in sorted(scales or {3}) for lv in range(1, s + 1)]


def _summary(
    rep: dict[str, Any],
    key_heading: str,
    office: str,
    cols: list[tuple[int, int]],
    t: dict[str, str],
) -> tuple[list[str], list[list[Any]]]:
    lang_labels = {c: level_label(*c, lang="vi" if t is TEXT["vi"] else "en") for c in cols}
    multi = len({s for s, _ in cols}) > 1
    head = [t["no"], t["unit"], key_heading, t["total"]]
    for c in cols:
        label = lang_labels[c] + (f" ({c[0]} mức)" if multi and t is TEXT["vi"] else "")
        label += f" ({c[0]} levels)" if multi and t is not TEXT["vi"] else ""
        head += [t["count"].format(label=label), t["share"].format(label=label)]
    head += [t["rate"], t["ci"], t["excluded"], t["paper"], t["cases"], t["response"]]
    out = []
    body = sorted(rep["rows"], key=lambda r: (r["key"] is None, r["label"]))
    for i, r in enumerate([*body, rep["total"]], 1):
        is_total = r is rep["total"]
        cells: list[Any] = [None if is_total else i, office, t["sum"] if is_total else r["label"]]
        cells.append(r["valid"])
        for s, lv in cols:
            n = r["by_scale"].get(str(s), {}).get(str(lv), 0)
            cells += [n, _pct(n, r["valid"])]
        ci = (
            f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}" if r["ci_low"] is not None else None
        )
        cells += [
            None if r["rate"] is None else round(100 * r["rate"], 1),
            ci,
            r["excluded"],
            r["paper"],
            r["cases"],
            None if r["response_rate"] is None else round(100 * r["response_rate"], 1),
        ]
        out.append(cells)
    return head, out


def _by_case(
    engine: Engine, first: date, last: date, t: dict[str, str], lang: str
) -> list[list[Any]]:
    ro = rollups_for(engine)
    c = ro.conn()
    start, end = day_bounds(first, last)
    desks = dict(c.execute("SELECT id, name FROM desk").fetchall())
    officials = dict(c.execute("SELECT id, name FROM official").fetchall())
    rows = c.execute(
        "SELECT ca.code, ca.procedure, ca.field, ca.desk_id, ca.official_id, ca.handed_back_at, "
        "r.level, r.scale, r.press_time, "
        f"(SELECT group_concat(e.reason, ', ') FROM exclusion e WHERE {ACTIVE_EXCLUSION}), "
        f"CASE WHEN r.id IS NULL THEN NULL ELSE {OFFICIAL} END "
        'FROM "case" ca LEFT JOIN rating r ON r.id = (SELECT r2.id FROM rating r2 '
        "WHERE r2.case_id = ca.id AND r2.link_status IN ('linked', 'late') ORDER BY r2.id LIMIT 1) "
        "WHERE ca.handed_back_at >= ? AND ca.handed_back_at < ? "
        "ORDER BY ca.handed_back_at, ca.id",  # noqa: S608
        (start, end),
    ).fetchall()
    out: list[list[Any]] = []
    for i, (code, proc, fld, desk, off, handed, level, scale, pressed, reasons, roff) in enumerate(
        rows, 1
    ):
        who = roff if level is not None and roff is not None else off
        if level is None:
            status, rating, at = t["not_rated"], None, None
        else:
            rating = f"{level_label(scale, level, lang)} ({level}/{scale})"
            at = _local(pressed)
            if reasons:
                why = ", ".join(
                    REASON_LABELS.get(x, x).split(" / ")[0 if lang == "vi" else -1]
                    for x in reasons.split(", ")
                )
                status = t["left_out"].format(why=why)
            else:
                status = t["valid"]
        out.append(
            [
                i,
                code,
                proc,
                fld,
                desks.get(desk, desk),
                officials.get(who, who) if who else None,
                _local(handed),
                rating,
                at,
                status,
            ]
        )
    return out


def _local(db_text: str | None) -> str | None:
    """Stored UTC text -> dd/mm/yyyy HH:MM in office time (STYLE.md 9)."""
    if db_text is None:
        return None
    t = datetime.fromisoformat(db_text).replace(tzinfo=UTC).astimezone(OFFICE_TZ)
    return t.strftime("%d/%m/%Y %H:%M")


def _excluded_note(rep: dict[str, Any], t: dict[str, str], lang: str) -> str:
    tot = rep["total"]
    why = ""
    if tot["excluded_by_reason"]:
        parts = [
            f"{REASON_LABELS.get(k, k).split(' / ')[0 if lang == 'vi' else -1]}: {n}"
            for k, n in tot["excluded_by_reason"].items()
        ]
        why = " (" + "; ".join(parts) + ")"
    return t["excluded_line"].format(n=tot["excluded"], why=why)


def monthly(
    engine: Engine, month: str, *, office: str, lang: str = "vi", direct: bool = False
) -> Monthly:
    """The monthly report of ``month`` (YYYY-MM, office time); ``direct``: without the rollups
    (the benchmark's baseline)."""
    t = TEXT.get(lang, TEXT["vi"])
    period = resolve(f"month:{month}")
    assert period.first is not None and period.last is not None
    by_off = satisfaction(engine, period, by="official", office=office, lang=lang, direct=direct)
    by_field = satisfaction(engine, period, by="field", office=office, lang=lang, direct=direct)
    cols = _level_columns([by_off, by_field])
    m_label = period.first.strftime("%m/%Y")
    at = datetime.now(OFFICE_TZ).strftime("%d/%m/%Y %H:%M")
    head_o, rows_o = _summary(by_off, t["official_h"], office, cols, t)
    head_f, rows_f = _summary(by_field, t["field_h"], office, cols, t)
    head_c = [
        t["no"], t["code"], t["procedure"], t["field_h"], t["desk"], t["official_h"],
        t["handed_back"], t["rating"], t["rated_at"], t["status"],
    ]  # fmt: skip
    rows_c = _by_case(engine, period.first, period.last, t, lang)
    base = [t["title"].format(m=m_label), t["unit_line"].format(office=office, at=at)]
    note = _excluded_note(by_off, t, lang)
    return Monthly(
        month=month,
        office=office,
        lang=lang,
        headings={"official": head_o, "field": head_f, "case": head_c},
        rows={"official": rows_o, "field": rows_f, "case": rows_c},
        notes={"official": [*base, note], "field": [*base, note], "case": base},
    )


_CACHE: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_CACHE_SIZE = 12
_cache_lock = threading.Lock()


def _cached(
    engine: Engine, month: str, office: str, lang: str, kind: str, make: Callable[[Monthly], bytes]
) -> bytes:
    """A month's export is made once per version of its figures: reports of past months are
    asked for again and again and change rarely (a late rating, an exclusion), and a month of a busy
    office is tens of thousands of cases. The version moves with every change the rollups take
    in for that month (hub/reports/rollup.py ``bump_months``); names of desks and officials and the
    paper tallies, which the rollups do not hold, are part of the key."""
    ro = rollups_for(engine)
    ro.refresh()
    c = ro.conn()
    key = (
        str(engine.url),
        month,
        office,
        lang,
        kind,
        month_version(c, month),
        c.execute(
            "SELECT (SELECT group_concat(id || '=' || name, char(31)) FROM desk), "
            "(SELECT group_concat(id || '=' || name, char(31)) FROM official), "
            "(SELECT COALESCE(MAX(id), 0) FROM papertally), (SELECT COALESCE(MAX(id), 0) "
            "FROM paperbox)"
        ).fetchone(),
    )
    with _cache_lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    data = make(monthly(engine, month, office=office, lang=lang))
    with _cache_lock:
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return data


def monthly_xlsx(engine: Engine, month: str, *, office: str, lang: str = "vi") -> bytes:
    """The monthly report as XLSX bytes (cached per version of the month's figures)."""
    return _cached(engine, month, office, lang, "xlsx", to_xlsx)


def monthly_csv(
    engine: Engine, month: str, *, office: str, lang: str = "vi", sheet: str = "official"
) -> bytes:
    """One sheet of the monthly report as CSV bytes (UTF-8 with BOM; cached likewise)."""
    if sheet not in SHEETS:
        raise ValueError(f"sheet {sheet!r} is not one of {', '.join(SHEETS)}")
    return _cached(
        engine, month, office, lang, f"csv:{sheet}", lambda m: to_csv(m, sheet).encode("utf-8")
    )


def to_xlsx(
    rep: Monthly,
    sheets: Sequence[str] = SHEETS,
    text: dict[str, dict[str, str]] = TEXT,
) -> bytes:
    """The sheets in one workbook (write-only mode: a month of cases streams out); the district's
    export passes its own sheets and sheet names."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    t = text.get(rep.lang, text["vi"])
    wb = Workbook(write_only=True)
    bold = Font(bold=True)
    for sheet in sheets:
        ws = wb.create_sheet(t[sheet])
        ws.freeze_panes = f"A{len(rep.notes[sheet]) + 3}"
        for i, line in enumerate(rep.notes[sheet]):
            cell = WriteOnlyCell(ws, line)
            if i == 0:
                cell.font = bold
            ws.append([cell])
        ws.append([])
        head = []
        for h in rep.headings[sheet]:
            cell = WriteOnlyCell(ws, h)
            cell.font = bold
            head.append(cell)
        ws.append(head)
        for r in rep.rows[sheet]:
            ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def to_csv(rep: Monthly, sheet: str = "official", sheets: Sequence[str] = SHEETS) -> str:
    """One sheet as CSV (UTF-8 with a byte-order mark, so spreadsheet programs read the
    Vietnamese letters), headings first, no notes, an empty cell for a missing figure, CRLF line
    ends. The only CSV writer of the reports: the district's export passes its own sheets."""
    if sheet not in sheets:
        raise ValueError(f"sheet {sheet!r} is not one of {', '.join(sheets)}")
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(rep.headings[sheet])
    for r in rep.rows[sheet]:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()
