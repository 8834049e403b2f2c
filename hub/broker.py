"""The office's Mosquitto, run and configured by the hub.

The hub owns the broker's configuration: one password per terminal (user name = terminal id), one
account for the hub, and an ACL that confines each terminal to its own topics of this office (see
docs/protocol.md). Accounts change at run time (a terminal is provisioned or revoked): the files are
rewritten atomically and Mosquitto re-reads them on SIGHUP. Mosquitto 2.0 then disconnects a client
whose account has gone, so a revocation takes effect at once. The process to signal is found by
its pid file (checked against /proc), so that another process than the one that started Mosquitto
(a technician's ``sipas-hub broker`` command while the hub runs) can reload it too.

Passwords never appear on a command line: the password file is written in plain text with mode 0600
and hashed in place by ``mosquitto_passwd -U`` before it replaces the live file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "BrokerAccounts",
    "BrokerError",
    "BrokerNotRunning",
    "BrokerPortInUse",
    "Mosquitto",
    "TlsFiles",
    "find_free_port",
]

TOPIC_ROOT = "sipas/v1"
TERMINAL_ID = re.compile(r"^t-[0-9a-f]{12}$")
OFFICE_ID = re.compile(r"^[a-z0-9-]{1,32}$")
# The hub's user name must not look like a terminal id (it would get a terminal's pattern ACLs and
# could be confused with one in the logs) and must be a single topic level for `%u`.
HUB_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

INSTALL_HINT = "install it: sudo apt-get install mosquitto (or run scripts/setup.sh)"
_RELOAD_MARK = b"Reloading config."
_RUNNING_MARK = b" running"
_LOG_TAIL_LINES = 20


class BrokerError(RuntimeError):
    """Mosquitto could not be configured, started, reloaded or stopped."""


class BrokerPortInUse(BrokerError):
    """The listener's port is already taken by another process."""


