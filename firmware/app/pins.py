# GENERATED from hardware/pinout.toml by hardware/gen_pins.py: do not edit. Edit the pinout,
# then run `python -m hardware.gen_pins` (it checks the ESP32 pin rules before writing).
# Board: ESP32, ESP32-WROOM-32E. Buttons are on RTC GPIOs, active-high with
# external 10k pull-downs, so battery mode can wake on any of them through ext1.
# Level 1 (most satisfied) is the leftmost button.
BUTTON_PINS = (32, 33, 25, 26, 27)
LED_PINS = (16, 17, 18, 19, 21)
BUZZER_PIN = 23
VSUPPLY_ADC_PIN = 34  # supply voltage through a 100k/100k divider (ADC1, 11 dB)
USB_SENSE_PIN = 35  # high while USB/mains power is present
VSUPPLY_DIVIDER = 2.0
