"""The reference terminal's hardware: the pinout (the single source of truth for the pins), its ESP32
rule check, and the generators of ``firmware/app/pins.py`` and the wiring diagram."""
