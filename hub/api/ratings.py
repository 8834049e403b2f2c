"""``/api/v1/ratings``: stored ratings with their exclusions and corrections, filtered, paged by an
opaque cursor, as JSON or as a CSV file for Excel; and the live stream of new ratings (SSE).

An official (role ``official``) sees only the ratings that belong to them after corrections.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub import ratings_query as rq
from hub.alerts import LEVEL_LABELS
from hub.api.app import SessionDep
from hub.api.auth import (
    ANY_ROLE,
    Principal,
    TokenWatch,
    end_event,
    recheck_seconds,
    require,
    scope_official,
)
from hub.livefeed import LiveFeed
from hub.models import Rating
from hub.office import OFFICE_TZ, OfficeError
from hub.periods import PERIOD_HELP, resolve

router = APIRouter(prefix="/api/v1/ratings", tags=["ratings"])
Anyone = Annotated[Principal, Depends(require(*ANY_ROLE))]  # an official: their own only

LinkStatus = Literal["linked", "no_case", "case_already_rated", "late", "not_linked"]
PAGE = 100  # JSON page size when the caller gives no limit


def _filter_dep(
    who: Anyone,
    period: Annotated[str | None, Query(description=PERIOD_HELP, max_length=40)] = None,
    from_: Annotated[
        date | None, Query(alias="from", description="first day (office time, inclusive)")
    ] = None,
    to: Annotated[date | None, Query(description="last day (office time, inclusive)")] = None,
    since: Annotated[
        datetime | None, Query(description="press time from (ISO 8601; no zone: office time)")
    ] = None,
    desk: Annotated[str | None, Query(max_length=64)] = None,
    official: Annotated[
        str | None, Query(max_length=64, description="after corrections (an official: own id)")
    ] = None,
    field: Annotated[
        str | None, Query(max_length=100, description="lĩnh vực of the linked case")
    ] = None,
    level: Annotated[int | None, Query(ge=1, le=5)] = None,
    channel: Annotated[
        str | None,
        Query(max_length=40, description="terminal, qr or both (comma); paper ballots are tallies"),
    ] = None,
    link_status: LinkStatus | None = None,
    valid: Annotated[
        bool | None, Query(description="true: only ratings that count; false: only excluded")
    ] = None,
    terminal: Annotated[str | None, Query(max_length=64)] = None,
    test: Annotated[bool | None, Query(description="technician test presses")] = None,
) -> rq.RatingFilter:
    return rq.RatingFilter(
        period=resolve(period, from_, to),
        since=since,
        desk=desk,
        official=scope_official(who, official),  # an official: always their own
        field=field,
        level=level,
        channels=rq.parse_channels(channel),
        link_status=link_status,
        valid=valid,
        terminal=terminal,
        test=test,
    )


Filter = Annotated[rq.RatingFilter, Depends(_filter_dep)]


# -- CSV -------------------------------------------------------------------------------------------
# (key, Vietnamese heading, English heading)
CSV_COLUMNS = (
    ("id", "Mã đánh giá", "Rating id"),
    ("pressed_at", "Thời điểm bấm (giờ Việt Nam)", "Pressed at (office time)"),
    ("channel", "Kênh", "Channel"),
    ("terminal_id", "Thiết bị", "Terminal"),
    ("desk", "Quầy", "Desk"),
    ("desk_name", "Tên quầy", "Desk name"),
    ("official_id", "Cán bộ", "Official"),
    ("official_name", "Họ tên cán bộ", "Official's name"),
    ("tagged_official_id", "Cán bộ khi bấm (trước hiệu chỉnh)", "Official at press (before fixes)"),
    ("case_code", "Mã hồ sơ", "Case"),
    ("field", "Lĩnh vực", "Field"),
    ("link_status", "Liên kết hồ sơ", "Case link"),
    ("level", "Mức", "Level"),
    ("scale", "Số mức", "Scale"),
    ("level_label", "Mức đánh giá", "Level label"),
    ("reason", "Lý do (mã)", "Reason code"),
    ("valid", "Hợp lệ", "Valid"),
    ("excluded_because", "Lý do loại", "Excluded because"),
    ("test", "Bấm thử", "Test press"),
    ("received_at", "Hub nhận lúc (giờ Việt Nam)", "Received at (office time)"),
)
_YES = {"vi": ("có", "không"), "en": ("yes", "no")}
_LEVEL_EN = {
    3: {1: "very satisfied", 2: "satisfied", 3: "dissatisfied"},
    4: {1: "very satisfied", 2: "satisfied", 3: "dissatisfied", 4: "very dissatisfied"},
    5: {
        1: "very satisfied",
        2: "satisfied",
        3: "neutral",
        4: "dissatisfied",
        5: "very dissatisfied",
    },
}


def _office_time(t: datetime) -> str:
    # ISO order: Excel reads it as a date in every locale (dd/mm would flip under en-US)
    aware = t if t.tzinfo else t.replace(tzinfo=UTC)
    return aware.astimezone(OFFICE_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _csv_row(r: dict[str, Any], n: rq.Notes, names: rq.Names, lang: str) -> list[Any]:
    yes, no = _YES[lang]
    labels = LEVEL_LABELS if lang == "vi" else _LEVEL_EN
    rid = r["id"]
    official = n.official(rid, r["official_id"])
    code, fld = n.cases.get(r["case_id"], ("", "")) if r["case_id"] is not None else ("", "")
    standing = [x for x in n.exclusions.get(rid, []) if x.reinstated is None]
    return [
        rid,
        _office_time(r["press_time"]),
        r["channel"],
        r["terminal_id"],
        r["desk"] or "",
        names.desks.get(r["desk"] or "", ""),
        official or "",
        names.officials.get(official or "", ""),
        r["official_id"] or "",
        code,
        fld or "",
        r["link_status"],
        r["level"],
        r["scale"],
        labels.get(r["scale"], {}).get(r["level"], ""),
        r["reason"] or "",
        yes if not standing else no,
        "; ".join(f"{x.reason} ({x.actor}{': ' + x.note if x.note else ''})" for x in standing),
        yes if r["test"] else no,
        _office_time(r["received_at"]),
    ]


def _csv(
    engine: Engine,
    f: rq.RatingFilter,
    after: int | None,
    order: rq.Order,
    limit: int | None,
    lang: str,
) -> Iterator[str]:
    buf = io.StringIO()
    out = csv.writer(buf)
    buf.write("\ufeff")  # the BOM: Excel then reads the file as UTF-8 (Vietnamese intact)
    out.writerow([vi if lang == "vi" else en for _, vi, en in CSV_COLUMNS])
    names: rq.Names | None = None
    left = limit
    for s, ids in rq.walk(engine, f, after=after, order=order):
        names = names or rq.names(s)
        if left is not None:
            ids = ids[:left]
            left -= len(ids)
        rows = rq.plain_rows(s, ids, order)
        n = rq.notes(s, ids, {r["case_id"] for r in rows if r["case_id"] is not None})
        for r in rows:
            out.writerow(_csv_row(r, n, names, lang))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if left == 0:
            break
    if buf.tell():
        yield buf.getvalue()


# -- routes ----------------------------------------------------------------------------------------
@router.get(
    "",
    response_model=list[rq.RatingOut],
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "JSON (a page; headers Link rel=next and X-Next-Cursor when more "
            "follow) or, with format=csv, every matching rating as a CSV file",
        }
    },
)
def list_ratings(
    request: Request,
    response: Response,
    s: SessionDep,
    f: Filter,
    cursor: Annotated[
        str | None, Query(max_length=100, description="from the previous page's X-Next-Cursor")
    ] = None,
    after_id: Annotated[
        int | None, Query(ge=0, description="older cursor: the last id of the previous page")
    ] = None,
    order: Annotated[rq.Order, Query(description="by id: asc (oldest first) or desc")] = "asc",
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="JSON: page size (100); CSV: all rows")
    ] = None,
    format: Literal["json", "csv"] = "json",
    lang: Annotated[Literal["vi", "en"], Query(description="CSV headings")] = "vi",
) -> Any:
    """Stored ratings, each with its exclusions (reason, who, when; taken back or not), ``valid``,
    the correction in force and ``effective_official_id`` (the official after corrections; the
    ``official`` filter uses it). Pages go by id: follow ``X-Next-Cursor`` (or the ``Link``
    header) until it is absent; ratings arriving meanwhile are neither repeated nor skipped."""
    if cursor is not None and after_id is not None:
        raise OfficeError("give cursor or after_id, not both")
    if after_id is not None and order != "asc":
        raise OfficeError("after_id pages oldest first: use cursor with order=desc")
    after = rq.decode_cursor(cursor, order) if cursor is not None else after_id
    if format == "csv":
        stamp = datetime.now(OFFICE_TZ).strftime("%Y%m%d-%H%M")
        return StreamingResponse(
            _csv(request.app.state.engine, f, after, order, limit, lang),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="danh-gia-{stamp}.csv"'},
        )
    rows, more = rq.page(s, f, after=after, order=order, limit=limit or PAGE)
    if more and rows[-1].id is not None:
        nxt = rq.encode_cursor(rows[-1].id, order)
        url = request.url.remove_query_params("after_id").include_query_params(cursor=nxt)
        response.headers["X-Next-Cursor"] = nxt
        response.headers["Link"] = f'<{url}>; rel="next"'
    return rq.annotate(s, rows)


def _sse(r: rq.RatingOut) -> str:
    return f"id: {r.id}\nevent: rating\ndata: {r.model_dump_json()}\n\n"


def _newer(engine: Engine, f: rq.RatingFilter, after: int, limit: int = 500) -> list[rq.RatingOut]:
    with Session(engine) as s:
        rows, _ = rq.page(s, f, after=after, order="asc", limit=limit)
        return rq.annotate(s, rows)


def _last_id(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.max(col(Rating.id)))).one() or 0)


async def _stream(
    engine: Engine,
    feed: LiveFeed,
    f: rq.RatingFilter,
    after: int | None,
    ping: float,
    watch: TokenWatch,
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    notify = feed.subscribe(lambda: loop.call_soon_threadsafe(wake.set))
    try:
        yield "retry: 3000\n\n"
        # subscribed first: a rating committed from here on wakes us, and the read below sees it
        last = after if after is not None else await asyncio.to_thread(_last_id, engine)
        ping_at = time.monotonic() + ping
        while not feed.closed.is_set():
            wake.clear()  # a publish after this line wakes the wait below
            batch = await asyncio.to_thread(_newer, engine, f, last)
            for r in batch:
                if (why := await watch.problem()) is not None:  # a clock read unless due
                    yield end_event(why)
                    return
                yield _sse(r)
            if batch:
                last = max(r.id for r in batch)
                ping_at = time.monotonic() + ping
                continue  # there may be more than one batch
            while True:  # idle: wake for a publish, the next token check or the next ping
                if (why := await watch.problem()) is not None:
                    yield end_event(why)
                    return
                wait = min(ping_at - time.monotonic(), watch.due_in())
                try:
                    await asyncio.wait_for(wake.wait(), max(wait, 0.0))
                    break
                except TimeoutError:
                    if time.monotonic() >= ping_at:
                        ping_at = time.monotonic() + ping
                        yield ": ping\n\n"
                        break  # and read again: ratings stored without a publish show up too
    finally:
        feed.unsubscribe(notify)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    who: Anyone,
    desk: Annotated[str | None, Query(max_length=64)] = None,
    official: Annotated[str | None, Query(max_length=64)] = None,
    channel: Annotated[str | None, Query(max_length=40)] = None,
    last_event_id: Annotated[
        str | None, Header(max_length=24, description="resume after this rating id")
    ] = None,
) -> StreamingResponse:
    """Each new rating as ``event: rating`` with ``id:`` (the rating id) and ``data:`` the rating
    as ``GET /ratings`` returns it; a comment line every 15 s keeps proxies from closing the
    stream. After a reconnect, ``Last-Event-ID`` resumes from the database without a gap. The
    token is re-checked while the stream is open (every few seconds, before the next event): once
    it is revoked or its role no longer allows this, the stream ends with ``event: end`` and
    ``data: {"reason": "token_revoked", "detail": ...}``. Browsers: EventSource cannot send the
    bearer token, read the stream with fetch() instead."""
    feed: LiveFeed | None = getattr(request.app.state, "livefeed", None)
    if feed is None:
        raise HTTPException(503, "the live ratings feed is not running on this hub")
    f = rq.RatingFilter(
        desk=desk, official=scope_official(who, official), channels=rq.parse_channels(channel)
    )
    try:
        after = int(last_event_id) if last_event_id else None
    except ValueError:
        raise HTTPException(400, "Last-Event-ID must be the id of a rating event") from None
    if after is not None and not 0 <= after < 2**63:
        raise HTTPException(400, "Last-Event-ID is out of range")
    ping = float(getattr(request.app.state, "ratings_ping_seconds", 15.0))
    return StreamingResponse(
        _stream(
            request.app.state.engine,
            feed,
            f,
            after,
            ping,
            TokenWatch(request.app.state.engine, who, ANY_ROLE, recheck_seconds(request)),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{rating_id}", response_model=rq.RatingOut)
def get_rating(rating_id: int, s: SessionDep, who: Anyone) -> rq.RatingOut:
    """One rating with its exclusions and corrections (an official: only their own)."""
    return one_rating(s, rating_id, who)


def one_rating(s: Session, rating_id: int, who: Principal) -> rq.RatingOut:
    """The rating if the caller may see it; 404 otherwise (an official is not told that someone
    else's rating exists)."""
    q = select(Rating).where(col(Rating.id) == rating_id)
    own = scope_official(who, None)
    if own is not None:
        q = q.where(rq.official_is(own))
    row = s.exec(q).first()
    if row is None:
        raise HTTPException(404, f"rating {rating_id} does not exist")
    return rq.annotate(s, [row])[0]
