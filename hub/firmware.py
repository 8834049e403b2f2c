"""Over-the-air updates, hub side (docs/protocol.md, "Application bundle and over-the-air update").

- :func:`load_bundle` validates a bundle directory (``manifest.json`` and the files it lists);
- :class:`FirmwareStore` keeps imported bundles in ``<data_dir>/firmware/<version>/``, read-only;
- :func:`update_signature` is the per-terminal ``sig`` of the ``update`` command;
- :class:`RolloutEngine` updates terminals one at a time and stops at the first that does not come
  back on the new version. Its state is in the ``rollout`` and ``rolloutstep`` tables and every step
  is in the audit log.
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

SIG_PREFIX = b"SIPAS-U1"


class BundleError(ValueError):
    """The bundle is not what docs/protocol.md describes; the text names the bad entry."""


class BundleConflict(BundleError):
    """This version was imported before with other content."""


class RolloutError(ValueError):
    """A rollout cannot start; the text says why and what to do."""


class RolloutBusy(RolloutError):
    """Another rollout is running."""


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
# step states
PENDING, SENT, STAGED, TRIAL, UPDATED = "pending", "sent", "staged", "trial", "updated"
SKIPPED, FAILED, NOT_STARTED, STEP_INTERRUPTED = "skipped", "failed", "not_started", "interrupted"
_WAITING = (SENT, STAGED, TRIAL)


class _Interrupted(Exception):
    pass


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
        self._events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    # -- from the ingest thread
    def on_reply(self, terminal_id: str, reply: dict[str, Any]) -> None:
        if terminal_id == self._current:
            self._events.put(("reply", reply))

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
    ) -> int:
        """Check everything that can be checked first, then start the rollout's thread."""
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
                       terminals=len(tids), timeout_s=timeout)  # fmt: skip
                s.commit()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run,
                args=(rid, bundle, base + version + "/", timeout),
                name=f"hub-rollout-{rid}",
                daemon=True,
            )
            self._thread.start()
        log.info("rollout %s of %s to %s started by %s", rid, version, target, actor)
        return rid

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
            return _public(r, list(steps))

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            rows = s.exec(
                select(Rollout)
                .where(Rollout.office == self.office)
                .order_by(col(Rollout.id).desc())
                .limit(limit)
            ).all()
            out = []
            for r in rows:
                steps = s.exec(select(RolloutStep).where(RolloutStep.rollout_id == r.id)).all()
                out.append(_public(r, list(steps), with_steps=False))
            return out

    # -- the rollout thread
    def _run(self, rid: int, bundle: Bundle, url: str, timeout: float) -> None:
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
                reason = self._update_one(rid, sid, tid, bundle, url, timeout)
                if reason is not None:
                    self._finish(rid, STOPPED, f"{tid}: {reason}")
                    return
            self._finish(rid, DONE, None)
        except _Interrupted:
            self._interrupt_all("the hub was stopped during the rollout")
        except Exception as e:
            log.exception("rollout %s failed", rid)
            self._finish(rid, STOPPED, f"hub error: {e!r}"[:500])
        finally:
            self._current = None

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
            action = {UPDATED: "updated", SKIPPED: "update_skipped", FAILED: "update_failed"}[state]
            _audit(s, HUB_ACTOR, action, "terminal", tid, rollout=rid, reason=reason, **detail)
            s.commit()

    def _update_one(
        self, rid: int, sid: int, tid: str, bundle: Bundle, url: str, timeout: float
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
        self._step(sid, state=SENT, from_fw=old, command_id=cid, started_at=utcnow())
        with Session(self.engine) as s:
            _audit(s, HUB_ACTOR, "update_sent", "terminal", tid, rollout=rid, version=version,
                   **{"from": old, "command": cid})  # fmt: skip
            s.commit()
        cmd = protocol.encode_command(cid, "update", {"version": version, "url": url, "sig": sig})
        self.publish(protocol.topic(self.office, tid, "cmd"), cmd)
        deadline = time.monotonic() + timeout
        replied = False
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
                    self._end_step(rid, sid, tid, FAILED, why, version=version)
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
        with Session(self.engine) as s:
            r = s.get(Rollout, rid)
            assert r is not None
            r.state, r.reason, r.finished_at = state, reason, utcnow()
            s.add(r)
            for st in s.exec(
                select(RolloutStep).where(
                    RolloutStep.rollout_id == rid, RolloutStep.state == PENDING
                )
            ).all():
                st.state = NOT_STARTED
                s.add(st)
            action = {DONE: "done", STOPPED: "stopped"}[state]
            _audit(s, HUB_ACTOR, action, "rollout", str(rid), version=r.version, reason=reason)
            s.commit()
        log.log(
            logging.INFO if state == DONE else logging.WARNING,
            "rollout %s %s%s",
            rid,
            state,
            f": {reason}" if reason else "",
        )

    def _interrupt_all(self, reason: str) -> list[int]:
        done = []
        with Session(self.engine) as s:
            for r in s.exec(
                select(Rollout).where(Rollout.office == self.office, Rollout.state == RUNNING)
            ).all():
                assert r.id is not None
                r.state, r.reason, r.finished_at = INTERRUPTED, reason, utcnow()
                s.add(r)
                for st in s.exec(select(RolloutStep).where(RolloutStep.rollout_id == r.id)).all():
                    if st.state == PENDING:
                        st.state = NOT_STARTED
                    elif st.state in _WAITING:
                        st.state = STEP_INTERRUPTED
                        st.reason = f"{reason}; check the version it reports"
                        st.finished_at = utcnow()
                    s.add(st)
                _audit(s, HUB_ACTOR, "interrupted", "rollout", str(r.id), version=r.version,
                       reason=reason)  # fmt: skip
                done.append(r.id)
            s.commit()
        for rid in done:
            log.warning("rollout %s interrupted: %s", rid, reason)
        return done


def _public(r: Rollout, steps: list[RolloutStep], *, with_steps: bool = True) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for st in steps:
        counts[st.state] = counts.get(st.state, 0) + 1
    out: dict[str, Any] = {
        "id": r.id,
        "version": r.version,
        "target": r.target,
        "state": r.state,
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
