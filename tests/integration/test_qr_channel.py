"""The QR code channel against a real hub (its Mosquitto, a SQLite file, the API over HTTP):
the desk's sticker reads back (zxing-cpp) as the desk's URL, a citizen's rating from the page is
stored with channel "qr", tagged with the official on duty and linked to the case just handed back,
one rating per phone per case, the abuse limits, a friendly 404, and no phone number in clear
anywhere in the database files."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image
from typer.testing import CliRunner

from hub.channels import qr
from hub.cli import app as cli
from hub.service import HubService
from tests.fixtures.hub import make_settings

pytestmark = pytest.mark.integration

PHONE = "0912 345 678"
PHONE_FORMS = [b"0912345678", b"912345678", b"0912 345 678", "0912345678".encode("utf-16-le")]


@pytest.fixture
def qr_hub(tmp_path: Path) -> Iterator[HubService]:
    # Small limits so that they fire in a test; X-Forwarded-For trusted so that each test
    # request can play a different phone (as behind the office's own reverse proxy).
    service = HubService(
        make_settings(
            tmp_path / "hub",
            qr_desk_per_minute=3,
            qr_phone_per_day=2,
            qr_client_per_hour=4,
            qr_trust_forwarded=True,
        )
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture
def api(qr_hub: HubService) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=qr_hub.api_url, headers={"Authorization": f"Bearer {qr_hub.settings.api_token}"}
    ) as c:
        yield c


@pytest.fixture
def citizen(qr_hub: HubService) -> Iterator[httpx.Client]:
    """A phone: no token, talks to the hub's root (the page is not under /api/v1)."""
    root = qr_hub.api_url.removesuffix("/api/v1")
    with httpx.Client(base_url=root) as c:
        yield c


def _office(api: httpx.Client, desk: str = "quay-1", official: str | None = "nguyen.van.an") -> str:
    """A desk (and an official on duty there); returns the desk's QR path."""
    assert api.post("/desks", json={"id": desk, "name": "Quầy 1 - Hộ tịch"}).status_code == 201
    if official:
        api.post("/officials", json={"id": official, "name": "Nguyễn Văn An"})
        r = api.post("/duty/check-in", json={"desk_id": desk, "official_id": official})
        assert r.status_code in (200, 201), r.text
    urls = {d["desk_id"]: d["url"] for d in api.get("/qr/desks").json()}
    return "/q/" + urls[desk].rsplit("/q/", 1)[1]


def _phone(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"10.0.5.{n}"}


def _qr_ratings(api: httpx.Client) -> list[dict]:
    return [r for r in api.get("/ratings", params={"limit": 1000}).json() if r["channel"] == "qr"]


def _decode(img: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(img)]


