"""Flash written per rating by the terminal's outbox (the real firmware application on the host
simulator, talking to a real hub): steady state and a drained backlog.

The outbox module's ``open`` and ``os`` are replaced, in this process only, by a counting layer
that sees every file operation of ``firmware/app/outbox.py``: bytes written and read, files opened
for writing, created, renamed and removed (on littlefs each of these is a metadata commit). Two
scenarios, ``--n`` ratings each:

- ``steady``: one rating at a time, each acknowledged by the hub before the next press;
- ``backlog``: ``--n`` ratings stored offline, then the link comes back and the outbox drains;
  ``store`` and ``drain`` are also given apart.

Under the counting layer the files live either on the host file system or, when the optional
``littlefs-python`` package is installed (``.venv/bin/pip install littlefs-python``; not a project
dependency), on a real littlefs image in memory configured as MicroPython configures it on the
ESP32 (4096-byte blocks, read/prog size 32, cache 128, lookahead 32, block_cycles 100; the block
count of a 2 MB filesystem partition by default, ``--lfs-blocks``). The littlefs figures count
what the block device is asked to do: bytes programmed, blocks erased (each erase is one
program/erase cycle of a 4 KB flash sector) and the most-erased block. ``--backend host`` forces
the host file system.

No baseline exists other than the record itself: 48 signed bytes + a 4-byte CRC = 52 bytes, so
every figure is also given as its ratio to 52. ``outbox_written_counter`` is the outbox's own
``Outbox.written`` (appended bytes + state writes), next to what the counting layer saw.

    .venv/bin/python bench/firmware_flash.py [--n 1000] [--backend auto|host|littlefs]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))  # `import app.*` as on the device

from app import outbox as fw_outbox  # noqa: E402

from bench.firmware_common import (  # noqa: E402
    go_offline,
    go_online,
    new_terminal,
    office_with_hub,
    say,
    wait_online,
)
from provisioning.simulate import SimTerminal  # noqa: E402

SLOT = 52  # one rating in the outbox: 48-byte record + CRC-32
PE_CYCLES = 100_000  # program/erase cycles of a NOR flash sector (ESP32 data sheets: 100k typical)


# -- the counting layer ---------------------------------------------------------------------------


class Counts(Counter[str]):
    def snapshot(self) -> Counter[str]:
        return Counter(self)


class CountingFile:
    def __init__(self, f: Any, counts: Counts, log: list[str] | None, name: str) -> None:
        self.f, self.counts, self.log, self.name = f, counts, log, name

    def write(self, data: bytes) -> int:
        n = len(data)
        self.counts["bytes_written"] += n
        self.counts["write_calls"] += 1
        if self.log is not None:
            self.log.append(f"write {self.name} {n}")
        self.f.write(data)
        return n

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.f.read(n)
        self.counts["bytes_read"] += len(data)
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class HostBackend:
    name = "host"

    def __init__(self, root: str) -> None:
        self.root = root

    def open(self, path: str, mode: str) -> Any:
        return builtins.open(path, mode)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def stat(self, path: str) -> Any:
        return os.stat(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def rename(self, a: str, b: str) -> None:
        os.rename(a, b)

    def remove(self, path: str) -> None:
        os.remove(path)

    def figures(self) -> dict[str, Any]:
        return {}


class LfsFile:
    """A littlefs file opened with MicroPython's mode flags ("a" creates, as on the device)."""

    def __init__(self, lfs: Any, fs: Any, path: str, mode: str) -> None:
        F = lfs.LFSFileFlag
        if "r" in mode:
            flags = F.rdwr if "+" in mode else F.rdonly
        elif "w" in mode:
            flags = F.wronly | F.creat | F.trunc
        elif "a" in mode:
            flags = F.wronly | F.creat | F.append
        else:
            flags = F.wronly | F.creat | F.excl
        self.lfs, self.fs = lfs, fs
        self.fh = lfs.file_open(fs, path, flags)

    def write(self, data: bytes) -> int:
        n: int = self.lfs.file_write(self.fs, self.fh, bytes(data))
        return n

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.lfs.file_size(self.fs, self.fh) - self.lfs.file_tell(self.fs, self.fh)
        data: bytes = self.lfs.file_read(self.fs, self.fh, n) if n > 0 else b""
        return data

    def close(self) -> None:
        self.lfs.file_close(self.fs, self.fh)


