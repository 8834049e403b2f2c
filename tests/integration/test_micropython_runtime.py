"""The MicroPython harness (tests/mpy/run.mjs + tests/fixtures/micropython.py) really runs
MicroPython, reports failures, and offers what the firmware needs: a writable filesystem with the
calls the outbox uses, the firmware package on sys.path, hashlib."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_it_is_micropython_1_27(micropython) -> None:
    out = micropython.run(
        """
        import sys
        print(sys.implementation.name)
        print(sys.implementation.version[:2])
        """
    )
    assert out.splitlines() == ["micropython", "(1, 27)"]


def test_sha256_known_vector(micropython) -> None:
    out = micropython.run(
        """
        import hashlib, binascii
        print(binascii.hexlify(hashlib.sha256(b"abc").digest()).decode())
        """
    )
    assert out.strip() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_exception_makes_run_raise_with_the_traceback(micropython) -> None:
    with pytest.raises(AssertionError) as info:
        micropython.run(
            """
            print("before")
            def f():
                raise ValueError("boom from micropython")
            f()
            """
        )
    msg = str(info.value)
    assert "before" in msg
    assert "ValueError: boom from micropython" in msg
    assert "Traceback" in msg


def test_syntax_error_and_exit_status(micropython) -> None:
    res = micropython.run_raw("x = (\n")
    assert res.returncode == 1 and "SyntaxError" in res.stderr
    assert micropython.run_raw("import sys\nsys.exit(3)").returncode == 3
    assert micropython.run_raw("raise SystemExit").returncode == 0


def test_endless_loop_times_out_instead_of_hanging(micropython) -> None:
    with pytest.raises(AssertionError, match="timed out"):
        micropython.run("while True:\n    pass\n", timeout=1.5)


def test_top_level_await_and_deadlock(micropython) -> None:
    out = micropython.run(
        """
        import asyncio
        async def main():
            await asyncio.sleep_ms(5)
            return 42
        print(await main())
        """
    )
    assert out.strip() == "42"
    res = micropython.run_raw("import asyncio\nawait asyncio.Event().wait()\n")
    assert res.returncode != 0 and "deadlock" in res.stderr


def test_output_without_final_newline_is_kept(micropython) -> None:
    assert micropython.run('print("a")\nprint("tail", end="")') == "a\ntail"


def test_scratch_dir_supports_the_outbox_file_calls(micropython) -> None:
    out = micropython.run(
        """
        import os
        print(os.getcwd(), os.listdir())
        os.mkdir("outbox")
        for chunk in (b"abc", b"defg"):
            f = open("outbox/seg-1", "ab")
            f.write(chunk)
            f.close()
        with open("outbox/seg-1", "rb") as f:
            print(f.read())
        print(os.stat("outbox/seg-1")[6])
        os.rename("outbox/seg-1", "outbox/seg-2")
        print(os.listdir("outbox"))
        os.remove("outbox/seg-2")
        print(os.listdir("outbox"))
        try:
            os.stat("outbox/seg-2")
        except OSError:
            print("gone")
        """
    )
    assert out.splitlines() == [
        "/scratch []",
        "b'abcdefg'",
        "7",
        "['seg-2']",
        "[]",
        "gone",
    ]


def test_scratch_dir_is_fresh_for_every_run(micropython) -> None:
    micropython.run("open('left-over', 'wb').write(b'x')")
    assert micropython.run("import os\nprint(os.listdir())").strip() == "[]"


def test_firmware_package_imports(micropython) -> None:
    out = micropython.run(
        """
        import sys, app
        print(sys.path[0])
        print(app.__name__)
        """
    )
    assert out.splitlines() == ["/firmware", "app"]


def test_module_helper(micropython) -> None:
    mods = micropython.modules("hashlib", "json", "struct", "socket", "machine", "app")
    assert mods == {
        "hashlib": True,
        "json": True,
        "struct": True,
        "socket": False,
        "machine": False,
        "app": True,
    }
    assert micropython.has_module("binascii")
