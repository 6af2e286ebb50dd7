"""A third-party plugin distribution as docs/plugins.md teaches it: a sensor, and an alarm that watches it."""

from pidaemon import hookimpl
from pidaemon.schema import Number, String, settings
from pidaemon.warble import Builtin

HIGH_READING = "example_sensor:high"  # the event ExampleSensor emits: name, value


@settings
class SensorSettings:
    name: str = String(default="room_temperature", doc="the reading's name in telemetry")
    offset: float = Number(default=0.0, doc="calibration, added to every reading")
    high: float = Number(default=30.0, doc="a reading above this emits example_sensor:high")


class ExampleSensor:
    config_schema = SensorSettings

    def __init__(self, node, config: SensorSettings):
        self.node = node
        self.config = config
        node.events.declare(HIGH_READING, "a reading went above `high`: name (str), value (float)")

    def read(self) -> float:
        return 21.5 + self.config.offset  # a real sensor reads its hardware here

    @hookimpl
    def pidaemon_telemetry(self):  # a hook implementation takes only the arguments it needs
        value = self.read()
        if value > self.config.high:
            self.node.events.emit(HIGH_READING, name=self.config.name, value=value)
        return {self.config.name: value}

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["thermometer"]}

    @hookimpl
    def pidaemon_warble_builtins(self):
        # An effect built-in runs in the daemon, which holds the sensor, not in the program's sandbox.
        doc = "ROOM_TEMPERATURE(): the room's temperature in °C. PRINT(ROOM_TEMPERATURE())"
        return [Builtin("ROOM_TEMPERATURE", 0, 0, doc, perform=lambda args: self.read(), effect=True)]


@settings
class AlarmSettings:
    topic: str = String(default="alarms", doc="where alarms go, under the prefix: <topic>/<node id>")


class ExampleAlarm:
    """Publishes an alarm when the sensor of the same node reads high."""

    config_schema = AlarmSettings

    def __init__(self, node, config: AlarmSettings):
        self.node = node
        self.config = config
        self.sensor: ExampleSensor | None = None

    @hookimpl
    def pidaemon_configure(self, node):
        self.sensor = node.lookup(ExampleSensor)  # no sensor on this node: this plugin fails, saying so
        node.events.on(HIGH_READING, self.on_high_reading)

    def on_high_reading(self, name: str, value: float) -> None:
        alarm = {"reading": name, "value": value, "limit": self.sensor.config.high}
        self.node.publish(self.node.topic(self.config.topic, self.node.id), alarm, qos=1)


class BrokenStartup:
    """Fails in startup, to show that the rest of the daemon keeps running."""

    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_startup(self, node):
        raise RuntimeError("sensor not found on I2C bus 1")
