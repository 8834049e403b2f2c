"""Over-the-air updates, hub side (docs/protocol.md, "Application bundle and over-the-air update").

- :func:`load_bundle` validates a bundle directory (``manifest.json`` and the files it lists);
- :class:`FirmwareStore` keeps imported bundles in ``<data_dir>/firmware/<version>/``, read-only;
- :func:`update_signature` is the per-terminal ``sig`` of the ``update`` command (terminals before
  the replay protection); :func:`update_signature2` its ``sig2``, which also signs the command's
  count (:func:`next_update_count`, spent once by the terminal) and the downgrade flag;
- :class:`RolloutEngine` updates terminals one at a time and stops at the first that does not come
  back on the new version. Its state is in the ``rollout`` and ``rolloutstep`` tables and every step
  is in the audit log. :meth:`RolloutEngine.cancel` stops a rollout after the terminal being
  updated has finished on its own (a terminal is never interrupted mid-flash).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import logging
import os
import queue
import re
import secrets
import shutil
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub import protocol, registry
from hub.config import Settings
from hub.models import AuditLog, Rollout, RolloutStep, Terminal, utcnow
from hub.office import OFFICE_TZ

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
APP_PATH_RE = re.compile(r"^app/[A-Za-z0-9_]+\.(py|mpy)$")
_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FW_VERSION_RE = re.compile(r"""^FW_VERSION\s*=\s*["']([^"']+)["']""", re.MULTILINE)
MAX_MANIFEST = 64 * 1024
MAX_UPLOAD = 16 * 1024 * 1024  # a whole ESP32 flash is 4 MB
MAX_TAR_MEMBERS = 1000

SIG_PREFIX = b"SIPAS-U1"  # `sig`: only for terminals older than the replay protection
SIG2_PREFIX = b"SIPAS-U2"  # `sig2`: also signs the command's count and its downgrade flag
MAX_COUNT = 0xFFFFFFFF  # the count is a u32 in the signed message
# Audit rows of a terminal that carry update counts (signed, or reported back by the terminal).
_COUNT_ACTIONS = ("update_sent", "update_failed", "update_refused")


class BundleError(ValueError):
    """The bundle is not what docs/protocol.md describes; the text names the bad entry."""


class BundleConflict(BundleError):
    """This version was imported before with other content."""


class RolloutError(ValueError):
    """A rollout cannot start; the text says why and what to do."""


class RolloutBusy(RolloutError):
    """Another rollout is running."""


class RolloutNotFound(RolloutError):
    """No rollout with this id on this hub."""


class RolloutNotRunning(RolloutError):
    """Nothing to cancel: the rollout already ended (or is already being cancelled)."""


# -- bundles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    section: str  # app | root | sources
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    path: Path
    version: str
    manifest_bytes: bytes
    entries: tuple[Entry, ...]

    @property
    def app(self) -> list[Entry]:
        return [e for e in self.entries if e.section == "app"]

    def served(self) -> set[str]:
        """The only names the hub serves for this version."""
        return {MANIFEST} | {e.path for e in self.entries}

    def same_content(self, other: Bundle) -> bool:
        return json.loads(self.manifest_bytes) == json.loads(other.manifest_bytes)


def _entry(section: str, i: int, raw: object) -> Entry:
    where = f"{section}[{i}]"
    if not isinstance(raw, dict):
        raise BundleError(f"manifest {where} is not an object")
    path, sha, size = raw.get("path"), raw.get("sha256"), raw.get("size")
    if not isinstance(path, str) or not path:
        raise BundleError(f"manifest {where} has no path")
    where = f"{section} entry {path!r}"
    if section == "app":
        if not APP_PATH_RE.fullmatch(path):
            raise BundleError(
                f"{where}: an app path must be app/<name>.py or app/<name>.mpy (no sub-folders)"
            )
    else:
        parts = path.split("/")
        if path.startswith("/") or not all(_PART_RE.fullmatch(p) for p in parts):
            raise BundleError(f"{where}: not a plain relative path inside the bundle")
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise BundleError(f"{where}: sha256 must be 64 lower-case hex digits")
    if type(size) is not int or size < 0:
        raise BundleError(f"{where}: size must be a whole number of bytes")
    return Entry(section, path, sha, size)


def load_bundle(path: Path) -> Bundle:
    """Read and check a bundle directory: the manifest's shape, every listed file's presence, size
    and sha256, and ``version`` against ``FW_VERSION`` in app.py when the bundle carries it."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} has no {MANIFEST}: is it a bundle from `sipas-provision build`?")
    data = mpath.read_bytes()
    if len(data) > MAX_MANIFEST:
        raise BundleError(f"{MANIFEST} is {len(data)} bytes: too big to be a manifest")
    try:
        m = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{MANIFEST} is not valid JSON: {e}") from e
    if not isinstance(m, dict) or m.get("v") != 1:
        raise BundleError(f'{MANIFEST} must be an object with "v": 1')
    version = m.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise BundleError(
            f"{MANIFEST}: version {version!r} must be 1-32 of letters, digits, '.', '_', '-'"
        )
    if m.get("config") is not None:
        raise BundleError(
            f"{MANIFEST} lists a config: that is one terminal's secrets, written over USB only; "
            "build a generic bundle (without --config) for updates"
        )
    entries: list[Entry] = []
    for section in ("app", "root", "sources"):
        raw = m.get(section, [])
        if not isinstance(raw, list):
            raise BundleError(f"{MANIFEST}: {section} must be a list")
        entries += [_entry(section, i, r) for i, r in enumerate(raw)]
    app = [e for e in entries if e.section == "app"]
    if not app:
        raise BundleError(f"{MANIFEST} lists no app files: nothing to update")
    names = [e.path for e in entries]
    dup = {n for n in names if names.count(n) > 1} | ({MANIFEST} & set(names))
    if dup:
        raise BundleError(f"{MANIFEST} lists {sorted(dup)[0]!r} twice")
    modules = {p.rsplit("/", 1)[1].split(".")[0] for p in (e.path for e in app)}
    if len(modules) != len(app):
        raise BundleError(f"{MANIFEST}: an app module is listed both as .py and .mpy")
    if "app" not in modules:
        raise BundleError(
            f"{MANIFEST} has no app/app.py or app/app.mpy: the terminal would not start"
        )
    for ent in entries:
        f = path / ent.path
        if f.is_symlink() or not f.is_file():
            raise BundleError(
                f"{ent.section} entry {ent.path!r}: missing from {path} (or not a regular file)"
            )
        body = f.read_bytes()
        if len(body) != ent.size:
            raise BundleError(
                f"{ent.section} entry {ent.path!r}: size is {len(body)} bytes, manifest says {ent.size}"
            )
        if hashlib.sha256(body).hexdigest() != ent.sha256:
            raise BundleError(
                f"{ent.section} entry {ent.path!r}: sha256 does not match the manifest"
            )
        if ent.path in ("app/app.py", "src/app/app.py"):
            found = _FW_VERSION_RE.search(body.decode("utf-8", "replace"))
            if found is None:
                raise BundleError(f"{ent.path} defines no FW_VERSION")
            if found.group(1) != version:
                raise BundleError(
                    f"version mismatch: {MANIFEST} says {version!r} but {ent.path} has "
                    f"FW_VERSION = {found.group(1)!r}; the terminal would report the latter"
                )
    return Bundle(path, version, data, tuple(entries))