def test_sticker_png_and_pdf_read_back_as_the_desk_url(
    qr_hub: HubService, api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _office(api)
    url = f"http://{qr_hub.settings.api_host}:{qr_hub.settings.api_port}{path}"
    # The admin API's sticker
    png = api.get("/qr/desks/quay-1/sticker", params={"format": "png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert _decode(Image.open(io.BytesIO(png.content))) == [url]
    # The CLI, on the hub's data directory: the same URL (same per-hub key)
    st = qr_hub.settings
    monkeypatch.setenv("SIPAS_HUB_ENV_FILE", str(tmp_path / "none.env"))
    for k, v in {
        "OFFICE": st.office,
        "DATA_DIR": str(st.data_dir),
        "API_PORT": str(st.api_port),
        "API_TOKEN": st.api_token,
        "QR_BASE_URL": "http://10.0.5.2:8080",
    }.items():
        monkeypatch.setenv(f"SIPAS_HUB_{k}", v)
    out = tmp_path / "quay-1.pdf"
    res = CliRunner().invoke(cli, ["qr", "sticker", "--desk", "quay-1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    public = "http://10.0.5.2:8080" + path
    assert res.stdout.strip() == public
    pdf = out.read_bytes()
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf)
    assert box, "no page size"
    w_mm, h_mm = (float(v) / 72 * 25.4 for v in box.groups())
    assert abs(w_mm - 105) < 0.5 and abs(h_mm - 148) < 0.5  # A6, printed 1:1
    start = pdf.index(b"stream", pdf.index(b"/Subtype /Image")) + len(b"stream\n")
    img = Image.open(io.BytesIO(pdf[start : pdf.index(b"endstream", start)]))
    assert _decode(img) == [public]
    # a loopback address is refused politely: the sticker is made, with a warning
    monkeypatch.setenv("SIPAS_HUB_QR_BASE_URL", "")
    res = CliRunner().invoke(cli, ["qr", "sticker", "--desk", "quay-1", "--out", str(out)])
    assert res.exit_code == 0 and "no phone can reach" in res.stderr
    # unknown desk: a clear error
    res = CliRunner().invoke(cli, ["qr", "sticker", "--desk", "quay-9", "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.stderr


def test_the_token_is_per_desk_and_unguessable(api: httpx.Client, citizen: httpx.Client) -> None:
    one = _office(api, "quay-1")
    two = _office(api, "quay-2", official=None)
    assert one != two and len(one.rsplit("/", 1)[1]) == 22
    # editing the URL leads nowhere: a friendly page in Vietnamese, 404
    token = one.rsplit("/", 1)[1]
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "quay-1", "x" * 200):
        r = citizen.get(f"/q/{bad}")
        assert r.status_code == 404
        assert "text/html" in r.headers["content-type"]
        assert "Không tìm thấy quầy của mã QR này" in r.text
        r = citizen.post(f"/q/{bad}", json={"level": 1})
        assert r.status_code == 404 and "Không tìm thấy" in r.json()["detail"]


def test_qr_rating_is_tagged_like_a_terminal_rating(
    qr_hub: HubService, api: httpx.Client, citizen: httpx.Client
) -> None:
    path = _office(api)
    r = api.post("/cases", json={"code": "HS-2026-0001", "desk_id": "quay-1", "field": "Hộ tịch"})
    assert r.status_code == 201, r.text
    case_id = r.json()["case"]["id"]

    page = citizen.get(path)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    html = page.text
    assert '<html lang="vi">' in html and "Quầy 1 - Hộ tịch" in html
    assert "Nguyễn Văn An" in html  # the official on duty
    assert html.count('name="level"') == 3  # the terminal's default 3-level scale
    assert "Rất hài lòng" in html and "Không hài lòng" in html
    assert "thái độ".capitalize() in html  # the reason step
    en = citizen.get(path, params={"lang": "en"}).text
    assert '<html lang="en">' in en and "Very satisfied" in en
    for asset in ("/q/static/qr.js", "/q/static/qr.css"):  # served by the hub: no CDN
        assert citizen.get(asset).status_code == 200
    assert "://" not in html  # nothing from elsewhere

    r = citizen.post(path, json={"level": 3, "reason": 1, "phone": PHONE}, headers=_phone(1))
    assert r.status_code == 201, r.text
    assert r.json()["detail"] == "Cảm ơn bạn đã đánh giá!"
    (rating,) = _qr_ratings(api)
    assert rating["channel"] == "qr"
    assert rating["terminal_id"] == "qr-quay-1" and rating["epoch"] == 1 and rating["seq"] == 1
    assert rating["desk"] == "quay-1" and rating["level"] == 3 and rating["reason"] == 1
    assert rating["official_id"] == "nguyen.van.an"
    assert rating["case_id"] == case_id and rating["link_status"] == "linked"
    assert rating["district_tag"] == "00" * 16  # no terminal signed it: the district can tell

    # one rating per phone per case; the same phone spelt differently is the same phone
    r = citizen.post(path, json={"level": 1, "phone": "+84912345678"}, headers=_phone(2))
    assert r.status_code == 409
    assert "Mỗi hồ sơ chỉ được đánh giá một lần" in r.json()["detail"]
    r = citizen.post(path, json={"level": 1, "phone": "+84912345678", "lang": "en"})
    assert r.status_code == 409 and "Each case is rated once" in r.json()["detail"]
    # another phone may still rate: stored, and excluded as a second rating of the case
    r = citizen.post(path, json={"level": 1, "phone": "0987654321"}, headers=_phone(3))
    assert r.status_code == 201
    second = _qr_ratings(api)[-1]
    assert second["link_status"] == "case_already_rated" and second["valid"] is False

    # a negative QR rating raises the same alert as a terminal's
    alerts = api.get("/alerts", params={"rule": "negative"}).json()
    assert [a["terminal_id"] for a in alerts] == ["qr-quay-1"]

    # the integrity check still passes, and the QR ratings' own chain verifies
    check = api.get("/integrity").json()
    assert check["ok"] is True and check["ratings"] >= 2  # the QR ratings are checked there too
    rep = qr.verify(qr_hub.engine, qr_hub.settings.office, qr_hub.app.state.qr.keys)
    assert rep.ok and rep.ratings == 2

    # the phone number is nowhere in clear: database, its WAL, the keys file
    data = b"".join(p.read_bytes() for p in qr_hub.settings.data_dir.glob("hub.sqlite3*"))
    data += (qr_hub.settings.data_dir / qr.KEYS_FILE).read_bytes()
    assert b"qr-quay-1" in data  # the scan does read the stored rows
    for form in PHONE_FORMS:
        assert form not in data


def test_form_post_without_javascript(api: httpx.Client, citizen: httpx.Client) -> None:
    path = _office(api)
    r = citizen.post(
        path,
        content="level=2&reason=&phone=&lang=en",
        headers={"Content-Type": "application/x-www-form-urlencoded", **_phone(7)},
    )
    assert r.status_code == 201 and "Thank you for your rating!" in r.text
    r = citizen.post(
        path,
        content="reason=&phone=",
        headers={"Content-Type": "application/x-www-form-urlencoded", **_phone(8)},
    )
    assert r.status_code == 422 and "Vui lòng chọn một mức đánh giá" in r.text
    assert [x["level"] for x in _qr_ratings(api)] == [2]


def test_bad_input_gets_a_clear_message(api: httpx.Client, citizen: httpx.Client) -> None:
    path = _office(api)
    cases = [
        ({"level": 4}, 400, "chọn một mức"),  # a 3-level desk
        ({"level": 0}, 422, "chọn một mức"),
        ({"level": 1, "phone": "12345"}, 400, "Số điện thoại không hợp lệ"),
        ({"level": 3, "reason": 9}, 422, "Lý do không hợp lệ"),
    ]
    for body, status, text in cases:
        r = citizen.post(path, json=body, headers=_phone(9))
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["detail"]
    r = citizen.post(path, content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert _qr_ratings(api) == []


def test_abuse_limits(api: httpx.Client, citizen: httpx.Client) -> None:
    path = _office(api)
    # per desk: 3 a minute (settings), whoever sends them
    for n in range(3):
        assert citizen.post(path, json={"level": 1}, headers=_phone(20 + n)).status_code == 201
    r = citizen.post(path, json={"level": 1}, headers=_phone(30))
    assert r.status_code == 429 and "đợi một phút" in r.json()["detail"]

    # per phone: 2 a day, on any desk
    p2 = _office(api, "quay-2", official=None)
    p3 = _office(api, "quay-3", official=None)
    assert (
        citizen.post(p2, json={"level": 1, "phone": PHONE}, headers=_phone(40)).status_code == 201
    )
    assert (
        citizen.post(p3, json={"level": 2, "phone": PHONE}, headers=_phone(41)).status_code == 201
    )
    r = citizen.post(p3, json={"level": 2, "phone": PHONE}, headers=_phone(42))
    assert r.status_code == 429 and "24 giờ" in r.json()["detail"]

    # per client address: 4 an hour
    p4 = _office(api, "quay-4", official=None)
    p5 = _office(api, "quay-5", official=None)
    codes = [citizen.post(p, json={"level": 1}, headers=_phone(50)).status_code for p in (p4, p5)]
    codes += [citizen.post(p, json={"level": 1}, headers=_phone(50)).status_code for p in (p4, p5)]
    assert codes == [201] * 4
    r = citizen.post(p4, json={"level": 1}, headers=_phone(50))
    assert r.status_code == 429 and "một giờ" in r.json()["detail"]
    assert len(_qr_ratings(api)) == 3 + 2 + 4


def test_qr_routes_for_staff_need_a_writer(qr_hub: HubService, api: httpx.Client) -> None:
    from hub.api.auth import create_token

    _office(api)
    _, auditor = create_token(qr_hub.engine, name="district", role="auditor")
    with httpx.Client(base_url=qr_hub.api_url, headers={"Authorization": f"Bearer {auditor}"}) as c:
        assert c.get("/qr/desks").status_code == 403
        assert c.get("/qr/desks/quay-1/sticker").status_code == 403
    with httpx.Client(base_url=qr_hub.api_url) as c:
        assert c.get("/qr/desks").status_code == 401
    assert api.get("/qr/desks/quay-9/sticker").status_code == 404
