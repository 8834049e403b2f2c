"""The QR code channel (seed 000, "Hình thức 02"): a sticker per desk whose QR code opens a mobile
page on the hub, where a citizen gives the same smiley rating as at the desk's terminal.

- **Desk token.** The QR code says ``<base>/q/<token>``; the token is an HMAC of the office and
  desk id under a per-hub key, so nobody can rate another desk by editing the URL, and nothing
  needs storing. The keys live in ``<data dir>/qr-keys.json`` (mode 0600).
- **Stored like a terminal rating.** A QR rating is a row of the ``rating`` table with channel
  ``qr``, key (``qr-<desk>``, epoch 1, seq 1, 2, ...), tagged at receipt exactly as ingest tags a
  press (official on duty, case just handed back, the same automatic exclusions) and chained like a
  terminal's ratings. Its ``raw`` is a record in the wire layout (docs/protocol.md) whose hub tag is
  made with the hub's QR key and whose district tag is 16 zero bytes: no terminal signed it, and
  the district can tell.
- **Phone number.** Optional; kept only as a salted scrypt hash (the salt is in the keys file, not
  in the database), for two things: one rating per phone per case, and a daily limit per phone.
- **Abuse limits** per desk per minute, per phone per day and per client address per hour
  (settings ``qr_*``), counted from the ``qrsubmission`` table so they hold across restarts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from hub import integrity, office, protocol
from hub.ingest import NewRating
from hub.models import Desk, Official, QrSubmission, Rating, utcnow

if TYPE_CHECKING:
    from hub.config import Settings

CHANNEL = "qr"
EPOCH = 1
KEYS_FILE = "qr-keys.json"
_BODY = struct.Struct("<BBHIIBBBB")  # docs/protocol.md, "Rating record": the first 16 bytes
NO_DISTRICT_TAG = bytes(16)  # no terminal signed a QR rating: the district sees it at once

# Levels that count as "không hài lòng" (the reason step follows them, as on a terminal).
NEGATIVE = {3: {3}, 4: {3, 4}, 5: {4, 5}}


# -- messages a citizen reads (Vietnamese first) ------------------------------------------------------
MESSAGES: dict[str, tuple[str, str]] = {
    "not_found": (
        "Không tìm thấy quầy của mã QR này. Mã có thể đã cũ hoặc bị sửa: "
        "hãy quét lại mã QR dán tại quầy.",
        "This QR code does not belong to any desk. It may be old or altered: "
        "scan the code on the desk again.",
    ),
    "level": (
        "Vui lòng chọn một mức đánh giá.",
        "Please choose a rating.",
    ),
    "reason": (
        "Lý do không hợp lệ: chọn thái độ, thời gian, hồ sơ thủ tục hoặc khác.",
        "Unknown reason: choose attitude, time, file and procedure, or other.",
    ),
    "phone": (
        "Số điện thoại không hợp lệ: nhập 10 hoặc 11 chữ số bắt đầu bằng 0, hoặc để trống.",
        "The phone number is not valid: 10 or 11 digits starting with 0, or leave it empty.",
    ),
    "limit_desk": (
        "Quầy này vừa nhận nhiều đánh giá liên tiếp. Vui lòng đợi một phút rồi bấm “Gửi lại”.",
        "This desk has just received many ratings. Please wait a minute, then press “Send again”.",
    ),
    "limit_phone": (
        "Số điện thoại này đã gửi quá nhiều đánh giá trong 24 giờ qua. Cảm ơn bạn!",
        "This phone number has sent too many ratings in the last 24 hours. Thank you!",
    ),
    "limit_client": (
        "Điện thoại của bạn đã gửi quá nhiều đánh giá trong một giờ. Vui lòng thử lại sau.",
        "Your phone has sent too many ratings in the last hour. Please try again later.",
    ),
    "already": (
        "Số điện thoại này đã đánh giá hồ sơ vừa trả tại quầy. "
        "Mỗi hồ sơ chỉ được đánh giá một lần. Cảm ơn bạn!",
        "This phone number has already rated the case just handed back at this desk. "
        "Each case is rated once. Thank you!",
    ),
}


class QrError(Exception):
    """A submission the hub refuses; ``text(lang)`` is what the citizen reads."""

    def __init__(self, code: str, status: int, **fmt: object):
        self.code, self.status, self.fmt = code, status, fmt
        super().__init__(self.text("en"))

    def text(self, lang: str) -> str:
        vi, en = MESSAGES[self.code]
        return (en if lang == "en" else vi).format(**self.fmt)


# -- keys and tokens ------------------------------------------------------------------------------
@dataclass(frozen=True)
class QrKeys:
    token_key: bytes  # desk tokens
    phone_salt: bytes  # phone hashes (scrypt salt)
    client_salt: bytes  # client address hashes
    record_key: bytes  # hub tag of a QR rating's record

    @classmethod
    def generate(cls) -> QrKeys:
        return cls(*(secrets.token_bytes(32) for _ in range(4)))

    @classmethod
    def load(cls, data_dir: Path | None) -> QrKeys:
        """The hub's QR keys from ``<data dir>/qr-keys.json``, created (mode 0600) on first use.
        Without a data directory (a test app on an in-memory database) they live in memory."""
        if data_dir is None:
            return cls.generate()
        path = data_dir / KEYS_FILE
        if not path.exists():
            keys = cls.generate()
            data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.write_text(json.dumps({k: v.hex() for k, v in keys.__dict__.items()}, indent=1))
            tmp.replace(path)
            return keys
        d = json.loads(path.read_text())
        return cls(**{k: bytes.fromhex(d[k]) for k in cls.__dataclass_fields__})


def desk_token(keys: QrKeys, office_id: str, desk_id: str) -> str:
    """The unguessable part of a desk's QR URL: 128 bits, 22 URL-safe characters."""
    mac = hmac.new(keys.token_key, f"desk\0{office_id}\0{desk_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode()


TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


def find_desk(s: Session, keys: QrKeys, office_id: str, token: str) -> Desk | None:
    if not TOKEN_RE.fullmatch(token):
        return None
    found = None
    for desk in s.exec(select(Desk).where(Desk.office == office_id)).all():
        if hmac.compare_digest(desk_token(keys, office_id, desk.id), token):
            found = desk
    return found


def desk_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/q/{token}"


def terminal_id_of(desk_id: str) -> str:
    """The rating key's terminal part for a desk's QR ratings (never a real terminal's ``t-...``)."""
    return f"qr-{desk_id}"


# -- personal data -------------------------------------------------------------------------------------
_PHONE_JUNK = re.compile(r"[\s.\-()]")


def normalise_phone(text: str) -> str:
    """``+84 912 345 678`` / ``0912.345.678`` -> ``0912345678``; QrError if it is no phone number."""
    p = _PHONE_JUNK.sub("", text)
    if p.startswith("+84"):
        p = "0" + p[3:]
    elif p.startswith("84") and len(p) in (11, 12):
        p = "0" + p[2:]
    if not re.fullmatch(r"0\d{9,10}", p):
        raise QrError("phone", 400)
    return p


def phone_hash(keys: QrKeys, phone: str) -> str:
    """scrypt, not a plain hash: a phone number has few digits, so a fast hash of it could be
    reversed by trying them all; scrypt makes each try cost ~16 MB and tens of milliseconds, and
    without the salt (kept outside the database) nothing can be tried at all."""
    return hashlib.scrypt(
        normalise_phone(phone).encode(), salt=keys.phone_salt, n=2**14, r=8, p=1, dklen=32
    ).hex()


def client_hash(keys: QrKeys, address: str) -> str:
    return hmac.new(keys.client_salt, address.encode(), hashlib.sha256).hexdigest()[:32]


# -- configuration ---------------------------------------------------------------------------------
class QrConfig(BaseModel):
    base_url: str = "http://127.0.0.1:8080"
    scale: int = Field(3, ge=3, le=5)
    desk_per_minute: int = 5
    phone_per_day: int = 5
    client_per_hour: int = 20
    trust_forwarded: bool = False
    case_window_minutes: int = 10
    wifi_name: str = ""

    @classmethod
    def from_settings(cls, st: Settings) -> QrConfig:
        return cls(
            base_url=base_url(st),
            scale=st.qr_scale,
            desk_per_minute=st.qr_desk_per_minute,
            phone_per_day=st.qr_phone_per_day,
            client_per_hour=st.qr_client_per_hour,
            trust_forwarded=st.qr_trust_forwarded,
            case_window_minutes=st.case_window_minutes,
            wifi_name=st.qr_wifi_name,
        )


def base_url(st: Settings) -> str:
    if st.qr_base_url:
        return st.qr_base_url.rstrip("/")
    return f"http://{st.advertised_host or st.api_host}:{st.api_port}"


def unreachable_warning(url: str) -> str | None:
    """Why a phone could not open this URL, or None if it may (the hub cannot know its network)."""
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        return (
            f"the QR code points at {host}, which no phone can reach: set SIPAS_HUB_QR_BASE_URL "
            "to the hub's address on the office's guest Wi-Fi or a public address forwarded to "
            "the hub (README, 'QR code')"
        )
    return None


# -- the channel -----------------------------------------------------------------------------------
class Submission(BaseModel):
    """What the citizen's page sends."""

    level: int = Field(ge=1, le=5, description="1 is the most satisfied, as on the terminals")
    reason: int = Field(0, ge=0, le=4, description="0 none; 1 thái độ … 4 khác")
    phone: str | None = Field(None, max_length=32, description="optional; stored only hashed")
    lang: str = Field("vi", pattern=r"^(vi|en)$")


@dataclass(frozen=True)
class DeskView:
    """What the citizen's page shows about the desk."""

    desk_id: str
    name: str
    official: str | None  # the official's name, when someone is on duty
    scale: int


class QrChannel:
    def __init__(
        self,
        engine: Engine,
        office_id: str,
        config: QrConfig,
        keys: QrKeys,
        *,
        on_stored: Callable[[list[NewRating]], object] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine = engine
        self.office = office_id
        self.config = config
        self.keys = keys
        self.on_stored = on_stored
        self.clock = clock
        self._lock = threading.Lock()  # one QR writer at a time: the seq and chain head

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        st: Settings,
        on_stored: Callable[[list[NewRating]], object] | None = None,
    ) -> QrChannel:
        return cls(
            engine,
            st.office,
            QrConfig.from_settings(st),
            QrKeys.load(st.data_dir),
            on_stored=on_stored,
        )

    def token(self, desk_id: str) -> str:
        return desk_token(self.keys, self.office, desk_id)

    def url(self, desk_id: str) -> str:
        return desk_url(self.config.base_url, self.token(desk_id))

    def desk(self, token: str) -> Desk:
        with Session(self.engine) as s:
            desk = find_desk(s, self.keys, self.office, token)
        if desk is None:
            raise QrError("not_found", 404)
        return desk

    def view(self, token: str) -> DeskView:
        desk = self.desk(token)
        with Session(self.engine) as s:
            who = office.on_duty(s, desk_id=desk.id, at=self.clock())
            name = None
            if who is not None:
                off = s.get(Official, who)
                name = off.name if off is not None else None
            return DeskView(desk.id, desk.name, name, self.scale(s, desk.id))

    def scale(self, s: Session, desk_id: str) -> int:
        """The scale of the desk's terminal (its latest rating), so both channels ask the same
        question; the configured default before the desk has a terminal rating."""
        last = s.exec(
            select(Rating.scale)
            .where(Rating.desk == desk_id, Rating.channel == "terminal")
            .order_by(col(Rating.id).desc())
            .limit(1)
        ).first()
        return int(last) if last is not None else self.config.scale

    def submit(self, token: str, sub: Submission, client: str) -> NewRating:
        """Store one citizen's rating, or raise QrError saying why not."""
        desk = self.desk(token)
        now = self.clock()
        cfg = self.config
        client_h = client_hash(self.keys, client)
        with Session(self.engine) as s:
            scale = self.scale(s, desk.id)
            if not 1 <= sub.level <= scale:
                raise QrError("level", 400)
            if sub.reason and sub.level not in NEGATIVE[scale]:
                sub = sub.model_copy(update={"reason": 0})  # a reason explains a negative rating
            if self._count(s, QrSubmission.client_hash == client_h, now - timedelta(hours=1)) >= (
                cfg.client_per_hour
            ):
                raise QrError("limit_client", 429)
            if self._count(s, QrSubmission.desk_id == desk.id, now - timedelta(minutes=1)) >= (
                cfg.desk_per_minute
            ):
                raise QrError("limit_desk", 429)
        phone_h = phone_hash(self.keys, sub.phone) if sub.phone and sub.phone.strip() else None
        with self._lock, Session(self.engine) as s:
            if phone_h is not None and (
                self._count(s, QrSubmission.phone_hash == phone_h, now - timedelta(days=1))
                >= cfg.phone_per_day
            ):
                raise QrError("limit_phone", 429)
            row = self._store(s, desk, sub, scale, now, phone_h, client_h)
            try:
                s.commit()
            except IntegrityError as e:  # the unique (phone, case): a twin request just won
                raise QrError("already", 409) from e
        if self.on_stored is not None:
            self.on_stored([row])
        return row

    def _count(self, s: Session, cond: Any, since: datetime) -> int:
        q = select(func.count()).select_from(QrSubmission).where(cond)
        return int(s.exec(q.where(col(QrSubmission.at) >= since)).one())

    def _store(
        self,
        s: Session,
        desk: Desk,
        sub: Submission,
        scale: int,
        now: datetime,
        phone_h: str | None,
        client_h: str,
    ) -> NewRating:
        tid = terminal_id_of(desk.id)
        press = now.astimezone(UTC).replace(microsecond=0)  # the record holds whole seconds
        # Tagged as ingest tags a terminal's press (hub/ingest.py), with its one-second rule.
        at = press + timedelta(seconds=1)
        official = office.on_duty(s, desk_id=desk.id, at=at)
        case_id, link = office.link_case(
            s,
            desk_id=desk.id,
            press_time=at,
            window=timedelta(minutes=self.config.case_window_minutes),
        )
        if phone_h is not None and case_id is not None:
            taken = s.exec(
                select(QrSubmission.id).where(
                    QrSubmission.phone_hash == phone_h, QrSubmission.case_id == case_id
                )
            ).first()
            if taken is not None:
                raise QrError("already", 409)
        last = s.exec(
            select(Rating.seq, Rating.chain)
            .where(Rating.terminal_id == tid, Rating.epoch == EPOCH)
            .order_by(col(Rating.seq).desc())
            .limit(1)
        ).first()
        seq = (last[0] if last else 0) + 1
        body = _BODY.pack(1, 0, EPOCH, seq, int(press.timestamp()), sub.level, sub.reason, scale, 0)
        raw = body + protocol.rating_tag(self.keys.record_key, tid, body) + NO_DISTRICT_TAG
        row = NewRating(
            terminal_id=tid, epoch=EPOCH, seq=seq, office=self.office, desk=desk.id,
            level=sub.level, scale=scale, reason=sub.reason, flags=0, press_time=press,
            clock_unknown=False, repeat=False, test=False, prompted=False, received_at=now,
            official_id=official, case_id=case_id, link_status=link, raw=raw,
        )  # fmt: skip
        row.chain = integrity.chain_link(last[1] if last else "", row)
        columns = {f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name != "id"}
        rating = Rating(**columns, channel=CHANNEL)
        s.add(rating)
        s.flush()
        assert rating.id is not None
        row.id = rating.id
        if link == office.ALREADY_RATED:
            office.exclude(
                s,
                rating_id=rating.id,
                reason="second_for_case",
                note=None,
                actor=office.HUB_ACTOR,
                automatic=True,
            )
        elif link == office.NO_CASE and desk.requires_case:
            office.exclude(
                s,
                rating_id=rating.id,
                reason="no_case_required",
                note=None,
                actor=office.HUB_ACTOR,
                automatic=True,
            )
        s.add(
            QrSubmission(
                rating_id=rating.id,
                office=self.office,
                desk_id=desk.id,
                at=now,
                phone_hash=phone_h,
                case_id=case_id if phone_h is not None else None,
                client_hash=client_h,
            )
        )
        return row


# -- integrity -----------------------------------------------------------------------------------------
def verify(engine: Engine, office_id: str, keys: QrKeys) -> integrity.Report:
    """The QR ratings' own check, as ``integrity.verify`` does for terminals: each record decodes
    and its hub tag verifies with the hub's QR key, the columns equal the record, the chain
    continues and the sequence numbers have no gap (QR ratings are never quarantined)."""
    report = integrity.Report()
    with Session(engine) as s:
        tids = s.exec(
            select(Rating.terminal_id)
            .where(Rating.office == office_id, Rating.channel == CHANNEL)
            .distinct()
        ).all()
        for tid in sorted(tids):
            report.terminals += 1
            prev = ""
            seqs: list[int] = []
            rows = s.exec(
                select(Rating).where(Rating.terminal_id == tid).order_by(col(Rating.id))
            ).all()
            for row in rows:
                report.ratings += 1
                seqs.append(row.seq)
                problem = integrity._row_matches_raw(row, keys.record_key)
                if problem:
                    report.findings.append(
                        integrity.Finding(tid, "modified", problem, row.id, [row.seq])
                    )
                if integrity.chain_link(prev, row) != row.chain:
                    report.findings.append(
                        integrity.Finding(
                            tid,
                            "chain_broken",
                            "hash chain does not continue here: this row was changed, or a row "
                            "before it was deleted or reordered",
                            row.id,
                            [row.seq],
                        )
                    )
                prev = row.chain
            missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
            if missing:
                report.findings.append(
                    integrity.Finding(
                        tid,
                        "missing",
                        f"QR sequence numbers {integrity._ranges(missing)} are not stored (deleted?)",
                        None,
                        missing,
                    )
                )
    return report