class LittleFsBackend:
    """The outbox directory on a littlefs image in memory, block device operations counted."""

    name = "littlefs"
    BLOCK = 4096

    def __init__(self, root: str, blocks: int) -> None:
        import littlefs
        from littlefs import context, errors, lfs

        self.lfs, self.errors = lfs, errors
        self.root = root
        self.blocks = blocks
        dev = self  # counters live on the backend

        class Device(context.UserContext):
            def prog(self, cfg: Any, block: int, off: int, data: bytes) -> int:
                dev.progs += 1
                dev.prog_bytes += len(data)
                return super().prog(cfg, block, off, data)

            def erase(self, cfg: Any, block: int) -> int:
                dev.erases += 1
                dev.erase_by_block[block] += 1
                return super().erase(cfg, block)

            def read(self, cfg: Any, block: int, off: int, size: int) -> bytearray:
                dev.read_bytes += size
                return super().read(cfg, block, off, size)

        self.progs = self.prog_bytes = self.erases = self.read_bytes = 0
        self.erase_by_block: Counter[int] = Counter()
        self.fs = littlefs.LittleFS(
            context=Device(buffsize=self.BLOCK * blocks),
            block_size=self.BLOCK,
            block_count=blocks,
            read_size=32,
            prog_size=32,
            cache_size=128,
            lookahead_size=32,
            block_cycles=100,
        )
        self.zero()

    def zero(self) -> None:
        self.progs = self.prog_bytes = self.erases = self.read_bytes = 0
        self.erase_by_block = Counter()

    def _p(self, path: str) -> str:
        return "/outbox" + path[len(self.root) :]

    def _os_error(self, e: Exception, path: str) -> OSError:
        code = getattr(e, "code", None)
        if code == self.errors.LittleFSError.Error.LFS_ERR_NOENT:
            return FileNotFoundError(2, "no such file", path)
        return OSError(5, f"littlefs: {e}", path)

    def _call(self, fn: Any, path: str, *a: Any) -> Any:
        try:
            return fn(*a)
        except self.errors.LittleFSError as e:
            raise self._os_error(e, path) from e

    def open(self, path: str, mode: str) -> Any:
        return self._call(LfsFile, path, self.lfs, self.fs.fs, self._p(path), mode)

    def exists(self, path: str) -> bool:
        try:
            self.fs.stat(self._p(path))
            return True
        except self.errors.LittleFSError:
            return False

    def stat(self, path: str) -> tuple[int, ...]:
        st = self._call(self.fs.stat, path, self._p(path))
        return (0x4000 if st.type == 2 else 0x8000, 0, 0, 0, 0, 0, st.size, 0, 0, 0)

    def mkdir(self, path: str) -> None:
        self._call(self.fs.mkdir, path, self._p(path))

    def listdir(self, path: str) -> list[str]:
        names: list[str] = self._call(self.fs.listdir, path, self._p(path))
        return names

    def rename(self, a: str, b: str) -> None:
        self._call(self.fs.rename, a, self._p(a), self._p(b))

    def remove(self, path: str) -> None:
        self._call(self.fs.remove, path, self._p(path))

    def figures(self) -> dict[str, Any]:
        return {
            "prog_calls": self.progs,
            "bytes_programmed": self.prog_bytes,
            "blocks_erased": self.erases,
            "bytes_read": self.read_bytes,
            "erase_by_block": Counter(self.erase_by_block),
        }