def update_signature(hub_key: bytes, terminal_id: str, manifest_bytes: bytes) -> str:
    """``sig`` of the update command: HMAC-SHA256 (full, hex) with the terminal's hub key."""
    msg = SIG_PREFIX + terminal_id.encode() + b"\x00" + manifest_bytes
    return hmac.new(hub_key, msg, hashlib.sha256).hexdigest()


def update_signature2(
    hub_key: bytes, terminal_id: str, manifest_bytes: bytes, count: int, downgrade: bool = False
) -> str:
    """``sig2`` of the update command: HMAC-SHA256 (full, hex) with the terminal's hub key over
    ``SIPAS-U2 || id || 0x00 || count (u32 LE) || flags (u8, bit 0: downgrade allowed) ||
    manifest.json``. A terminal accepts each count once, and only above the last it accepted."""
    if not 0 < count <= MAX_COUNT:
        raise ValueError(f"update count {count} is outside 1..{MAX_COUNT}")
    flags = struct.pack("<IB", count, 1 if downgrade else 0)
    msg = SIG2_PREFIX + terminal_id.encode() + b"\x00" + flags + manifest_bytes
    return hmac.new(hub_key, msg, hashlib.sha256).hexdigest()


GUARD_VERSION = (0, 2, 0)  # the first firmware that checks sig2 (and ignores sig)


def needs_sig1(running: object) -> bool:
    """Whether an update command to a terminal running ``running`` must also carry the old
    ``sig`` (no count signed): only firmware before the replay guard reads it. For a terminal on
    the guard's firmware it is left out, so a captured command cannot be replayed at it after a
    deliberate downgrade to such old firmware. Unknown version: sent (it could be old)."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", running) if isinstance(running, str) else None
    return m is None or tuple(int(x) for x in m.groups()) < GUARD_VERSION


def next_update_count(s: Session, terminal_id: str, now: float | None = None) -> int:
    """The count for this terminal's next update command: above every count the hub signed for it
    or heard it report (its audit rows), and at least the current Unix time. The audit keeps it
    rising when the clock goes back; the clock keeps it rising when the database is restored from
    an old backup; a terminal's refusal reports its own last count, for when both fail."""
    last = 0
    rows = s.exec(
        select(AuditLog.detail).where(
            AuditLog.entity == "terminal",
            AuditLog.entity_id == terminal_id,
            col(AuditLog.action).in_(_COUNT_ACTIONS),
        )
    ).all()
    for raw in rows:
        try:
            detail = json.loads(raw)
        except ValueError:
            continue
        for key in ("count", "last_count"):
            v = detail.get(key) if isinstance(detail, dict) else None
            if type(v) is int and v <= MAX_COUNT:
                last = max(last, v)
    return max(last + 1, int(time.time() if now is None else now))


