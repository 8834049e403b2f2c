# Thin entry point on the ESP32: load the configuration, build the board, run the application.
from app import config
from app.app import App
from app.hal import Board


def run():
    try:
        cfg = config.load("/config.json")
    except config.ConfigError as e:
        print("not provisioned:", e)
        board = Board()
        while True:  # a technician can still reach the REPL and provision it
            board.feedback("not_provisioned", 0)
            board.sleep_ms(5000)
    board = Board(max(cfg["scale"], 4) if cfg["reason_s"] else cfg["scale"])
    board.start_watchdog()
    board.connect_wifi(cfg["wifi_ssid"], cfg["wifi_password"])
    app = App(cfg, board)
    synced = False
    while True:
        app.service_buttons()
        if not synced and board.network_up():
            board.sync_ntp()
            synced = True
        app.step(20)


run()