class CountingOs:
    """Stands in for the ``os`` module inside ``app.outbox``; counts every call."""

    def __init__(self, backend: Any, counts: Counts) -> None:
        self.b, self.counts = backend, counts
        self.log: list[str] | None = None

    def _note(self, what: str) -> None:
        if self.log is not None:
            self.log.append(what)

    def open(self, path: str, mode: str = "r") -> CountingFile:
        name = os.path.basename(path)
        if any(c in mode for c in "wax+"):
            created = not self.b.exists(path)
            self.counts["write_opens"] += 1
            self.counts["files_created"] += created
            self._note(f"{'create' if created else 'open'}({mode}) {name}")
        else:
            self.counts["read_opens"] += 1
        return CountingFile(self.b.open(path, mode), self.counts, self.log, name)

    def stat(self, path: str) -> Any:
        self.counts["stats"] += 1
        return self.b.stat(path)

    def mkdir(self, path: str) -> None:
        self.counts["mkdirs"] += 1
        self._note(f"mkdir {os.path.basename(path)}")
        self.b.mkdir(path)

    def listdir(self, path: str) -> list[str]:
        self.counts["listdirs"] += 1
        names: list[str] = self.b.listdir(path)
        return names

    def rename(self, a: str, b: str) -> None:
        self.counts["renames"] += 1
        self._note(f"rename {os.path.basename(a)} -> {os.path.basename(b)}")
        self.b.rename(a, b)

    def remove(self, path: str) -> None:
        self.counts["removes"] += 1
        self._note(f"remove {os.path.basename(path)}")
        self.b.remove(path)


class Phase:
    """Counters of one stretch of the run."""

    def __init__(self, probe: CountingOs, term: SimTerminal) -> None:
        self.probe, self.term = probe, term
        self.c0 = probe.counts.snapshot()
        self.w0 = term.app.outbox.written
        self.b0 = probe.b.figures()

    def end(self, ratings: int) -> dict[str, Any]:
        c = self.probe.counts.snapshot()
        c.subtract(self.c0)
        b1 = self.probe.b.figures()
        written = c["bytes_written"]
        file_ops = c["write_opens"] + c["renames"] + c["removes"] + c["mkdirs"]
        out: dict[str, Any] = {
            "ratings": ratings,
            "bytes_written": written,
            "bytes_per_rating": round(written / ratings, 2),
            "ratio_to_52": round(written / ratings / SLOT, 3),
            "outbox_written_counter": self.term.app.outbox.written - self.w0,
            "file_ops_per_rating": round(file_ops / ratings, 3),
            "ops": {
                k: c[k]
                for k in (
                    "write_opens",
                    "files_created",
                    "renames",
                    "removes",
                    "mkdirs",
                    "write_calls",
                    "read_opens",
                    "bytes_read",
                    "stats",
                    "listdirs",
                )
            },
            "bytes_read_per_rating": round(c["bytes_read"] / ratings, 1),
        }
        if b1:
            by_block = b1.pop("erase_by_block")
            by_block.subtract(self.b0["erase_by_block"])
            d = {k: b1[k] - self.b0[k] for k in b1}
            out["littlefs"] = {
                **d,
                "blocks_erased_distinct": sum(1 for v in by_block.values() if v > 0),
                "most_erases_of_one_block": max(by_block.values(), default=0),
                "bytes_programmed_per_rating": round(d["bytes_programmed"] / ratings, 1),
                "programmed_ratio_to_52": round(d["bytes_programmed"] / ratings / SLOT, 2),
                "erases_per_rating": round(d["blocks_erased"] / ratings, 4),
                "bytes_erased_per_rating": round(
                    d["blocks_erased"] * LittleFsBackend.BLOCK / ratings, 1
                ),
            }
        return out


# -- the scenarios -------------------------------------------------------------------------------


def drain(term: SimTerminal, deadline: float) -> None:
    app = term.app
    while app.outbox.depth():
        if time.monotonic() > deadline:
            raise SystemExit("firmware_flash: the outbox did not drain in time")
        app.service_buttons()
        app.step(20)


