# Over-the-air update, the terminal's side (docs/protocol.md, "Application bundle and over-the-air
# update"): the `update` command downloads the signed manifest and the application files into
# /app.new, checking every byte, then marks them staged for ota_boot.py (fixed boot code) to swap
# in at the next boot. Also the application's half of the trial: confirm once connected and a
# heartbeat is out, and clear the safe-mode counter once healthy.
#
# Replay and downgrade (docs/protocol.md, "Replay and downgrade"): every update command carries a
# count, signed with the manifest (sig2); the terminal keeps the highest count it accepted in
# /ota_count, outside /app, so swaps and rollbacks never touch it, and refuses any command whose
# count is not above it, and any version not newer than the running one unless the hub signed it
# as a deliberate downgrade.
import hashlib
import json
import os
import struct
from binascii import hexlify, unhexlify

from app import codec

try:
    import ota_boot  # fixed boot code at the filesystem root (on sys.path on the device)
except ImportError:
    ota_boot = None

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAX_MANIFEST = const(16384)
MAX_FILE = const(262144)
MIN_FREE = const(65536)  # what must stay free after the download (protocol.md)
HEALTHY_MS = const(300000)  # 5 minutes up counts as a healthy boot even without the hub
CHUNK = const(1024)
TIMEOUT_S = const(10)  # every socket operation
DEADLINE_MS = const(120000)  # the whole download
MAX_COUNT = 0xFFFFFFFF  # counts are u32 (not a const: above the small-int range)
_NAME = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_HEX = "0123456789abcdef"
_DIGITS = "0123456789"


class UpdateError(Exception):
    pass


def state(root):
    st = ota_boot.read_state(root) if ota_boot and root else None
    return st.get("state") if st else None


# -- trial confirmation and health (called by App) ---------------------------------------------
def after_beat(app):
    # A heartbeat went out over a live connection: the new version works. Keep it.
    if app.ota == "trial" and ota_boot and app.root:
        from app.app import FW_VERSION

        try:
            if ota_boot.confirm(app.root, FW_VERSION):
                app.ota = "ok"
                app._beat_due = True  # tell the hub's rollout at once (after heartbeat_min_s)
                app._event("ota", "confirmed " + FW_VERSION)
        except OSError as e:
            app._event("ota", "confirm failed: %s" % e)
    mark_healthy(app)


def check_health(app):
    # Called each turn of the loop until healthy: connected, or 5 minutes up without the hub.
    b = app.board
    if app.online() or b.ticks_diff(b.ticks_ms(), app.started_ms) >= HEALTHY_MS:
        mark_healthy(app)


def mark_healthy(app):
    if app.healthy:
        return
    app.healthy = True
    if ota_boot and app.root:
        try:
            ota_boot.healthy(app.root)
        except OSError as e:
            app._event("ota", "bootfail not cleared: %s" % e)


# -- the update command ---------------------------------------------------------------------
def update(app, cid, args):
    # Returns the reply. On success the files are staged and app.reboot_pending is set, so the
    # reply goes out before the reset (App.step).
    try:
        version = _stage(app, args)
    except UpdateError as e:
        _discard(app.root)
        app._event("ota", "refused: %s" % e)
        return _refusal(app, cid, str(e))
    except (OSError, ValueError, MemoryError) as e:
        _discard(app.root)
        app._event("ota", "failed: %s" % e)
        return _refusal(app, cid, "update failed: %s" % e)
    app.reboot_pending = True
    app._event("ota", "staged " + version)
    return {"v": 1, "id": cid, "ok": True, "staged": version}


def _refusal(app, cid, error):
    # last_count: the hub signs its next command above it (after a restore from an old backup).
    return {"v": 1, "id": cid, "ok": False, "error": error, "last_count": last_count(app.root)}


def _discard(root):
    if ota_boot and root:
        try:
            ota_boot.rmtree(root.rstrip("/") + "/app.new")
        except OSError:
            pass


