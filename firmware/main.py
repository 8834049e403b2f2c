# Fixed entry point (written over USB, never over the air): the application itself is app/, which
# an update replaces. If it fails to import or crashes, print why, leave 10 s for a technician's
# Ctrl-C (the REPL), then reset: a failing new version counts as a failed boot and ota_boot.py
# rolls it back after 3 tries; a failing version outside a trial ends in safe mode.
import sys
import time

try:
    from app import start

    start.run("/")
except KeyboardInterrupt:
    raise
except BaseException as e:
    sys.print_exception(e)
    print("application failed: resetting in 10 s (Ctrl-C for the REPL)")
    time.sleep(10)
    import machine

    machine.reset()
