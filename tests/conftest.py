from pathlib import Path

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


CHECKOUT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session):
    session.config.checkout_before = _untracked_state()


def pytest_sessionfinish(session, exitstatus):
    """Tests write only into temporary directories: a node's state left in the checkout fails the run."""
    left = sorted(_untracked_state() - session.config.checkout_before)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\ntests left state in the checkout: {', '.join(left)}")


def _untracked_state() -> set[str]:
    return {p.name for p in CHECKOUT.iterdir() if p.name.startswith(".pidaemon") or p.suffix == ".sqlite3"}
