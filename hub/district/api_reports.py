"""``/api/v1/reports`` of the district server, and its dashboard (``/``, static files, no token:
the data come through the API with the token the person pastes, kept in sessionStorage).

Roles (hub/district/auth.py): admin and auditor read every office; a viewer reads its own office
only (asking for another is 403, and leaving ``office`` out means its own). The answers have the
hub's shape (hub/api/reports.py, docs/reports.md) plus ``office``, ``office_name``, ``verified``
and ``attested`` per row (hub/district/reports.py).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from hub.api.jsonout import answer
from hub.district import auth, reports, reports_export
from hub.district.api import API, offices_for
from hub.district.auth import Principal, require
from hub.periods import PERIOD_HELP, PeriodError, resolve
from hub.reports import parse_channels
from hub.web import SHARED

WEB = Path(__file__).with_name("web")
router = APIRouter(prefix=f"{API}/reports", tags=["reports"])
Reader = Annotated[Principal, Depends(require(*auth.READ))]
PeriodQ = Annotated[str | None, Query(description=PERIOD_HELP, max_length=40)]
FromQ = Annotated[date | None, Query(alias="from", description="first day (office time)")]
ToQ = Annotated[date | None, Query(description="last day (office time, inclusive)")]
OfficeQ = Annotated[
    str | None, Query(max_length=32, description="one office (a viewer: its own, the default)")
]
MonthQ = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM (office time)")]
Lang = Literal["vi", "en"]


def _bad(e: Exception) -> HTTPException:
    return HTTPException(400, str(e))


@router.get("/satisfaction", response_model=dict[str, Any])
async def satisfaction(
    request: Request,
    who: Reader,
    period: PeriodQ = None,
    from_: FromQ = None,
    to: ToQ = None,
    by: Literal["office", "desk", "official", "field", "month"] = "office",
    office: OfficeQ = None,
    channel: Annotated[
        str | None, Query(max_length=40, description="terminal,qr,paper (default: all three)")
    ] = None,
    lang: Lang = "vi",
) -> Response:
    """Satisfaction rate, counts per level, Wilson 95 % interval, response rate, sample adequacy,
    shrunk rate and rank per office, desk, official (after corrections), field or month."""
    scope = offices_for(who, office)
    try:
        p = resolve(period, from_, to)
        channels = parse_channels(channel)
    except PeriodError as e:
        raise _bad(e) from e
    except Exception as e:  # parse_channels raises the hub's OfficeError
        raise _bad(e) from e
    if by == "month" and (p.first is None or p.last is None):
        raise HTTPException(400, "by=month needs a period (e.g. period=year:2026)")
    result = await run_in_threadpool(
        reports.satisfaction,
        request.app.state.engine,
        p,
        by=by,
        offices=scope,
        channels=channels,
        lang=lang,
    )
    return answer(result)


def _filename(month: str, office: str | None, ext: str, sheet: str | None = None) -> str:
    parts = ["bao-cao-hai-long", office or "toan-huyen", month] + ([sheet] if sheet else [])
    return "-".join(parts) + f".{ext}"


@router.get(
    "/monthly.xlsx",
    response_class=Response,
    responses={200: {"content": {"application/vnd.ms-excel": {}}}},
)
async def monthly_xlsx(
    request: Request, who: Reader, month: MonthQ, office: OfficeQ = None, lang: Lang = "vi"
) -> Response:
    """The month's report: sheets by office, by official, by field (Vietnamese headings)."""
    scope = offices_for(who, office)
    data = await run_in_threadpool(
        reports_export.monthly_xlsx, request.app.state.engine, month, offices=scope, lang=lang
    )
    name = _filename(month, office or who.office, "xlsx")
    return Response(
        data,
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/monthly.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def monthly_csv(
    request: Request,
    who: Reader,
    month: MonthQ,
    office: OfficeQ = None,
    sheet: Literal["office", "official", "field"] = "office",
    lang: Lang = "vi",
) -> Response:
    """One sheet of the month's report as CSV (UTF-8 with BOM, for Excel)."""
    scope = offices_for(who, office)
    data = await run_in_threadpool(
        reports_export.monthly_csv,
        request.app.state.engine,
        month,
        offices=scope,
        lang=lang,
        sheet=sheet,
    )
    name = _filename(month, office or who.office, "csv", sheet)
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def mount_dashboard(app: FastAPI) -> None:
    """The dashboard's files at ``/`` and ``/static``, and at ``/shared`` the scripts it shares with
    the hub's dashboard (hub/web/shared: served from here, so no page needs the internet); no
    token: they hold no data."""
    app.mount("/static", StaticFiles(directory=WEB), name="district-static")
    app.mount("/shared", StaticFiles(directory=SHARED), name="district-shared")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Add the reports API and the dashboard to a district app."""
    app.include_router(router)
    mount_dashboard(app)