def _stage(app, args):
    if ota_boot is None or not app.root:
        raise UpdateError("no ota_boot.py on this terminal: update it over USB")
    if app.ota == "trial":
        raise UpdateError("the current version is still on trial: try again once it confirms")
    if app.ota == "staged":
        raise UpdateError("an update is already staged: it is applied at the next boot")
    if not isinstance(args, dict):
        args = {}
    version, url = args.get("version"), args.get("url")
    n, sig, down = args.get("count"), args.get("sig2"), args.get("downgrade") is True
    if not isinstance(version, str) or not version or not isinstance(url, str):
        raise UpdateError("update needs version, url, count and sig2")
    if not isinstance(n, int) or not 0 < n <= MAX_COUNT or not isinstance(sig, str):
        raise UpdateError(
            "no signed count (count, sig2): it could be an old command replayed; "
            "the hub must be updated"
        )
    # Refused before any download (cheap for a flood of replays); the signature below proves
    # that count, version and downgrade are the hub's.
    last = last_count(app.root)
    if n <= last:
        raise UpdateError("replayed or outdated command: count %d, last accepted %d" % (n, last))
    from app.app import FW_VERSION

    if not down and not newer(version, FW_VERSION):
        raise UpdateError(
            "%s is not newer than the running %s: a downgrade or reinstall must be signed as one "
            "(sipas-hub terminals update --allow-downgrade)" % (version, FW_VERSION)
        )
    if not url.endswith("/"):
        url += "/"
    b = app.board
    dl = Download(b, app.service_buttons, b.ticks_add(b.ticks_ms(), DEADLINE_MS))
    raw = dl.get_bytes(url + "manifest.json", MAX_MANIFEST)
    msg = b"SIPAS-U2" + app.tid.encode() + b"\x00" + struct.pack("<IB", n, 1 if down else 0) + raw
    try:
        good = codec._eq(codec.hmac_sha256(app.hub_key, msg), unhexlify(sig))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise UpdateError("bad signature on manifest.json")
    save_count(app.root, n)  # spent: this command is never accepted again, whatever follows
    files = check_manifest(raw, version)
    root = app.root.rstrip("/")
    new = root + "/app.new"
    ota_boot.rmtree(new)
    need = 2 * 4096  # the directory's metadata pair
    for _, size, _ in files:
        need += (size + 4095) // 4096 * 4096
    free = free_bytes(app.root)
    if free - need < MIN_FREE:
        raise UpdateError("not enough flash: %d bytes free, %d needed + %d reserve" % (
            free, need, MIN_FREE))  # fmt: skip
    os.mkdir(new)
    for path, size, sha in files:
        with open(new + "/" + path[4:], "wb") as f:
            got = dl.get_file(url + path, f, size)
        if got != sha:
            raise UpdateError("%s: sha256 mismatch" % path)
    ota_boot.write_state(app.root, {"state": "staged", "version": version, "from": FW_VERSION})
    app.ota = "staged"
    return version


def check_manifest(raw, version):
    # The signed manifest's app entries as [(path, size, sha256 hex)], or UpdateError.
    try:
        m = json.loads(raw)
    except ValueError:
        raise UpdateError("manifest.json is not valid JSON")
    if not isinstance(m, dict) or m.get("v") != 1:
        raise UpdateError("manifest.json is not a version 1 manifest")
    if m.get("version") != version:
        raise UpdateError("manifest version %r is not %r" % (m.get("version"), version))
    entries = m.get("app")
    if not isinstance(entries, list) or not entries:
        raise UpdateError("manifest lists no app files")
    out, names = [], []
    for e in entries:
        path = e.get("path") if isinstance(e, dict) else None
        if not isinstance(path, str) or not _app_path(path):
            raise UpdateError("bad app path %r: only app/<name>.py or .mpy" % (path,))
        name = path[4:].split(".")[0]
        if name in names:
            raise UpdateError("%s is listed twice" % name)
        names.append(name)
        size, sha = e.get("size"), e.get("sha256")
        if not isinstance(size, int) or not 0 <= size <= MAX_FILE:
            raise UpdateError("%s: bad size" % path)
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in _HEX for c in sha):
            raise UpdateError("%s: bad sha256" % path)
        out.append((path, size, sha))
    if "start" not in names:
        raise UpdateError("the bundle has no app/start: it could not boot")
    return out


