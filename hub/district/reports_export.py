"""The district's monthly report as XLSX (three sheets) or CSV (one sheet), Vietnamese headings.

The layout is the offices' own (hub/exports.py: STT | Đơn vị | Công chức | Tổng số phiếu | per
level: số lượng, tỷ lệ % | ...), with the district's sheets: by office (ranked by the shrunk rate),
by official (each under its office) and by field. Two columns say how much of a figure rests on
the hub's word only: "Trong đó phiếu QR (đơn vị xác nhận)" (QR ratings, which no terminal signs)
and "Trong đó phiếu giấy" (paper tallies).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from hub.district import reports
from hub.district import reports_rollup as ru
from hub.exports import TEXT as HUB_TEXT
from hub.exports import Monthly, level_label
from hub.exports import to_csv as hub_to_csv
from hub.exports import to_xlsx as hub_to_xlsx
from hub.office import OFFICE_TZ
from hub.periods import resolve
from hub.reports import REASON_LABELS

SHEETS = ("office", "official", "field")
TEXT: dict[str, dict[str, str]] = {
    "vi": {
        **HUB_TEXT["vi"],
        "office": "Theo đơn vị",
        "title": "BÁO CÁO TỔNG HỢP KẾT QUẢ ĐÁNH GIÁ SỰ HÀI LÒNG CỦA NGƯỜI DÂN, TỔ CHỨC THÁNG {m}",
        "unit_line": "Phạm vi: {scope} · Lập lúc {at}",
        "all_offices": "toàn huyện ({n} đơn vị)",
        "office_h": "Đơn vị",
        "rank": "Xếp hạng",
        "shrunk": "Tỷ lệ hài lòng điều chỉnh %",
        "attested": "Trong đó phiếu QR (đơn vị xác nhận)",
        "adequacy": "Đủ mẫu theo quy định",
        "yes": "Đủ",
        "no_": "Chưa đủ",
        "unknown": "Không rõ (chưa có hồ sơ)",
    },
    "en": {
        **HUB_TEXT["en"],
        "office": "By office",
        "title": "DISTRICT CITIZEN SATISFACTION REPORT, {m}",
        "unit_line": "Scope: {scope} · Made {at}",
        "all_offices": "whole district ({n} offices)",
        "office_h": "Office",
        "rank": "Rank",
        "shrunk": "Adjusted satisfaction %",
        "attested": "Of which QR (office-attested)",
        "adequacy": "Sample adequate",
        "yes": "Yes",
        "no_": "Not yet",
        "unknown": "Unknown (no cases)",
    },
}


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def _levels(reps: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    scales: set[int] = set()
    for rep in reps:
        for r in [*rep["rows"], rep["total"]]:
            scales.update(int(s) for s in r["by_scale"])
    return [(s, lv) for s in sorted(scales or {3}) for lv in range(1, s + 1)]


def _sheet(
    rep: dict[str, Any], key_heading: str | None, cols: list[tuple[int, int]], t: dict[str, str]
) -> tuple[list[str], list[list[Any]]]:
    lang = "vi" if t is TEXT["vi"] else "en"
    multi = len({s for s, _ in cols}) > 1
    head = [t["no"], t["office_h"]] + ([key_heading] if key_heading else []) + [t["total"]]
    for s, lv in cols:
        label = level_label(s, lv, lang) + (f" ({s})" if multi else "")
        head += [t["count"].format(label=label), t["share"].format(label=label)]
    head += [
        t["rate"], t["ci"], t["shrunk"], t["rank"], t["excluded"], t["paper"], t["attested"],
        t["cases"], t["response"], t["adequacy"],
    ]  # fmt: skip
    out: list[list[Any]] = []
    for i, r in enumerate([*rep["rows"], rep["total"]], 1):
        is_total = r is rep["total"]
        cells: list[Any] = [None if is_total else i]
        if is_total:
            cells.append(t["sum"])
        else:
            cells.append(r["office_name"] or r["office"] or "")
        if key_heading:
            cells.append(None if is_total else r["label"])
        cells.append(r["valid"])
        for s, lv in cols:
            n = r["by_scale"].get(str(s), {}).get(str(lv), 0)
            cells += [n, round(100 * n / r["valid"], 1) if r["valid"] else None]
        ci = (
            f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}" if r["ci_low"] is not None else None
        )
        ok = r["adequacy"]["ok"]
        cells += [
            _pct(r["rate"]),
            ci,
            _pct(r["shrunk_rate"]),
            r["rank"],
            r["excluded"],
            r["paper"],
            r["attested"],
            r["cases"],
            _pct(r["response_rate"]),
            t["unknown"] if ok is None else (t["yes"] if ok else t["no_"]),
        ]
        out.append(cells)
    return head, out


def monthly(
    engine: Engine, month: str, *, offices: Sequence[str] | None = None, lang: str = "vi"
) -> Monthly:
    t = TEXT.get(lang, TEXT["vi"])
    period = resolve(f"month:{month}")
    assert period.first is not None
    kw: dict[str, Any] = {"offices": offices, "lang": lang}
    by_office = reports.satisfaction(engine, period, by="office", **kw)
    by_official = reports.satisfaction(engine, period, by="official", **kw)
    by_field = reports.satisfaction(engine, period, by="field", **kw)
    by_official["rows"].sort(key=lambda r: (r["office_name"] or "", r["key"] is None, r["label"]))
    cols = _levels([by_office, by_official, by_field])
    if offices is not None and len(offices) == 1:
        scope = by_office["rows"][0]["office_name"] if by_office["rows"] else offices[0]
    else:
        with engine.connect() as c:
            n = c.execute(text("SELECT COUNT(*) FROM office")).scalar()
        scope = t["all_offices"].format(n=n if offices is None else len(offices))
    at = datetime.now(OFFICE_TZ).strftime("%d/%m/%Y %H:%M")
    tot = by_office["total"]
    why = ""
    if tot["excluded_by_reason"]:
        why = (
            " ("
            + "; ".join(
                f"{REASON_LABELS.get(k, k).split(' / ')[0 if lang == 'vi' else -1]}: {n}"
                for k, n in tot["excluded_by_reason"].items()
            )
            + ")"
        )
    notes = [
        t["title"].format(m=period.first.strftime("%m/%Y")),
        t["unit_line"].format(scope=scope, at=at),
        t["excluded_line"].format(n=tot["excluded"], why=why),
    ]
    headings, rows = {}, {}
    for sheet, rep, key in (
        ("office", by_office, None),
        ("official", by_official, t["official_h"]),
        ("field", by_field, t["field_h"]),
    ):
        headings[sheet], rows[sheet] = _sheet(rep, key, cols, t)
    for r in rows["field"][:-1]:  # a field's row covers every office asked for
        r[1] = scope
    return Monthly(
        month=month,
        office=scope,
        lang=lang,
        headings=headings,
        rows=rows,
        notes={s: notes for s in SHEETS},
    )


def to_xlsx(rep: Monthly) -> bytes:
    return hub_to_xlsx(rep, SHEETS, TEXT)


def to_csv(rep: Monthly, sheet: str = "office") -> bytes:
    """One sheet, written by the offices' CSV writer (UTF-8 with a byte-order mark, for Excel)."""
    return hub_to_csv(rep, sheet, SHEETS).encode("utf-8")


