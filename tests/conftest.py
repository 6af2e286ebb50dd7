import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.observer import Observer


@pytest.fixture
def broker(tmp_path):
    """A mosquitto of our own on a free port (the machine's own broker is left alone)."""
    instance = Mosquitto(tmp_path / "broker").start()
    yield instance
    instance.stop()


@pytest.fixture
def persistent_broker(tmp_path):
    """A mosquitto that saves sessions and queued messages across its restarts."""
    instance = Mosquitto(tmp_path / "broker", persistence=True).start()
    yield instance
    instance.stop()


@pytest.fixture
def observer(broker):
    watcher = Observer(broker.port)
    yield watcher
    watcher.close()
