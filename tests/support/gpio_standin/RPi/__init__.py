"""A stand-in for the RPi package in tests (see GPIO.py): never installed, put on sys.path by a test."""
