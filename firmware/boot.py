# Runs before main.py. It must always return, whatever happens, so the REPL and the application
# stay reachable for a technician. Fixed code (written over USB, never over the air): ota_boot.py
# swaps in a staged update, counts a new version's trial boots and rolls it back, and counts
# failed boots for safe mode.
try:
    import gc

    import ota_boot

    _ota = ota_boot.boot("/")
    print("ota:", _ota)
    if _ota["trial"]:
        # A new version on trial: reset in 10 minutes unless it has confirmed by then (a version
        # that hangs without crashing would otherwise never be rolled back).
        import machine

        def _trial_over(_t):
            if ota_boot.in_trial("/"):
                machine.reset()

        _trial_timer = machine.Timer(0)
        _trial_timer.init(mode=machine.Timer.ONE_SHOT, period=600000, callback=_trial_over)
    gc.collect()
except Exception as e:
    try:
        print("boot:", e)
    except Exception:
        pass
