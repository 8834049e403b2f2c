pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.mosquitto",
    "tests.fixtures.micropython",
    "tests.fixtures.hub",
    "tests.fixtures.fake_esp32",
    "tests.fixtures.browser",
]