class BrokerNotRunning(BrokerError):
    """No Mosquitto runs on this folder's configuration."""


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and private key (PEM) for a TLS listener."""

    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerAccounts:
    """Who may connect: the hub and the active terminals. A revoked terminal is simply absent."""

    hub_user: str
    hub_password: str = field(repr=False)
    terminals: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not HUB_USER.fullmatch(self.hub_user) or TERMINAL_ID.fullmatch(self.hub_user):
            raise ValueError(f"invalid hub user name: {self.hub_user!r}")
        _check_password(self.hub_user, self.hub_password)
        for terminal_id, password in self.terminals.items():
            if not TERMINAL_ID.fullmatch(terminal_id):
                raise ValueError(f"invalid terminal id: {terminal_id!r} (expected t-<12 hex>)")
            _check_password(terminal_id, password)
        object.__setattr__(self, "terminals", dict(self.terminals))

    def with_terminal(self, terminal_id: str, password: str) -> BrokerAccounts:
        return BrokerAccounts(
            self.hub_user, self.hub_password, {**self.terminals, terminal_id: password}
        )

    def without_terminal(self, terminal_id: str) -> BrokerAccounts:
        rest = {t: p for t, p in self.terminals.items() if t != terminal_id}
        return BrokerAccounts(self.hub_user, self.hub_password, rest)


def _check_password(user: str, password: str) -> None:
    # One "user:password" line per account in the file given to mosquitto_passwd.
    if not password or any(c in password for c in "\r\n\0"):
        raise ValueError(f"invalid password for {user} (empty or contains a line break)")


def new_password() -> str:
    """A random broker password (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def _addrinfo(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (another process may still take it)."""
    family, address = _addrinfo(host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(address)
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    family, address = _addrinfo(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Like Mosquitto itself: connections of a previous run in TIME_WAIT do not block the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return False


def _probe_host(host: str) -> str:
    """Where to connect to test a listener bound to ``host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _logged_since(path: Path, offset: int, mark: bytes) -> bool:
    """Whether ``mark`` was written to ``path`` after ``offset``."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) < offset:
                offset = 0  # truncated or rotated meanwhile
            f.seek(offset)
            return mark in f.read()
    except FileNotFoundError:
        return False


def _verify_mosquitto_hash(stored: str, password: str) -> bool | None:
    """Check ``password`` against one hash of a Mosquitto password file (None: unknown format)."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":  # $7$iterations$salt$hash
            salt, digest = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
        elif len(parts) == 4 and parts[1] == "6":  # $6$salt$hash
            salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            mine = hashlib.sha512(password.encode() + salt).digest()
        else:
            return None
    except ValueError:
        return None
    return hmac.compare_digest(mine, digest)


class Mosquitto:
    """One Mosquitto process with its configuration, accounts, log and database in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        office: str,
        executable: str = "mosquitto",
        passwd_executable: str = "mosquitto_passwd",
        tls: TlsFiles | None = None,
    ) -> None:
        if not OFFICE_ID.fullmatch(office):
            raise ValueError(f"invalid office id: {office!r} (1-32 of a-z, 0-9, -)")
        workdir = Path(workdir).absolute()
        # mosquitto.conf values end at the first space.
        if any(c.isspace() for c in str(workdir)):
            raise ValueError(f"the broker's folder must not contain spaces: {workdir}")
        self.workdir = workdir
        self.host = host
        self.port = port
        self.office = office
        self.executable = executable
        self.passwd_executable = passwd_executable
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self._accounts: BrokerAccounts | None = None

    # -- paths -----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def passwd_path(self) -> Path:
        return self.workdir / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.workdir / "acl"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def output_path(self) -> Path:
        """Mosquitto's stdout/stderr: errors from before the log file is open."""
        return self.workdir / "mosquitto.out"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "mosquitto.pid"

    @property
    def accounts(self) -> BrokerAccounts | None:
        """The accounts last written by this object (None before write_config)."""
        return self._accounts

    # -- configuration ---------------------------------------------------------------------------

    def write_config(self, hub_user: str, hub_password: str, terminals: Mapping[str, str]) -> None:
        """Write mosquitto.conf, the hashed password file and the ACL (all mode 0600)."""
        accounts = BrokerAccounts(hub_user, hub_password, terminals)
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        self._write_passwd(accounts)
        _write_private(self.acl_path, self._acl_text(accounts))
        _write_private(self.config_path, self._config_text())
        self._accounts = accounts

    def update_accounts(
        self, hub_user: str, hub_password: str, terminals: Mapping[str, str]
    ) -> None:
        """Rewrite the accounts and, if the broker runs, make it use them before returning."""
        self.write_config(hub_user, hub_password, terminals)
        if self.running:
            self.reload()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock: one process at a time reads the registry, writes the files and
        reloads, so that two writers (the hub and a technician's command) cannot interleave."""
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def differing_files(self, hub_user: str) -> list[Path]:
        """The configuration and ACL files whose content differs from what ``write_config`` would
        write now (missing files count): the sign of settings other than the broker's own."""
        expected = {
            self.config_path: self._config_text(),
            self.acl_path: self._acl_text(BrokerAccounts(hub_user, "unused")),
        }
        differ = []
        for path, text in expected.items():
            try:
                if path.read_text(encoding="utf-8") != text:
                    differ.append(path)
            except OSError:
                differ.append(path)
        return differ

    def passwd_users(self) -> list[str]:
        """The user names in the password file as it is on disk (empty if there is none)."""
        try:
            lines = self.passwd_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [line.split(":", 1)[0] for line in lines if ":" in line]

    def password_matches(self, user: str, password: str) -> bool | None:
        """Whether the password file on disk holds ``password`` for ``user``.

        None when it cannot tell: no such user, or a hash format other than mosquitto_passwd's
        (``$7$``: PBKDF2-SHA512; ``$6$``: one round of SHA-512).
        """
        try:
            lines = self.passwd_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            name, _, stored = line.partition(":")
            if name == user:
                return _verify_mosquitto_hash(stored, password)
        return None

    def trial_copy(self, workdir: Path, port: int) -> Mosquitto:
        """A broker in ``workdir``, listening on loopback ``port``, that uses this broker's
        configuration, password and ACL files as they are on disk: start it to check them without
        touching the live broker. Its own pid file, log and (empty) database are in ``workdir``."""
        trial = Mosquitto(
            workdir,
            host="127.0.0.1",
            port=port,
            office=self.office,
            executable=self.executable,
            passwd_executable=self.passwd_executable,
        )
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BrokerError(f"no configuration in {self.workdir}") from None
        trial.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        trial.data_dir.mkdir(exist_ok=True, mode=0o700)
        for src, dst in ((self.passwd_path, trial.passwd_path), (self.acl_path, trial.acl_path)):
            if src.exists():
                _write_private(dst, src.read_text(encoding="utf-8"))
        paths = {
            "pid_file": str(trial.pid_path),
            "password_file": str(trial.passwd_path),
            "acl_file": str(trial.acl_path),
            "persistence_location": f"{trial.data_dir}/",
        }
        lines = []
        first_listener = True
        for line in text.splitlines():
            words = line.split()
            key = words[0] if words and not words[0].startswith("#") else ""
            if key == "listener":
                line = f"listener {port if first_listener else find_free_port()} 127.0.0.1"
                first_listener = False
            elif key in paths:
                line = f"{key} {paths[key]}"
            elif key == "log_dest" and words[1:2] == ["file"]:
                continue  # replaced by the trial's own log below
            lines.append(line)
        lines.append(f"log_dest file {trial.log_path}")
        _write_private(trial.config_path, "\n".join(lines) + "\n")
        return trial

    def _write_passwd(self, accounts: BrokerAccounts) -> None:
        passwd = shutil.which(self.passwd_executable)
        if passwd is None:
            raise BrokerError(f"{self.passwd_executable} not found: {INSTALL_HINT}")
        lines = [f"{accounts.hub_user}:{accounts.hub_password}"]
        lines += [f"{t}:{p}" for t, p in sorted(accounts.terminals.items())]
        # Hash a private plain-text copy, then swap it in: Mosquitto never sees a half-written file.
        tmp = self.workdir / f".passwd.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            result = subprocess.run(
                [passwd, "-U", str(tmp)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"mosquitto_passwd failed ({result.returncode}): "
                    f"{(result.stderr or result.stdout).strip()}"
                )
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.passwd_path)
        finally:
            tmp.unlink(missing_ok=True)

    def _acl_text(self, accounts: BrokerAccounts) -> str:
        office = f"{TOPIC_ROOT}/{self.office}"
        return f"""\
# Generated by the SIPAS hub for office {self.office}: changes here are lost.

# The hub reads and writes the whole protocol tree.
user {accounts.hub_user}
topic readwrite {TOPIC_ROOT}/#

# A terminal (user name = terminal id) writes and reads only its own topics of this office;
# the hub still checks office and terminal of everything it receives. Pattern ACLs apply to
# every account; a revoked terminal has no password, so it cannot connect.
pattern write {office}/%u/rating
pattern write {office}/%u/status
pattern write {office}/%u/reply
pattern read {office}/%u/ack
pattern read {office}/%u/cmd
"""

    def _config_text(self) -> str:
        # Started as root, Mosquitto would switch to the "mosquitto" user, which can neither read
        # the 0600 files nor write this folder: it runs as whoever runs the hub.
        user = pwd.getpwuid(os.geteuid()).pw_name
        tls = ""
        if self.tls is not None:
            tls = (
                f"certfile {Path(self.tls.certfile).absolute()}\n"
                f"keyfile {Path(self.tls.keyfile).absolute()}\n"
            )
        return f"""\
# Generated by the SIPAS hub (hub/broker.py): changes here are lost.
# Run as the hub's own user (started as root, Mosquitto would switch to "mosquitto").
user {user}
pid_file {self.pid_path}

per_listener_settings false
allow_anonymous false
password_file {self.passwd_path}
acl_file {self.acl_path}

listener {self.port} {self.host}
{tls}
# Send small packets at once: with Nagle's algorithm and delayed ACKs every rating and every
# ack waits ~40 ms per hop (measured: bench/press_latency.py).
set_tcp_nodelay true

persistence true
persistence_location {self.data_dir}/
persistence_file mosquitto.db
# Saved every second (Mosquitto: at most every 2 s), not after every change: with
# autosave_on_changes and autosave_interval 1 Mosquitto rewrites and fsyncs the whole database
# for about every QoS 1 message, which caps the office at the SD card's fsync rate and grows
# with the queue (bench/ingest_throughput.py: 20,000 queued ratings, 2,000+ saves, acks
# stalled). A crash loses at most the last 2 s of broker state: terminals keep every rating
# until the hub's ack and send it again (DESIGN.md 4.1); statuses are re-sent every heartbeat.
autosave_on_changes false
autosave_interval 1

# Per client, beyond those in flight. Over the default (1000) Mosquitto silently drops
# messages: the hub's persistent session must hold a whole office's backlog while the hub is
# down (update, crash, restart), so that terminals need not resend it.
max_queued_messages 100000

log_dest file {self.log_path}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""

    # -- process ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start Mosquitto and return once it accepts TCP connections."""
        if self.running:
            raise BrokerError("Mosquitto is already running")
        if not self.config_path.exists():
            raise BrokerError(f"no configuration in {self.workdir}: call write_config() first")
        executable = shutil.which(self.executable)
        if executable is None:
            raise BrokerError(f"{self.executable} not found: {INSTALL_HINT}")
        self._stop_leftover(timeout)
        if _port_in_use(self.host, self.port):
            raise self._port_in_use_error()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        offsets = {path: _size(path) for path in (self.output_path, self.log_path)}
        with open(self.output_path, "ab") as out:
            self._proc = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        probe = (_probe_host(self.host), self.port)
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                if any(
                    _logged_since(path, at, b"Address already in use")
                    for path, at in offsets.items()
                ):
                    raise self._port_in_use_error()
                tail = self.log_tail()
                raise BrokerError(f"Mosquitto exited at start (code {code}):\n{tail}")
            # "running" in our log: the listener answering is ours, not a process that took the
            # port between the check above and Mosquitto's bind.
            if _logged_since(self.log_path, offsets[self.log_path], _RUNNING_MARK):
                try:
                    with socket.create_connection(probe, timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(
                    f"Mosquitto did not accept connections on {self.host}:{self.port} within "
                    f"{timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _port_in_use_error(self) -> BrokerPortInUse:
        return BrokerPortInUse(
            f"port {self.port} on {self.host} is already in use (another Mosquitto?): "
            "stop it or set SIPAS_HUB_MQTT_PORT"
        )

    def find_pid(self) -> int | None:
        """The pid of a live Mosquitto running on this folder's configuration, None if there is none.

        It may have been started by another process (the hub, while this is a technician's
        command): the pid file says which process it is, and /proc confirms that it still is a
        Mosquitto started with our configuration file, not a process that inherited a stale pid.
        """
        if self.running and self._proc is not None:
            return self._proc.pid
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        try:
            # Empty for a zombie (a dead child its parent has not reaped yet): not running.
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not argv or not os.path.basename(argv[0]).startswith(b"mosquitto"):
            return False
        config = str(self.config_path).encode()
        return any(a == b"-c" and b == config for a, b in zip(argv, argv[1:], strict=False))

    def _stop_leftover(self, timeout: float) -> None:
        """Stop a Mosquitto left running on this folder by a hub that died without stopping it."""
        pid = self.find_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # SIGTERM: it saves its database before exiting
        deadline = time.monotonic() + timeout
        while self._is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def save(self) -> None:
        """Make Mosquitto write its database now (SIGUSR1), e.g. once the hub's session exists."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)

    def reload(self, timeout: float = 5.0) -> None:
        """Make Mosquitto re-read the password and ACL files (SIGHUP); wait until it has.

        Clients whose account has gone are disconnected; the others stay connected. The broker may
        be this object's process or one started by another process on the same folder (found by
        its pid file): a technician's command reloads the broker the running hub owns.
        """
        pid = self.find_pid()
        if pid is None:
            raise BrokerNotRunning(
                f"Mosquitto is not running on {self.config_path} (no live process in {self.pid_path})"
            )
        start = _size(self.log_path)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise BrokerNotRunning(f"Mosquitto (pid {pid}) exited before the reload") from None
        # Mosquitto logs this line, then reloads within the same turn of its event loop, before
        # it reads any further packet: a client connecting after it sees the new accounts.
        deadline = time.monotonic() + timeout
        while not _logged_since(self.log_path, start, _RELOAD_MARK):
            if not self._alive(pid):
                raise BrokerError(f"Mosquitto exited while reloading:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"Mosquitto did not confirm the reload within {timeout:g} s")
            time.sleep(0.01)

    def _alive(self, pid: int) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return self._is_ours(pid)

    def accepting(self, timeout: float = 1.0) -> bool:
        """Whether something accepts TCP connections on the listener's address."""
        try:
            with socket.create_connection((_probe_host(self.host), self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Mosquitto with SIGTERM (it saves its database), SIGKILL if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BrokerError(
                    f"Mosquitto did not stop within {timeout:g} s and was killed"
                ) from None

    def kill(self) -> None:
        """Kill Mosquitto with SIGKILL, as a crash or power cut would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port."""
        self.stop(timeout)
        self.start(timeout)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of Mosquitto's output and log, for error messages."""
        parts = []
        for path in (self.output_path, self.log_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts) or "(Mosquitto wrote nothing)"

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Mosquitto {self.office} on {self.host}:{self.port}, {state}>"
