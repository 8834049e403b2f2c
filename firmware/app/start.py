# The application's start (updatable, in app/): load the configuration, build the board, run the
# main loop. main.py (fixed) calls run(); if this raises, main.py resets the terminal, which counts
# as a failed boot (ota_boot.py rolls a new version back, or the terminal ends in safe mode).
from app import config
from app.app import App
from app.power import Power

try:
    import ota_boot  # fixed boot code at the filesystem root
except ImportError:
    ota_boot = None


def run(root="/", make_board=None, each=None):
    # root: the flash ("/" on the device, a directory in the simulator). make_board(levels): the
    # board (app/hal.py's on the device). each(app): called every loop turn (the simulator's hook).
    if make_board is None:
        from app.hal import Board as make_board
    base = root.rstrip("/")
    safe = ota_boot.status(root)["safe_mode"] if ota_boot else False
    try:
        cfg = config.load(base + "/config.json")
    except config.ConfigError as e:
        print("not provisioned:", e)
        board = make_board(3)
        while True:  # a technician can still reach the REPL and provision it
            board.feedback("not_provisioned", 0)
            board.sleep_ms(5000)
    if safe:
        print("safe mode: the last boots failed")
    reasons = cfg["reason_s"] and not safe  # the reason step needs a fourth button on 3 levels
    board = make_board(max(cfg["scale"], 4) if reasons else cfg["scale"])
    board.start_watchdog()
    app = App(cfg, board, config_path=base + "/config.json", root=root, safe_mode=safe)
    # Battery mode (app/power.py): count the press that woke it, sleep again when done. Safe mode
    # stays awake, for the technician and the update.
    power = Power(dict(cfg, power_mode="mains") if safe else cfg, board)
    power.start(app)
    while True:
        app.service_buttons()
        app.step(20)
        if power.step(app):
            return  # deep sleep: never reached on the device; on the host the "boot" ends here
        if each:
            each(app)