def steady(term: SimTerminal, probe: CountingOs, n: int, deadline: float) -> dict[str, Any]:
    app = term.app
    ph = Phase(probe, term)
    last_log: list[str] = []
    for i in range(n):
        if i == n - 1:
            probe.log = last_log
        if app.press(1 + i % 3) is None:
            raise SystemExit("the outbox refused a rating")
        while app.outbox.depth():
            if time.monotonic() > deadline:
                raise SystemExit("firmware_flash: no ack in time")
            app.step(5)
    probe.log = None
    out = ph.end(n)
    out["ops_of_one_rating"] = last_log
    return out


def backlog(term: SimTerminal, probe: CountingOs, n: int, deadline: float) -> dict[str, Any]:
    app = term.app
    go_offline(term)
    whole = Phase(probe, term)
    store = Phase(probe, term)
    for i in range(n):
        if app.press(1 + i % 3) is None:
            raise SystemExit("the outbox refused a rating")
    stored = store.end(n)
    dr = Phase(probe, term)
    go_online(term)
    wait_online(term)
    drain(term, deadline)
    drained = dr.end(n)
    out = whole.end(n)
    out["store"] = stored
    out["drain"] = drained
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="ratings in each scenario")
    ap.add_argument("--backend", choices=("auto", "host", "littlefs"), default="auto")
    ap.add_argument("--lfs-blocks", type=int, default=512, help="littlefs size in 4 KB blocks")
    ap.add_argument("--timeout", type=float, default=50, help="give up after this many seconds")
    args = ap.parse_args()
    backend_name = args.backend
    if backend_name == "auto":
        try:
            import littlefs  # noqa: F401

            backend_name = "littlefs"
        except ImportError:
            say("littlefs-python is not installed: counting on the host file system only")
            backend_name = "host"
    t_start = time.monotonic()
    deadline = t_start + args.timeout
    saved = (fw_outbox.__dict__.get("open"), fw_outbox.os)
    results: dict[str, Any] = {}
    with office_with_hub() as (office, hub, work):
        say(f"office with hub on 127.0.0.1:{office.port}, outbox on {backend_name}")
        root = str(work / "terminal-0" / "outbox")
        backend: Any = (
            LittleFsBackend(root, args.lfs_blocks)
            if backend_name == "littlefs"
            else HostBackend(root)
        )
        counts = Counts()
        probe = CountingOs(backend, counts)
        fw_outbox.open = probe.open  # module global over the builtin
        fw_outbox.os = probe
        term = None
        try:
            term = new_terminal(office, 0, lockout_s=0, reason_s=0)
            wait_online(term)
            say(f"steady state: {args.n} ratings, each acknowledged before the next")
            results["steady"] = steady(term, probe, args.n, deadline)
            say(f"backlog: {args.n} ratings offline, then drained")
            results["backlog"] = backlog(term, probe, args.n, deadline)
        finally:
            if term is not None:
                term.stop()
            if saved[0] is None:
                fw_outbox.__dict__.pop("open", None)
            else:
                fw_outbox.open = saved[0]
            fw_outbox.os = saved[1]
        st = hub.wait_stored(2 * args.n, 10)
    result: dict[str, Any] = {
        "bench": "firmware_flash",
        "n": args.n,
        "backend": backend_name,
        "record_bytes": SLOT,
        **results,
        "hub_stored": st.get("stored"),
    }
    if backend_name == "littlefs":
        lfs_cfg = {"block_size": LittleFsBackend.BLOCK, "blocks": args.lfs_blocks}
        lfs_cfg.update(read_size=32, prog_size=32, cache_size=128, lookahead=32, block_cycles=100)
        result["littlefs_config"] = lfs_cfg
        # Ratings until the partition's erase budget is spent, if littlefs spreads wear evenly.
        for k in ("steady", "backlog"):
            per = results[k]["littlefs"]["erases_per_rating"]
            results[k]["littlefs"]["wearout_ratings_even_spread"] = (
                int(args.lfs_blocks * PE_CYCLES / per) if per else None
            )
        result["pe_cycles_assumed"] = PE_CYCLES
    result["seconds"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