_CACHE: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_lock = threading.Lock()


def _cached(
    engine: Engine,
    month: str,
    offices: Sequence[str] | None,
    lang: str,
    kind: str,
    make: Callable[[Monthly], bytes],
) -> bytes:
    """Made once per version of the month's figures: the version moves whenever a refresh
    recomputes a day of that month; names and paper tallies, which the rollups do not hold, are
    part of the key."""
    ru.refresh(engine)
    with engine.connect() as c:
        stamp = tuple(
            c.execute(
                text(
                    "SELECT (SELECT COUNT(*) FROM directory_snapshot), "
                    "(SELECT COUNT(*) FROM office), (SELECT COALESCE(MAX(id), 0) FROM paper_box)"
                )
            ).one()
        )
        version = ru.month_version(c, month)
    key = (str(engine.url), month, tuple(offices or ()), lang, kind, version, stamp)
    with _lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    data = make(monthly(engine, month, offices=offices, lang=lang))
    with _lock:
        _CACHE[key] = data
        while len(_CACHE) > 16:
            _CACHE.popitem(last=False)
    return data


def monthly_xlsx(
    engine: Engine, month: str, *, offices: Sequence[str] | None = None, lang: str = "vi"
) -> bytes:
    return _cached(engine, month, offices, lang, "xlsx", to_xlsx)


def monthly_csv(
    engine: Engine,
    month: str,
    *,
    offices: Sequence[str] | None = None,
    lang: str = "vi",
    sheet: str = "office",
) -> bytes:
    if sheet not in SHEETS:
        raise ValueError(f"sheet {sheet!r} is not one of {', '.join(SHEETS)}")
    return _cached(engine, month, offices, lang, f"csv:{sheet}", lambda m: to_csv(m, sheet))
