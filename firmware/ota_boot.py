# Fixed boot code (written by provisioning over USB, never over the air): the update's swap,
# trial and rollback, and the safe-mode boot counter (docs/protocol.md, "Application bundle and
# over-the-air update"; docs/firmware.md). Pure logic over a filesystem root ("/" on the device,
# a directory in the simulator and the tests). Every step is idempotent and each filesystem
# operation is atomic on littlefs, so a power cut between any two of them is finished or undone by
# the next boot: /app is always one complete version, never a mix, never missing.
#
#   staged: /app = old, /app.new = new   -> /app.old = old, /app = new    -> trial, tries 0
#   trial:  tries + 1 at every boot; over TRIES -> /app.bad = new, /app = old -> rolled_back
#   ok (the application confirmed), rolled_back, or no /ota.json: leftovers are removed
import json
import os

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


TRIES = const(3)  # boots a new version gets to confirm before it is rolled back
SAFE_AFTER = const(3)  # consecutive unhealthy boots before the application starts in safe mode
_DIR = const(0x4000)  # S_IFDIR in os.stat()[0]


def _p(root, name):
    return root.rstrip("/") + "/" + name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:  # the errno differs between ports (ENOENT is 2 on the ESP32, 44 in wasm)
        return False


def rmtree(path):
    # Remove a file or a directory tree; a missing path is fine (so it can be repeated).
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & _DIR:
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def _write(path, text):
    # Atomic replace: a power cut leaves the old contents or the new, never a torn file.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def read_state(root):
    # The /ota.json record, or None (no update ever, or unreadable).
    try:
        with open(_p(root, "ota.json")) as f:
            st = json.loads(f.read())
        return st if isinstance(st, dict) else None
    except (OSError, ValueError):
        return None


def write_state(root, st):
    _write(_p(root, "ota.json"), json.dumps(st))


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _rename_if(src, dst):
    if _exists(src):
        os.rename(src, dst)


def _swap(root, st):
    # staged -> trial. Which moves are done is read from the filesystem, so this resumes anywhere.
    app, new, old = _p(root, "app"), _p(root, "app.new"), _p(root, "app.old")
    if _exists(new):
        if _exists(app):
            rmtree(old)  # an older /app.old: the current /app is the version to keep
            os.rename(app, old)
        os.rename(new, app)
    elif not _exists(old):
        # Neither the new files nor a moved-aside old version: the staged update never landed.
        return {"state": "rolled_back", "version": st.get("version"), "from": st.get("from")}
    _write(_p(root, "bootfail"), "0")
    return {"state": "trial", "version": st.get("version"), "from": st.get("from"), "tries": 0}


def _roll_back(root, st):
    # trial -> rolled_back: /app aside to /app.bad, /app.old back to /app. Resumable the same way.
    app, old, bad = _p(root, "app"), _p(root, "app.old"), _p(root, "app.bad")
    if _exists(old):
        if _exists(app):
            rmtree(bad)
            os.rename(app, bad)
        os.rename(old, app)
    elif not _exists(bad):
        # Nothing to roll back to (the old version is gone): keep the new one; the safe-mode
        # counter takes over if it keeps failing.
        return {"state": "ok", "version": st.get("version")}
    _write(_p(root, "bootfail"), "0")
    return {"state": "rolled_back", "version": st.get("version"), "from": st.get("from")}


def boot(root="/"):
    """Run at every boot, before the application. Finishes or undoes an interrupted swap or
    rollback, counts trial boots and unhealthy boots. Returns a dict: state (None, "ok", "trial",
    "rolled_back"), version, trial (arm the trial reset timer), tries, safe_mode, bootfail."""
    rmtree(_p(root, "ota.json.tmp"))
    st = read_state(root) or {}
    state = st.get("state")
    if state == "staged":
        st = _swap(root, st)
        write_state(root, st)
        state = st["state"]
    if state == "trial":
        tries = st.get("tries", 0)
        tries = (tries if isinstance(tries, int) else 0) + 1
        if tries > TRIES or not _exists(_p(root, "app")):
            st = _roll_back(root, st)
        else:
            st["tries"] = tries
        write_state(root, st)  # the try is counted before the application starts
        state = st["state"]
        if state != "trial":
            rmtree(_p(root, "app.bad"))
    if state != "trial":
        if not _exists(_p(root, "app")):  # never without an application, whatever happened
            for name in ("app.old", "app.new", "app.bad"):
                if _exists(_p(root, name)):
                    os.rename(_p(root, name), _p(root, "app"))
                    break
        for name in ("app.old", "app.new", "app.bad"):  # leftovers: a confirmed trial's old
            rmtree(_p(root, name))  # version, a download cut short, a rolled-back version
    res = {"state": state, "version": st.get("version"), "trial": state == "trial"}
    res["tries"] = st.get("tries", 0) if state == "trial" else 0
    n = 0
    if state != "trial":  # a trial that keeps failing rolls back instead
        n = _read_int(_p(root, "bootfail"))
        _write(_p(root, "bootfail"), str(n + 1))
    res["bootfail"] = n + 1 if state != "trial" else 0
    res["safe_mode"] = n >= SAFE_AFTER
    return res


def status(root="/"):
    # What boot() decided, read back without changing anything (for the application).
    st = read_state(root) or {}
    state = st.get("state")
    n = 0 if state == "trial" else _read_int(_p(root, "bootfail"))
    return {"state": state, "version": st.get("version"), "safe_mode": n > SAFE_AFTER}


def in_trial(root="/"):
    st = read_state(root)
    return st is not None and st.get("state") == "trial"


def confirm(root, version):
    # The new version came up (connected and published a heartbeat): keep it, drop the old one.
    if not in_trial(root):
        return False
    write_state(root, {"state": "ok", "version": version})
    rmtree(_p(root, "app.old"))
    return True


def healthy(root="/"):
    # The application ran healthily: the next boot is not counted as a failure.
    _write(_p(root, "bootfail"), "0")
