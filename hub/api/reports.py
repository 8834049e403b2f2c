"""``/api/v1/reports``: satisfaction per unit and period, the hour × weekday heat map, and the
monthly report to the district (XLSX, CSV). Figures and formulas: docs/reports.md.

An official (role ``official``) gets only their own results: every figure is computed over the
ratings that belong to them (after corrections) and the cases they handed back; shrunk rates and
ranks, which would reveal the office's figures, are left out (null).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from hub import reports
from hub.api.auth import ANY_ROLE, OFFICIAL, READ_ALL, Principal, require, scope_official
from hub.api.jsonout import answer
from hub.exports import monthly_csv as make_csv
from hub.exports import monthly_xlsx as make_xlsx
from hub.periods import PERIOD_HELP, resolve

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
Anyone = Annotated[Principal, Depends(require(*ANY_ROLE))]
Readers = Annotated[Principal, Depends(require(*READ_ALL))]

PeriodQ = Annotated[str | None, Query(description=PERIOD_HELP, max_length=40)]
FromQ = Annotated[
    date | None, Query(alias="from", description="first day (office time, inclusive)")
]
ToQ = Annotated[date | None, Query(description="last day (office time, inclusive)")]
MonthQ = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM (office time)")]
Lang = Literal["vi", "en"]


@router.get("/satisfaction", response_model=dict[str, Any])
def satisfaction(
    request: Request,
    who: Anyone,
    period: PeriodQ = None,
    from_: FromQ = None,
    to: ToQ = None,
    by: Literal["office", "desk", "official", "field"] = "office",
    channel: Annotated[
        str | None, Query(max_length=40, description="terminal,qr,paper (default: all three)")
    ] = None,
    desk: Annotated[str | None, Query(max_length=64)] = None,
    official: Annotated[
        str | None, Query(max_length=64, description="after corrections (an official: own id)")
    ] = None,
    field: Annotated[str | None, Query(max_length=100, description="lĩnh vực")] = None,
    lang: Lang = "vi",
) -> Response:
    """Satisfaction rate, counts per level, Wilson 95 % interval, response rate, sample adequacy,
    shrunk rate and rank per unit, with the ratings left out per reason next to each row."""
    p = resolve(period, from_, to)
    filters = reports.Filters(desk=desk, official=scope_official(who, official), field=field)
    return answer(
        reports.satisfaction(
            request.app.state.engine,
            p,
            by=by,
            channels=reports.parse_channels(channel),
            filters=filters,
            office=request.app.state.office,
            lang=lang,
            rank=who.role != OFFICIAL,
        )
    )


@router.get("/heatmap", response_model=dict[str, Any])
def heatmap(
    request: Request,
    who: Anyone,
    period: PeriodQ = None,
    from_: FromQ = None,
    to: ToQ = None,
    channel: Annotated[
        str | None,
        Query(
            max_length=40,
            description="terminal, qr or both (default); paper ballots have no time of day: "
            "left out of a list, and alone a 400",
        ),
    ] = None,
    desk: Annotated[str | None, Query(max_length=64)] = None,
    official: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Valid and satisfied ratings per weekday (0 = Monday) and hour of office time, of terminal
    and/or QR ratings (paper ballots have no time of day)."""
    p = resolve(period, from_, to)
    filters = reports.Filters(desk=desk, official=scope_official(who, official))
    channels = reports.parse_channels(channel)  # the report's syntax; paper: reports.heatmap
    return answer(reports.heatmap(request.app.state.engine, p, channels=channels, filters=filters))


def _filename(month: str, ext: str, sheet: str | None = None) -> str:
    return f"bao-cao-hai-long-{month}{'-' + sheet if sheet else ''}.{ext}"


@router.get(
    "/monthly.xlsx",
    response_class=Response,
    responses={200: {"content": {"application/vnd.ms-excel": {}}}},
)
def monthly_xlsx(request: Request, _who: Readers, month: MonthQ, lang: Lang = "vi") -> Response:
    """The monthly report to the district (seed 000): sheets by official, by field, by case."""
    data = make_xlsx(request.app.state.engine, month, office=request.app.state.office, lang=lang)
    return Response(
        data,
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{_filename(month, "xlsx")}"'},
    )


@router.get("/monthly.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def monthly_csv(
    request: Request,
    _who: Readers,
    month: MonthQ,
    sheet: Literal["official", "field", "case"] = "official",
    lang: Lang = "vi",
) -> Response:
    """One sheet of the monthly report as CSV (UTF-8 with BOM, for Excel)."""
    data = make_csv(
        request.app.state.engine, month, office=request.app.state.office, lang=lang, sheet=sheet
    )
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_filename(month, "csv", sheet)}"'},
    )