def pack_bundle(bundle: Bundle) -> bytes:
    """The bundle's manifest and listed files as a tar.gz (what ``POST /api/v1/firmware`` takes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in [MANIFEST] + [e.path for e in bundle.entries]:
            tf.add(bundle.path / name, arcname=name, recursive=False)
    return buf.getvalue()


class FirmwareStore:
    """Imported bundles, one read-only folder per version under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, version: str) -> Path:
        if not VERSION_RE.fullmatch(version):
            raise BundleError(f"not a version: {version!r}")
        return self.root / version

    def get(self, version: str) -> Bundle | None:
        try:
            d = self.dir(version)
        except BundleError:
            return None
        if not (d / MANIFEST).is_file():
            return None
        return load_bundle(d)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def serve(self, version: str, name: str) -> bytes | None:
        """A file of an imported bundle, or None. Only the manifest's own names are served, so no
        path from the request ever reaches the file system unchecked."""
        try:
            d = self.dir(version)
            data = (d / MANIFEST).read_bytes()
            m = json.loads(data)
        except (BundleError, OSError, ValueError):
            return None
        if name == MANIFEST:
            return data
        listed = {
            e.get("path")
            for s in ("app", "root", "sources")
            for e in (m.get(s) or [])
            if isinstance(e, dict)
        }
        if name not in listed:
            return None
        try:
            return (d / name).read_bytes()
        except OSError:
            return None

    def import_dir(self, src: Path) -> tuple[Bundle, bool]:
        """Copy a bundle in. Returns (stored bundle, created). The same version again with the same
        content changes nothing; with other content it is a :class:`BundleConflict`."""
        bundle = load_bundle(src)
        existing = self.get(bundle.version)
        if existing is not None:
            return self._same(existing, bundle), False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".import-{bundle.version}-", dir=self.root))
        try:
            for name in [MANIFEST] + [e.path for e in bundle.entries]:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, tmp / name)
            copied = load_bundle(tmp)  # what is stored is checked, not what was read before
            if copied.manifest_bytes != bundle.manifest_bytes:
                raise BundleError(f"{src} changed while it was being imported")
            _fsync_tree(tmp)
            try:
                os.rename(tmp, self.root / bundle.version)
            except OSError:  # imported meanwhile by someone else
                existing = self.get(bundle.version)
                if existing is None:
                    raise
                return self._same(existing, bundle), False
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        stored = load_bundle(self.root / bundle.version)
        return stored, True

    def import_tar(self, data: bytes) -> tuple[Bundle, bool]:
        """Import a bundle sent as a tar.gz (manifest.json at the top, or in one top folder)."""
        if len(data) > MAX_UPLOAD:
            raise BundleError(f"upload of {len(data)} bytes is over {MAX_UPLOAD}")
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=self.root) as t:
            tmp = Path(t)
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                    members = tf.getmembers()
                    if len(members) > MAX_TAR_MEMBERS:
                        raise BundleError(f"the archive has {len(members)} entries")
                    if sum(m.size for m in members) > 4 * MAX_UPLOAD:
                        raise BundleError("the archive unpacks to more than 64 MB")
                    # the "data" filter refuses absolute paths, "..", links out and devices
                    tf.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise BundleError(f"not a readable tar.gz archive: {e}") from e
            top = tmp
            if not (top / MANIFEST).is_file():
                subdirs = [p for p in tmp.iterdir() if p.is_dir()]
                if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
                    top = subdirs[0]
            return self.import_dir(top)

    @staticmethod
    def _same(existing: Bundle, new: Bundle) -> Bundle:
        if not existing.same_content(new):
            raise BundleConflict(
                f"version {new.version} is already on the hub with other content: "
                "give the new build its own version number"
            )
        return existing


def _fsync_tree(root: Path) -> None:
    # a power cut right after the rename must not leave a published version with empty files
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# -- where terminals download from ---------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _unspecified(host: str) -> bool:
    ip = _ip(host)
    return host == "" or (ip is not None and ip.is_unspecified)


def firmware_base_url(settings: Settings) -> str:
    """``http://<advertised host>:<API port>/api/v1/firmware/``: an address a terminal can reach.

    Loopback is accepted only when the broker itself is on loopback (tests, the demo): then the
    terminals run on this machine too."""
    host = settings.advertised_host or settings.mqtt_host
    fix = "set SIPAS_HUB_ADVERTISED_HOST to this hub's address on the office network"
    if _unspecified(host):
        raise RolloutError(f"terminals would be told to download from {host!r}: {fix}")
    if _loopback(host) and not _loopback(settings.mqtt_host):
        raise RolloutError(f"terminals on the office network cannot reach {host}: {fix}")
    if _loopback(settings.api_host) and not _loopback(host):
        raise RolloutError(
            f"the API listens on {settings.api_host} only, so terminals cannot download from "
            f"http://{host}:{settings.api_port}: set SIPAS_HUB_API_HOST=0.0.0.0 (or {host}) "
            "and restart the hub"
        )
    ip = _ip(host)
    shown = f"[{host.strip('[]')}]" if ip is not None and ip.version == 6 else host
    return f"http://{shown}:{settings.api_port}/api/v1/firmware/"


