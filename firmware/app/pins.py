# The reference board's pins (ESP32 DevKitC-class). Generated from hardware/pinout: edit that file,
# not this one. Buttons sit on RTC GPIOs, wired active-high with pull-downs, so battery mode can wake
# on any of them through ext1. Level 1 (most satisfied) is the leftmost button.
BUTTON_PINS = (32, 33, 25, 26, 27)
LED_PINS = (16, 17, 18, 19, 21)
BUZZER_PIN = 23
VSUPPLY_ADC_PIN = 34  # supply voltage through a 100k/100k divider (input-only pin, ADC1)
USB_SENSE_PIN = 35  # high while USB/mains power is present (input-only pin)
VSUPPLY_DIVIDER = 2.0
