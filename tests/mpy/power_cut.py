"""A flash that loses power: put in place of ``os`` and ``open`` in the firmware's update code
(firmware/app/ota.py, firmware/ota_boot.py), it fails before mutating operation number ``budget``.

The OTA tests sweep ``budget`` from 0 up until an update (or a boot) finishes, so the power is cut
before every filesystem operation in turn. Mutating operations are rename, remove, rmdir, mkdir,
opening a file for writing and each write to it; stat, statvfs, listdir and reads pass through.

Runs under MicroPython and CPython alike: tests/fixtures/scripts.py copies it into the interpreter
that runs a test's script, which imports it as ``power_cut``.
"""

import os

real_open = open


class Cut(Exception):
    """The power failed."""


class Flash:  # stands in for the os module
    def __init__(self, budget):
        self.budget, self.ops = budget, 0  # budget None: the power never fails

    def op(self):
        if self.budget is not None and self.ops >= self.budget:
            raise Cut()
        self.ops += 1

    def rename(self, a, b):
        self.op()
        os.rename(a, b)

    def remove(self, p):
        self.op()
        os.remove(p)

    def rmdir(self, p):
        self.op()
        os.rmdir(p)

    def mkdir(self, p):
        self.op()
        os.mkdir(p)

    def stat(self, p):
        return os.stat(p)

    def statvfs(self, p):
        return os.statvfs(p)

    def listdir(self, p):
        return os.listdir(p)

    def open(self, path, mode="r"):
        if "w" not in mode:
            return real_open(path, mode)
        self.op()
        return Torn(real_open(path, mode), self)


class Torn:  # a file open for writing: a write cut short leaves half its bytes
    def __init__(self, f, flash):
        self.f, self.flash = f, flash

    def write(self, data):
        try:
            self.flash.op()
        except Cut:
            self.f.write(data[: len(data) // 2])
            self.f.close()
            raise
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


def run(budget, modules, fn, *args):
    """Call ``fn(*args)`` with the ``os`` and ``open`` of each of ``modules`` on a Flash with this
    budget, then put the real ones back. Returns (finished, fn's result or None, operations done)."""
    flash = Flash(budget)
    for m in modules:
        m.os, m.open = flash, flash.open
    try:
        return True, fn(*args), flash.ops
    except Cut:
        return False, None, flash.ops
    finally:
        for m in modules:
            m.os, m.open = os, real_open