# -- rollouts ------------------------------------------------------------------------------------

HUB_ACTOR = "hub"
RUNNING, DONE, STOPPED, INTERRUPTED = "running", "done", "stopped", "interrupted"
CANCELLED = "cancelled"
# Shown (never stored) while a cancelled rollout waits for the terminal it is updating: stored, it
# stays "running" so that no other rollout starts before that terminal has finished.
CANCELLING = "cancelling"
# step states
PENDING, SENT, STAGED, TRIAL, UPDATED = "pending", "sent", "staged", "trial", "updated"
SKIPPED, FAILED, NOT_STARTED, STEP_INTERRUPTED = "skipped", "failed", "not_started", "interrupted"
_WAITING = (SENT, STAGED, TRIAL)


class _Interrupted(Exception):
    pass


class _Cancelled(Exception):
    """Cancelled before the next terminal was sent anything."""


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.isoformat()


def _audit(s: Session, actor: str, action: str, entity: str, entity_id: str, **detail: Any) -> None:
    s.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            detail=json.dumps(detail, ensure_ascii=False),
        )
    )


def _local(t: datetime | None) -> str:
    if t is None:
        return "?"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(OFFICE_TZ).strftime("%d/%m/%Y %H:%M:%S")


def _cancel_requests(s: Session, rollout_ids: list[int]) -> dict[int, AuditLog]:
    """The "cancel" audit row of each of these rollouts that has one: the cancel request is kept
    there (who and when), so it survives a hub restart."""
    if not rollout_ids:
        return {}
    rows = s.exec(
        select(AuditLog).where(
            AuditLog.entity == "rollout",
            AuditLog.action == "cancel",
            col(AuditLog.entity_id).in_([str(i) for i in rollout_ids]),
        )
    ).all()
    return {int(a.entity_id): a for a in rows}


def _cancelled_reason(req: AuditLog, reason: str | None) -> str:
    return f"cancelled by {req.actor}" + (f"; {reason}" if reason else "")


def _last_heartbeat(term: Terminal) -> dict[str, Any]:
    try:
        st = json.loads(term.last_heartbeat or "{}")
    except ValueError:
        return {}
    return st if isinstance(st, dict) else {}