def _app_path(path):
    if not path.startswith("app/"):
        return False
    name = path[4:]
    for ext in (".py", ".mpy"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            return bool(stem) and all(c in _NAME for c in stem)
    return False


# -- replay and downgrade ---------------------------------------------------------------------
def last_count(root):
    # The count of the last update command accepted; 0 before the first (or without a root).
    try:
        with open(root.rstrip("/") + "/ota_count") as f:
            return int(f.read())
    except (AttributeError, OSError, ValueError):
        return 0


def save_count(root, n):
    # Temporary file + rename (atomic on littlefs): a power cut leaves the old count or the new.
    path = root.rstrip("/") + "/ota_count"
    with open(path + ".tmp", "w") as f:
        f.write(str(n))
    os.rename(path + ".tmp", path)


def _vkey(v):
    # "0.10.2-rc1" -> ([0, 10, 2], "-rc1"): the leading dotted numbers (trailing zeros dropped:
    # 0.2 is 0.2.0), then the rest.
    i = 0
    while i < len(v) and v[i] in "0123456789.":
        i += 1
    nums = [int(p) for p in v[:i].split(".") if p]
    while nums and not nums[-1]:
        nums.pop()
    return nums, v[i:]


def _words(s):
    # "-rc10" -> [(1, "-rc"), (0, 10)]: runs of digits compare as numbers (rc10 after rc9)
    out, i = [], 0
    while i < len(s):
        j, d = i, s[i] in _DIGITS
        while j < len(s) and (s[j] in _DIGITS) == d:
            j += 1
        out.append((0, int(s[i:j])) if d else (1, s[i:j]))
        i = j
    return out


def newer(a, b):
    # Is version a newer than version b? The numbers decide; with the same numbers a release is
    # newer than its pre-releases (0.2.0 after 0.2.0-rc2), which compare by their text.
    (na, sa), (nb, sb) = _vkey(a), _vkey(b)
    if na != nb:
        return na > nb
    if sa == sb or not sb:
        return False
    return not sa or _words(sa) > _words(sb)


def free_bytes(root):
    st = os.statvfs(root)
    return st[1] * st[4]  # fragment size x blocks available


# -- a minimal HTTP/1.0 GET ------------------------------------------------------------------
def parse_url(url):
    # "http://host[:port]/path" -> (host, port, path)
    if not url.startswith("http://"):
        raise UpdateError("only http:// URLs: %s" % url)
    rest = url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, port = hostport, 80
    if ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        try:
            port = int(p)
        except ValueError:
            raise UpdateError("bad port in %s" % url)
    if not host:
        raise UpdateError("no host in %s" % url)
    return host, port, path


class Download:
    # GETs over board.open_socket: a timeout on every socket operation, an overall deadline, the
    # watchdog fed and the buttons served between chunks (idle).
    def __init__(self, board, idle, deadline):
        self.board, self.idle, self.deadline = board, idle, deadline

    def _tick(self):
        b = self.board
        b.feed_watchdog()
        if self.idle:
            self.idle()
        if b.ticks_diff(self.deadline, b.ticks_ms()) < 0:
            raise UpdateError("download took too long")

    def _get(self, url, sink, limit, exact=None):
        # Streams the body of url into sink(chunk); returns its length. exact: the size it must
        # have (checked against Content-Length before anything is read).
        host, port, path = parse_url(url)
        try:
            s = self.board.open_socket(host, port, TIMEOUT_S, self.idle)
        except OSError as e:
            raise UpdateError("cannot reach %s:%d: %s" % (host, port, e))
        try:
            if hasattr(s, "settimeout"):
                s.settimeout(TIMEOUT_S)
            read = getattr(s, "recv", None) or s.read
            write = getattr(s, "sendall", None) or s.write
            req = "GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)
            write(req.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                data = read(512)
                if not data:
                    raise UpdateError("%s: connection closed before the headers" % path)
                head += data
                if len(head) > 4096:
                    raise UpdateError("%s: headers too long" % path)
                self._tick()
            head, body = head.split(b"\r\n\r\n", 1)
            length = _check_head(head, path)
            if exact is not None and length != exact:
                raise UpdateError("%s: %d bytes served, manifest says %d" % (path, length, exact))
            if length > limit:
                raise UpdateError("%s: %d bytes, more than %d" % (path, length, limit))
            got = 0
            while True:
                if body:
                    body = body[: length - got]
                    sink(body)
                    got += len(body)
                if got >= length:
                    break
                self._tick()
                body = read(min(CHUNK, length - got))
                if not body:
                    raise UpdateError("%s: truncated at %d of %d bytes" % (path, got, length))
            return got
        except OSError as e:
            raise UpdateError("%s: %s" % (path, e))
        finally:
            s.close()

    def get_bytes(self, url, limit):
        parts = []
        self._get(url, parts.append, limit)
        return b"".join(parts)

    def get_file(self, url, f, size):
        # Writes the body to f while hashing it; returns the sha256 (hex).
        h = hashlib.sha256()

        def sink(chunk):
            h.update(chunk)
            f.write(chunk)

        self._get(url, sink, MAX_FILE, size)
        return hexlify(h.digest()).decode()


def _check_head(head, path):
    lines = head.split(b"\r\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise UpdateError("%s: not an HTTP response" % path)
    if status[1] != b"200":
        raise UpdateError("%s: HTTP %s" % (path, status[1].decode()))
    length = None
    for line in lines[1:]:
        i = line.find(b":")
        k, v = line[:i].strip().lower(), line[i + 1 :]
        if k == b"content-length":
            try:
                length = int(v.strip())
            except ValueError:
                raise UpdateError("%s: bad Content-Length" % path)
        elif k == b"transfer-encoding" and v.strip().lower() != b"identity":
            raise UpdateError("%s: chunked transfer is not supported" % path)
    if length is None or length < 0:
        raise UpdateError("%s: no Content-Length" % path)
    return length
