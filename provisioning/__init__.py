"""Technician tooling: build, flash, provision and simulate SIPAS terminals."""