class RolloutEngine:
    """Runs one rollout at a time in a background thread.

    Ingest hands it every reply and status after its commit (:meth:`on_reply`, :meth:`on_status`);
    only those of the terminal being updated are queued for the rollout thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        office: str,
        store: FirmwareStore,
        publish: Callable[[str, bytes], None],
        base_url: Callable[[], str],
        default_timeout_s: float = 600,
    ):
        self.engine = engine
        self.office = office
        self.store = store
        self.publish = publish
        self.base_url = base_url
        self.default_timeout_s = default_timeout_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._current: str | None = None  # terminal being updated
        self._cid: str | None = None  # the update command the rollout waits for a reply to
        self._rid: int | None = None  # rollout the thread runs
        self._cancel_rid: int | None = None  # set (under _lock) when that rollout is cancelled
        self._events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    # -- from the ingest thread
    def on_reply(self, terminal_id: str, reply: dict[str, Any]) -> None:
        if terminal_id == self._current:
            self._events.put(("reply", reply))
        cid = reply.get("id")
        if (
            reply.get("ok") is False
            and isinstance(cid, str)
            and cid.startswith("u-")
            and cid != self._cid
        ):
            try:
                self._unexpected_refusal(terminal_id, cid, reply)
            except Exception:  # the ingest thread calls this: it must never stop it
                log.exception("could not record %s's refusal of %s", terminal_id, cid)

    def _unexpected_refusal(self, tid: str, cid: str, reply: dict[str, Any]) -> None:
        """A terminal refused an update command no rollout is waiting for: a replayed command (by
        anything that can publish on its command topic), or a late answer. Kept in the audit log
        (with the rollout that first sent that command id, if any) and logged."""
        error = str(reply.get("error") or "no reason given")[:300]
        last = reply.get("last_count")
        with Session(self.engine) as s:
            sent = s.exec(
                select(RolloutStep.rollout_id).where(
                    RolloutStep.terminal_id == tid, RolloutStep.command_id == cid
                )
            ).first()
            _audit(s, HUB_ACTOR, "update_refused", "terminal", tid, command=cid, reason=error,
                   sent_in_rollout=sent,
                   last_count=last if type(last) is int else None)  # fmt: skip
            s.commit()
        log.warning(
            "terminal %s refused update command %s (%s): %s",
            tid,
            cid,
            f"sent in rollout {sent}" if sent is not None else "not sent by this hub",
            error,
        )

    def on_status(self, terminal_id: str, status: dict[str, Any]) -> None:
        if terminal_id == self._current:
            self._events.put(("status", status))

    # -- control
    def recover(self) -> list[int]:
        """At start-up: a rollout still marked running was cut short by a restart or a crash."""
        return self._interrupt_all("the hub restarted during the rollout")

    def running(self) -> int | None:
        with Session(self.engine) as s:
            return s.exec(
                select(Rollout.id).where(Rollout.office == self.office, Rollout.state == RUNNING)
            ).first()

    def targets(
        self, *, terminal: str | None = None, desk: str | None = None, all_: bool = False
    ) -> tuple[str, list[str]]:
        if sum((terminal is not None, desk is not None, bool(all_))) != 1:
            raise RolloutError("give exactly one target: a terminal, a desk, or all")
        with Session(self.engine) as s:
            q = select(Terminal).where(Terminal.office == self.office, Terminal.active)
            if terminal is not None:
                t = s.get(Terminal, terminal)
                if t is None or t.office != self.office:
                    raise RolloutError(f"terminal {terminal} is not registered here")
                if not t.active:
                    raise RolloutError(f"terminal {terminal} is retired")
                return f"terminal:{terminal}", [terminal]
            if desk is not None:
                rows = s.exec(q.where(Terminal.desk == desk).order_by(col(Terminal.id))).all()
                if not rows:
                    raise RolloutError(f"no active terminal on desk {desk}")
                return f"desk:{desk}", [t.id for t in rows]
            rows = s.exec(q.order_by(col(Terminal.desk), col(Terminal.id))).all()
            if not rows:
                raise RolloutError("this hub has no active terminal")
            return "all", [t.id for t in rows]

    def start(
        self,
        *,
        version: str,
        terminal: str | None = None,
        desk: str | None = None,
        all_: bool = False,
        timeout_s: float | None = None,
        actor: str = HUB_ACTOR,
        allow_downgrade: bool = False,
    ) -> int:
        """Check everything that can be checked first, then start the rollout's thread.

        ``allow_downgrade`` signs the commands as a deliberate downgrade: without it a terminal
        refuses a version that is not newer than the one it runs."""
        bundle = self.store.get(version)
        if bundle is None:
            raise RolloutError(f"version {version} is not imported: upload the bundle first")
        target, tids = self.targets(terminal=terminal, desk=desk, all_=all_)
        base = self.base_url()
        timeout = float(timeout_s if timeout_s is not None else self.default_timeout_s)
        if not 1 <= timeout <= 24 * 3600:
            raise RolloutError("the timeout must be between 1 s and 24 h")
        with self._lock:
            busy = self.running()
            if busy is not None and busy == self._cancel_rid:
                raise RolloutBusy(
                    f"rollout {busy} is being cancelled: it ends when the terminal it is updating "
                    "has finished; wait for it (sipas-hub terminals rollouts)"
                )
            if busy is not None or (self._thread is not None and self._thread.is_alive()):
                raise RolloutBusy(f"rollout {busy} is still running: wait for it to finish")
            with Session(self.engine) as s:
                r = Rollout(
                    office=self.office,
                    version=version,
                    target=target,
                    timeout_s=timeout,
                    actor=actor,
                    state=RUNNING,
                )
                s.add(r)
                s.flush()
                assert r.id is not None
                rid = r.id
                for i, tid in enumerate(tids):
                    s.add(RolloutStep(rollout_id=rid, position=i, terminal_id=tid))
                _audit(s, actor, "start", "rollout", str(rid), version=version, target=target,
                       terminals=len(tids), timeout_s=timeout,
                       allow_downgrade=allow_downgrade)  # fmt: skip
                s.commit()
            self._stop.clear()
            self._rid, self._cancel_rid = rid, None
            self._thread = threading.Thread(
                target=self._run,
                args=(rid, bundle, base + version + "/", timeout, allow_downgrade),
                name=f"hub-rollout-{rid}",
                daemon=True,
            )
            self._thread.start()
        log.info("rollout %s of %s to %s started by %s", rid, version, target, actor)
        return rid

    def cancel(self, rollout_id: int, *, actor: str = HUB_ACTOR) -> dict[str, Any]:
        """Cancel a running rollout. Terminals not yet started are never sent the update; the one
        being updated now is left to finish (confirm or roll back) on its own, since stopping a
        terminal mid-flash is what the update protocol exists to avoid, and the rollout then ends
        ``cancelled``. Until then it shows ``cancelling`` and no other rollout can start.

        The request (who, when) is the "cancel" audit row. :class:`RolloutNotFound` for an unknown
        id, :class:`RolloutNotRunning` when there is nothing to cancel (the text says what to do).
        """
        with self._lock:
            with Session(self.engine) as s:
                r = s.get(Rollout, rollout_id)
                if r is None or r.office != self.office:
                    raise RolloutNotFound(
                        f"no rollout {rollout_id} on this hub: `sipas-hub terminals rollouts` "
                        "lists them"
                    )
                prior = _cancel_requests(s, [rollout_id]).get(rollout_id)
                if r.state != RUNNING or prior is not None:
                    raise RolloutNotRunning(_nothing_to_cancel(r, prior, s))
                steps = s.exec(
                    select(RolloutStep)
                    .where(RolloutStep.rollout_id == rollout_id)
                    .order_by(col(RolloutStep.position))
                ).all()
                current = next((st.terminal_id for st in steps if st.state in _WAITING), None)
                _audit(s, actor, "cancel", "rollout", str(rollout_id), version=r.version,
                       updating=current,
                       not_started=sum(1 for st in steps if st.state == PENDING))  # fmt: skip
                s.commit()
            t = self._thread
            orphan = not (t is not None and t.is_alive() and self._rid == rollout_id)
            if not orphan:
                self._cancel_rid = rollout_id  # the thread stops after the current terminal
        log.warning(
            "rollout %s: cancel requested by %s%s",
            rollout_id,
            actor,
            f" (waiting for {current} to finish its update)" if current else "",
        )
        if orphan:  # no thread runs it (cannot happen after recover()): end it here
            self._interrupt_all("no rollout thread was running it", only=rollout_id)
        out = self.get(rollout_id)
        assert out is not None
        return out

    def stop(self, timeout: float = 10) -> None:
        """The hub stops: the running rollout ends as interrupted."""
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout)

    # -- views
    def get(self, rollout_id: int) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            r = s.get(Rollout, rollout_id)
            if r is None or r.office != self.office:
                return None
            steps = s.exec(
                select(RolloutStep)
                .where(RolloutStep.rollout_id == rollout_id)
                .order_by(col(RolloutStep.position))
            ).all()
            cancel = _cancel_requests(s, [rollout_id]).get(rollout_id)
            return _public(r, list(steps), cancel=cancel)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            rows = s.exec(
                select(Rollout)
                .where(Rollout.office == self.office)
                .order_by(col(Rollout.id).desc())
                .limit(limit)
            ).all()
            cancels = _cancel_requests(s, [r.id for r in rows if r.id is not None])
            out = []
            for r in rows:
                steps = s.exec(select(RolloutStep).where(RolloutStep.rollout_id == r.id)).all()
                cancel = cancels.get(r.id) if r.id is not None else None
                out.append(_public(r, list(steps), with_steps=False, cancel=cancel))
            return out

    # -- the rollout thread
    def _run(
        self, rid: int, bundle: Bundle, url: str, timeout: float, downgrade: bool = False
    ) -> None:
        try:
            with Session(self.engine) as s:
                steps = s.exec(
                    select(RolloutStep)
                    .where(RolloutStep.rollout_id == rid)
                    .order_by(col(RolloutStep.position))
                ).all()
                ids = [(st.id, st.terminal_id) for st in steps]
            for sid, tid in ids:
                assert sid is not None
                if self._stop.is_set():
                    raise _Interrupted
                if self._cancel_rid == rid:
                    raise _Cancelled
                reason = self._update_one(rid, sid, tid, bundle, url, timeout, downgrade)
                if reason is not None:
                    self._finish(rid, STOPPED, f"{tid}: {reason}")
                    return
            self._finish(rid, DONE, None)
        except _Cancelled:
            self._finish(rid, CANCELLED, None)
        except _Interrupted:
            self._interrupt_all("the hub was stopped during the rollout")
        except Exception as e:
            log.exception("rollout %s failed", rid)
            self._finish(rid, STOPPED, f"hub error: {e!r}"[:500])
        finally:
            self._current = None
            with self._lock:
                self._cancel_rid = None

    def _step(self, sid: int, **changes: Any) -> None:
        with Session(self.engine) as s:
            st = s.get(RolloutStep, sid)
            assert st is not None
            for k, v in changes.items():
                setattr(st, k, v)
            s.add(st)
            s.commit()

    def _end_step(
        self, rid: int, sid: int, tid: str, state: str, reason: str | None, **detail: Any
    ) -> None:
        with Session(self.engine) as s:
            st = s.get(RolloutStep, sid)
            assert st is not None
            st.state, st.reason, st.finished_at = state, reason, utcnow()
            s.add(st)
            self._cid = None  # a reply to that command from now on is not this step's
            action = {UPDATED: "updated", SKIPPED: "update_skipped", FAILED: "update_failed"}[state]
            _audit(s, HUB_ACTOR, action, "terminal", tid, rollout=rid, reason=reason, **detail)
            s.commit()

    def _update_one(
        self,
        rid: int,
        sid: int,
        tid: str,
        bundle: Bundle,
        url: str,
        timeout: float,
        downgrade: bool = False,
    ) -> str | None:
        """Update one terminal; None when it runs the new version, else the reason it does not."""
        version = bundle.version
        with Session(self.engine) as s:
            term = s.get(Terminal, tid)
            if term is None or not term.active:
                self._end_step(rid, sid, tid, FAILED, "retired during the rollout")
                return "retired during the rollout"
            hb = _last_heartbeat(term)
            health = registry.health(term)
            hub_key = bytes.fromhex(term.hub_key)
        old = hb.get("fw")
        if old == version:
            self._step(sid, from_fw=old)
            self._end_step(rid, sid, tid, SKIPPED, f"already on {version}", version=version)
            return None
        if not health["online"]:
            seen = _iso(health["last_seen"]) or "never"
            why = f"offline (last heard {seen}): it cannot be updated now"
            self._step(sid, from_fw=old)
            self._end_step(rid, sid, tid, FAILED, why, version=version)
            return why
        # drop events of a previous terminal, then listen to this one before the command goes out
        while not self._events.empty():
            self._events.get_nowait()
        self._current = tid
        cid = f"u-{secrets.token_hex(4)}"
        sig = update_signature(hub_key, tid, bundle.manifest_bytes)
        with Session(self.engine) as s:
            count = next_update_count(s, tid)
        if count > MAX_COUNT:  # the year 2106, or a terminal that reported a forged last count
            why = (
                f"its update count is used up ({count - 1}): register a new terminal "
                "(sipas-hub terminals add) and provision it over USB"
            )
            self._step(sid, from_fw=old)
            self._end_step(rid, sid, tid, FAILED, why, version=version)
            return why
        sig2 = update_signature2(hub_key, tid, bundle.manifest_bytes, count, downgrade)
        with self._lock:  # a cancel sees this terminal as being updated, or it is not sent at all
            if self._cancel_rid == rid:
                raise _Cancelled
            self._step(sid, state=SENT, from_fw=old, command_id=cid, started_at=utcnow())
        with Session(self.engine) as s:
            # the count is in the database before it goes out: the next one is always above it
            _audit(s, HUB_ACTOR, "update_sent", "terminal", tid, rollout=rid, version=version,
                   count=count, downgrade=downgrade,
                   **{"from": old, "command": cid})  # fmt: skip
            s.commit()
        args: dict[str, Any] = {"version": version, "url": url}
        if needs_sig1(old):
            args["sig"] = sig
        args.update(count=count, sig2=sig2)
        if downgrade:
            args["downgrade"] = True
        self._cid = cid
        cmd = protocol.encode_command(cid, "update", args)
        self.publish(protocol.topic(self.office, tid, "cmd"), cmd)
        deadline = time.monotonic() + timeout
        replied = resigned = False
        last: tuple[object, object] = (old, hb.get("ota"))
        while True:
            if self._stop.is_set():
                raise _Interrupted
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not replied:
                    why = f"no reply to the update command within {timeout:g} s"
                else:
                    why = (
                        f"did not come back on {version} within {timeout:g} s "
                        f"(last heartbeat: fw {last[0]}, ota {last[1]})"
                    )
                self._end_step(rid, sid, tid, FAILED, why, version=version)
                return why
            try:
                kind, msg = self._events.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                continue
            if kind == "reply":
                if msg.get("id") != cid:
                    continue
                if msg.get("ok") is not True:
                    why = f"refused the update: {msg.get('error') or 'no reason given'}"
                    n = msg.get("last_count")  # the next command is signed above it
                    n = n if type(n) is int else None
                    if n is not None and count <= n < MAX_COUNT and not resigned:
                        # Its count is above ours (provisioned from a PC whose clock was ahead
                        # of the hub's): sign once more, above it. The terminal still accepts
                        # each count once and only upwards; only the hub can sign.
                        resigned, count = True, n + 1
                        cid = f"u-{secrets.token_hex(4)}"
                        args["count"] = count
                        args["sig2"] = update_signature2(
                            hub_key, tid, bundle.manifest_bytes, count, downgrade
                        )
                        with Session(self.engine) as s:
                            _audit(s, HUB_ACTOR, "update_sent", "terminal", tid, rollout=rid,
                                   version=version, count=count, downgrade=downgrade,
                                   above_terminal_count=n,
                                   **{"from": old, "command": cid})  # fmt: skip
                            s.commit()
                        self._step(sid, command_id=cid)
                        self._cid = cid
                        self.publish(
                            protocol.topic(self.office, tid, "cmd"),
                            protocol.encode_command(cid, "update", args),
                        )
                        continue
                    self._end_step(rid, sid, tid, FAILED, why, version=version, last_count=n)
                    return why
                if not replied:
                    replied = True
                    self._step(sid, state=STAGED)
                continue
            if msg.get("state") != "online":
                continue  # the "offline" last will while it reboots
            fw, ota = msg.get("fw"), msg.get("ota")
            last = (fw, ota)
            # Before the ok reply a heartbeat may still carry an earlier attempt's rolled_back.
            if replied and ota == "rolled_back":
                why = f"the new version did not come up: rolled back to {fw}"
                self._end_step(rid, sid, tid, FAILED, why, version=version)
                return why
            if fw == version and ota == "ok":
                self._end_step(rid, sid, tid, UPDATED, None, version=version, **{"from": old})
                self._current = None
                return None
            if fw == version and ota == "trial":
                self._step(sid, state=TRIAL)

    def _finish(self, rid: int, state: str, reason: str | None) -> None:
        # Under the lock, so a cancel is either seen here or refused as "already ended".
        with self._lock, Session(self.engine) as s:
            r = s.get(Rollout, rid)
            assert r is not None
            cancelled = state == CANCELLED or self._cancel_rid == rid
            req = _cancel_requests(s, [rid]).get(rid) if cancelled else None
            if req is not None and state == DONE:  # it came while the last terminal updated
                reason = (
                    f"every terminal was updated: the cancel by {req.actor} came while the last "
                    "one was updating (nothing was left to cancel)"
                )
            elif req is not None:
                state, reason = CANCELLED, _cancelled_reason(req, reason)
            r.state, r.reason, r.finished_at = state, reason, utcnow()
            s.add(r)
            for st in s.exec(
                select(RolloutStep).where(
                    RolloutStep.rollout_id == rid, RolloutStep.state == PENDING
                )
            ).all():
                st.state = NOT_STARTED
                if req is not None:
                    st.reason = f"the rollout was cancelled by {req.actor}: never sent the update"
                s.add(st)
            action = {DONE: "done", STOPPED: "stopped", CANCELLED: "cancelled"}[state]
            _audit(s, HUB_ACTOR, action, "rollout", str(rid), version=r.version, reason=reason)
            s.commit()
        log.log(
            logging.INFO if state == DONE else logging.WARNING,
            "rollout %s %s%s",
            rid,
            state,
            f": {reason}" if reason else "",
        )

    def _interrupt_all(self, reason: str, *, only: int | None = None) -> list[int]:
        """End running rollouts whose thread is gone. One with a cancel request ends cancelled
        (the request stands), the others interrupted; either way the terminal that was being
        updated is marked interrupted: it may have updated, its heartbeat tells."""
        done = []
        with self._lock, Session(self.engine) as s:
            q = select(Rollout).where(Rollout.office == self.office, Rollout.state == RUNNING)
            if only is not None:
                q = q.where(Rollout.id == only)
            rows = s.exec(q).all()
            cancels = _cancel_requests(s, [r.id for r in rows if r.id is not None])
            for r in rows:
                assert r.id is not None
                req = cancels.get(r.id)
                state = INTERRUPTED if req is None else CANCELLED
                why = reason if req is None else _cancelled_reason(req, reason)
                r.state, r.reason, r.finished_at = state, why, utcnow()
                s.add(r)
                for st in s.exec(select(RolloutStep).where(RolloutStep.rollout_id == r.id)).all():
                    if st.state == PENDING:
                        st.state = NOT_STARTED
                    elif st.state in _WAITING:
                        st.state = STEP_INTERRUPTED
                        st.reason = f"{reason}; check the version it reports"
                        st.finished_at = utcnow()
                    s.add(st)
                _audit(s, HUB_ACTOR, state, "rollout", str(r.id), version=r.version,
                       reason=why)  # fmt: skip
                done.append(r.id)
                log.warning("rollout %s %s: %s", r.id, state, why)
            s.commit()
        return done


def _nothing_to_cancel(r: Rollout, prior: AuditLog | None, s: Session) -> str:
    """Why a rollout cannot be cancelled, and what to do instead."""
    rid, when = r.id, _local(r.finished_at)
    again = "to update its terminals, start a new rollout (sipas-hub terminals update)"
    if r.state == RUNNING and prior is not None:
        step = s.exec(
            select(RolloutStep).where(
                RolloutStep.rollout_id == rid, col(RolloutStep.state).in_(_WAITING)
            )
        ).first()
        who = f"terminal {step.terminal_id}" if step is not None else "the terminal being updated"
        return (
            f"rollout {rid} is already being cancelled (by {prior.actor} at "
            f"{_local(prior.at)}): it ends as soon as {who} has finished its update; "
            f"follow it with `sipas-hub terminals rollouts {rid}`"
        )
    if r.state == CANCELLED:
        return f"rollout {rid} was already cancelled at {when} ({r.reason}): nothing to do"
    if r.state == DONE:
        return (
            f"rollout {rid} already finished at {when}: every terminal runs {r.version}; "
            "nothing to cancel"
        )
    if r.state == INTERRUPTED:
        return (
            f"rollout {rid} was already interrupted at {when} ({r.reason}): nothing to cancel; "
            f"check the version its terminals report (sipas-hub terminals rollouts {rid})"
        )
    return (
        f"rollout {rid} already ended ({r.state} at {when}: {r.reason}): nothing to cancel; "
        f"the terminals after it were never sent the update; {again}"
    )


def _public(
    r: Rollout,
    steps: list[RolloutStep],
    *,
    with_steps: bool = True,
    cancel: AuditLog | None = None,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for st in steps:
        counts[st.state] = counts.get(st.state, 0) + 1
    out: dict[str, Any] = {
        "id": r.id,
        "version": r.version,
        "target": r.target,
        "state": CANCELLING if r.state == RUNNING and cancel is not None else r.state,
        "cancel": None if cancel is None else {"by": cancel.actor, "at": _iso(cancel.at)},
        "reason": r.reason,
        "actor": r.actor,
        "timeout_s": r.timeout_s,
        "created_at": _iso(r.created_at),
        "finished_at": _iso(r.finished_at),
        "total": len(steps),
        "counts": counts,
    }
    if with_steps:
        out["terminals"] = [
            {
                "position": st.position,
                "terminal": st.terminal_id,
                "state": st.state,
                "from_fw": st.from_fw,
                "reason": st.reason,
                "command_id": st.command_id,
                "started_at": _iso(st.started_at),
                "finished_at": _iso(st.finished_at),
            }
            for st in steps
        ]
    return out
