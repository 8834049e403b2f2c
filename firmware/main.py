# Thin entry point on the ESP32: load the configuration, build the board, run the application.
from app import config
from app.app import App
from app.hal import Board


def run():
    cfg = config.load("/config.json")
    board = Board(cfg["scale"])
    board.start_watchdog()
    board.connect_wifi(cfg["wifi_ssid"], cfg["wifi_password"])
    app = App(cfg, board)
    synced = False
    while True:
        for level in board.read_presses():
            app.press(level)
        if not synced and board.network_up():
            board.sync_ntp()
            synced = True
        app.step(20)


run()
