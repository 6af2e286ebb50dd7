"""The plugin API as pluggy promises it: hook arguments by name, isolated failures, tracing,
typed settings, lookup by type, named events, hooks that a plugin declares itself."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pidaemon import hookimpl, hookspec
from pidaemon.bus import Subscription
from pidaemon.events import EventError
from pidaemon.hooks import FAILURE_LOG_INTERVAL
from pidaemon.schema import ListOf, Number, String, settings
from tests.support.nodes import make_daemon
from tests.support.plugins import catalog_with
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- arguments by name

class TakesNothing:
    def __init__(self, node, config):
        self.messages = []

    @hookimpl
    def pidaemon_telemetry(self):
        return {"nothing": 1}

    @hookimpl
    def pidaemon_subscriptions(self):
        return ["picluster/args/#"]

    @hookimpl
    def pidaemon_message(self, message):
        self.messages.append(message.topic)


class TakesNode:
    def __init__(self, node, config):
        self.messages = []

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"node": node.id}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [node.topic("args", "#")]

    @hookimpl
    def pidaemon_message(self, node):
        self.messages.append(node.id)


class TakesAll:
    def __init__(self, node, config):
        self.messages = []

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"all": True}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("args", "#"))]

    @hookimpl
    async def pidaemon_message(self, message, node):  # any order, and a coroutine
        self.messages.append((node.id, message.payload))


def test_an_implementation_takes_any_subset_of_the_hook_arguments(broker, observer):
    catalog = catalog_with(nothing=TakesNothing, node_only=TakesNode, everything=TakesAll)

    async def scenario():
        node = make_daemon("args", broker.url, catalog=catalog, plugins={"nothing": {}, "node_only": {},
                                                                          "everything": {}})
        await node.start()
        try:
            assert await node.bus.wait_connected(10)
            readings = node.collect_telemetry()
            await asyncio.to_thread(observer.publish, "picluster/args/x", b"hi")
            plugins = [node.plugin(name) for name in ("nothing", "node_only", "everything")]
            await wait_until(lambda: all(p.messages for p in plugins), 10, what="every plugin got the message")
            return readings, [p.messages for p in plugins], node.status()["failed_plugins"]
        finally:
            await node.shutdown()

    readings, messages, failed = asyncio.run(scenario())
    assert readings == {"nothing": 1, "node": "args", "all": True}
    assert messages == [["picluster/args/x"], ["args"], [("args", b"hi")]]
    assert failed == []


# ---------------------------------------------------------------- failures: once, then counted

class FailsEveryTime:
    def __init__(self, node, config):
        self.calls = 0
        self.broken = True

    @hookimpl
    def pidaemon_telemetry(self):
        self.calls += 1
        if self.broken:
            raise OSError("sensor unplugged")
        return {"back": True}


lines, first = inspect.getsourcelines(FailsEveryTime.pidaemon_telemetry)
RAISE_LINE = first + next(i for i, line in enumerate(lines) if "raise OSError" in line)


def test_a_hook_failing_every_interval_is_logged_once_then_counted(monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr("pidaemon.hooks.time.monotonic", lambda: clock[0])
    node = make_daemon("flaky", "mqtt://127.0.0.1:1", catalog=catalog_with(flaky=FailsEveryTime),
                       plugins={"flaky": {}})
    node.load_plugins()
    caplog.set_level(logging.INFO, logger="pidaemon.node")
    for _ in range(5):
        assert node.collect_telemetry() == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    where = f"test_plugin_api.py:{RAISE_LINE}"
    assert errors == [f'[flaky] plugin "flaky" failed in pidaemon_telemetry: OSError: sensor unplugged (at {where})']
    info = node.info()["plugins"]["flaky"]
    assert info["hook_errors"]["pidaemon_telemetry"]["count"] == 5
    assert info["hook_errors"]["pidaemon_telemetry"]["failing"] is True

    clock[0] += FAILURE_LOG_INTERVAL + 1  # a minute later: one line sums up the repeats
    node.collect_telemetry()
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR][1:]
    assert summary == [f'[flaky] plugin "flaky" failed 5 more times in pidaemon_telemetry (last: plugin "flaky" '
                       f'failed in pidaemon_telemetry: OSError: sensor unplugged (at {where}))']

    node.plugin("flaky").broken = False
    assert node.collect_telemetry() == {"back": True}
    assert any('plugin "flaky" works again in pidaemon_telemetry (6 failures so far)' in r.getMessage()
               for r in caplog.records)
    assert node.info()["plugins"]["flaky"]["hook_errors"]["pidaemon_telemetry"]["failing"] is False


# ---------------------------------------------------------------- tracing

def test_tracing_logs_every_hook_call_with_plugin_arguments_and_duration(monkeypatch, caplog):
    monkeypatch.setenv("PIDAEMON_TRACE_PLUGINS", "1")
    node = make_daemon("traced", "mqtt://127.0.0.1:1", catalog=catalog_with(node_only=TakesNode),
                       plugins={"node_only": {}})
    node.load_plugins()
    caplog.set_level(logging.INFO, logger="pidaemon.node")
    node.collect_telemetry()
    traces = [r.getMessage() for r in caplog.records if "trace:" in r.getMessage()]
    assert len(traces) == 1
    assert traces[0].startswith("[traced] trace: pidaemon_telemetry(node=<Daemon traced (worker)>) -> node_only in ")
    assert traces[0].endswith(" ms")


def test_no_tracing_unless_asked(monkeypatch, caplog):
    monkeypatch.delenv("PIDAEMON_TRACE_PLUGINS", raising=False)
    node = make_daemon("quiet", "mqtt://127.0.0.1:1", catalog=catalog_with(node_only=TakesNode),
                       plugins={"node_only": {}})
    node.load_plugins()
    caplog.set_level(logging.INFO, logger="pidaemon.node")
    node.collect_telemetry()
    assert not [r for r in caplog.records if "trace:" in r.getMessage()]


def test_trace_plugins_flag_of_pidaemon_run(tmp_path, broker):
    from tests.support.nodes import (
        node_config,
        start_node_process,
        wait_for_log,
        write_config,
    )

    config = write_config(tmp_path / "t.yaml", node_config("flagged", broker.url, plugins={"ping": {}}))
    process = start_node_process(config, "--trace-plugins")
    try:
        wait_for_log(process, "trace: pidaemon_subscriptions(node=<Daemon flagged (worker)>) -> ping in ")
    finally:
        process.terminate()
        process.wait(10)


# ---------------------------------------------------------------- typed settings

@settings
class Limits:
    low: float = Number(default=0.5, doc="lower bound")
    names: tuple[str, ...] = ListOf(String(), default=["a"])


@settings
class WithNested:
    label: str = String()
    limits: Limits


class Configured:
    config_schema = WithNested

    def __init__(self, node, config: WithNested):
        self.config = config


def test_a_plugin_receives_its_typed_read_only_settings():
    node = make_daemon("typed", "mqtt://127.0.0.1:1", catalog=catalog_with(typed=Configured),
                       plugins={"typed": {"label": "x", "limits": {"names": ["b", "c"]}}})
    node.load_plugins()
    config = node.plugin("typed").config
    assert config == WithNested(label="x", limits=Limits(low=0.5, names=("b", "c")))
    with pytest.raises(AttributeError):
        config.label = "y"  # frozen
    assert node.status()["failed_plugins"] == []


def test_typed_settings_errors_name_the_file_line_and_path(tmp_path):
    from pidaemon.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("node: {role: worker}\nplugins:\n  typed:\n    limits:\n      low: fast\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={}, plugin_schema=catalog_with(typed=Configured).schema)
    assert error.value.messages == [
        f"{path}:3: plugins.typed.label: missing; expected a string",
        f'{path}:5: plugins.typed.limits.low: expected a number, got "fast"',
    ]


# ---------------------------------------------------------------- lookup by type, events

CHANGED = "source:changed"


class Source:
    def __init__(self, node, config):
        self.node = node
        node.events.declare(CHANGED, "something changed: value (int)")

    def change(self, value):
        self.node.events.emit(CHANGED, value=value)


class Listener:
    def __init__(self, node, config):
        self.heard = []
        self.source = None

    @hookimpl
    def pidaemon_configure(self, node):
        self.source = node.lookup(Source)
        node.events.on(CHANGED, lambda value: self.heard.append(value))
        node.events.on(CHANGED, self.explode)
        node.events.on(CHANGED, lambda value: self.heard.append(-value))

    def explode(self, value):
        raise RuntimeError("listener bug")


def test_plugins_find_each_other_by_type_and_talk_by_events(caplog):
    async def scenario():
        node = make_daemon("ev", "mqtt://127.0.0.1:1", catalog=catalog_with(listener=Listener, source=Source),
                           plugins={"listener": {}, "source": {}})  # the listener comes first
        node.load_plugins()
        for call in await node.hooks.configure():
            assert call.error is None
        node.plugin("source").change(7)
        return node

    node = asyncio.run(scenario())
    listener = node.plugin("listener")
    assert listener.source is node.plugin("source")
    assert listener.heard == [7, -7]  # a failing handler does not stop the others
    assert any('a handler of event "source:changed"' in r.getMessage() and "listener bug" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(EventError, match="never declared"):
        node.events.emit("source:chagned", value=1)


def test_a_missing_partner_fails_the_plugin_naming_what_to_add(broker):
    async def scenario():
        catalog = catalog_with(listener=Listener, source=Source)
        node = make_daemon("alone", broker.url, catalog=catalog, plugins={"listener": {}})
        await node.start()
        await node.shutdown()
        return node.status()["plugins"]["listener"]

    state = asyncio.run(scenario())
    assert state["state"] == "failed"
    assert 'needs the "source" plugin on the same node' in state["error"]


def test_a_handler_for_an_event_nobody_declares_is_reported(broker, caplog):
    class Misheard:
        def __init__(self, node, config):
            node.events.on("source:chagned", print)

    async def scenario():
        node = make_daemon("typo", broker.url, catalog=catalog_with(source=Source, misheard=Misheard),
                           plugins={"source": {}, "misheard": {}})
        await node.start()
        await node.shutdown()

    asyncio.run(scenario())
    assert any('event "source:chagned" has handlers but no plugin of this node declares it; '
               'did you mean "source:changed"?' in r.getMessage() for r in caplog.records)


def test_an_object_lent_by_the_embedding_program_is_found_by_type():
    class Shared:
        pass

    class Borrower:
        def __init__(self, node, config):
            self.shared = node.lookup(Shared)

    from pidaemon.config import config_from_mapping
    from pidaemon.daemon import Daemon
    from tests.support.nodes import FAKE_FACTS, node_config

    catalog = catalog_with(borrower=Borrower)
    lent = Shared()
    config = config_from_mapping(node_config("b", "mqtt://127.0.0.1:1", plugins={"borrower": {}}),
                                 plugin_schema=catalog.schema)
    node = Daemon(config, catalog=catalog, facts=dict(FAKE_FACTS), lend=[lent])
    node.load_plugins()
    assert node.plugin("borrower").shared is lent


# ---------------------------------------------------------------- hooks a plugin declares

class Offers:
    """Declares a hook of its own and calls it on every plugin."""

    class hookspecs:
        @staticmethod
        @hookspec
        def pidaemon_test_greeting(node, name):
            """Say hello to `name`; return a string. Collected by the `offers` plugin when asked."""

    def __init__(self, node, config):
        self.node = node

    def greetings(self, name):
        return [call.result for call in self.node.hook_runner.each("pidaemon_test_greeting", node=self.node,
                                                                   name=name)]


class Greets:
    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_test_greeting(self, name):
        return f"hello {name}"


class MisspellsTheOfferedHook:
    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_test_greting(self, name):
        return "never"


def test_a_plugin_declares_hooks_of_its_own_for_the_others():
    catalog = catalog_with(greets=Greets, offers=Offers, typo=MisspellsTheOfferedHook)
    node = make_daemon("offer", "mqtt://127.0.0.1:1", catalog=catalog,
                       plugins={"greets": {}, "offers": {}, "typo": {}})
    node.load_plugins()
    assert node.plugin("offers").greetings("ada") == ["hello ada"]
    assert node.status()["failed_plugins"] == ["typo"]
    assert ('plugin "typo" implements unknown hook "pidaemon_test_greting"; did you mean "pidaemon_test_greeting"?'
            == node.status()["plugins"]["typo"]["error"])


# ---------------------------------------------------------------- the core is the core

def test_importing_the_daemon_imports_nothing_of_warble():
    code = "import sys, pidaemon.daemon; print(sorted(m for m in sys.modules if 'warble' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_hook_is_called_around_pluggy():
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "pidaemon").rglob("*.py")
                 if "impl.function(" in path.read_text()]
    assert offenders == []


def test_a_supervised_task_is_restarted_after_a_crash_and_counted(monkeypatch, caplog):
    monkeypatch.setattr("pidaemon.daemon.RESTART_DELAY_MIN", 0.01)
    runs = []

    async def flaky_loop():
        runs.append(len(runs))
        if len(runs) < 3:
            raise TypeError("a forged record")
        await asyncio.sleep(3600)

    async def scenario():
        node = make_daemon("sup", "mqtt://127.0.0.1:1", plugins={})
        node.supervise(flaky_loop, "test:loop")
        await wait_until(lambda: len(runs) == 3, 10, what="third run")
        readings = node.collect_telemetry()
        for task in list(node._tasks):
            task.cancel()
        return readings

    readings = asyncio.run(scenario())
    assert readings["task_restarts"] == {"test:loop": 2}
    crashes = [r.getMessage() for r in caplog.records if "task test:loop crashed" in r.getMessage()]
    assert len(crashes) == 2 and "TypeError: a forged record" in crashes[0]
