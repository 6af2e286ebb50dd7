"""A tiny third-party plugin: one telemetry reading and a capability (the docs' example)."""

from pidaemon import hookimpl
from pidaemon.schema import Number, Section, String


class ExampleSensor:
    config_schema = Section({
        "name": String(default="room_temperature"),
        "offset": Number(default=0.0),
    })

    def __init__(self, node, config):
        self.name = config["name"]
        self.offset = config["offset"]

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {self.name: 21.5 + self.offset}

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["thermometer"]}


class BrokenStartup:
    """Fails in startup, to show that the rest of the daemon keeps running."""

    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_startup(self, node):
        raise RuntimeError("sensor not found on I2C bus 1")
