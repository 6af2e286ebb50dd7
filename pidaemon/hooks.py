"""Calling plugin hooks through pluggy, one plugin at a time.

pluggy calls an implementation with only the arguments it names, so a
`@hookimpl def pidaemon_telemetry(self)` is as valid as one that takes `node`.
pluggy's own call of a hook stops at the first exception, though, and one
plugin's failure must not stop the others: so each plugin is called through
its own subset caller (`PluginManager.subset_hook_caller`), and what it
returns is awaited afterwards when it is awaitable.

A failure is logged the first time it happens; the same failure again (the
same plugin, hook and message) is counted and summed up in one line at most
every `FAILURE_LOG_INTERVAL` seconds, and `failures(plugin)` tells the node's
`info`.  With `PIDAEMON_TRACE_PLUGINS=1` (or `pidaemon run --trace-plugins`)
every hook call is logged with its plugins, arguments and duration, through
`PluginManager.add_hookcall_monitoring`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pluggy

TRACE_ENVIRONMENT_VARIABLE = "PIDAEMON_TRACE_PLUGINS"
FAILURE_LOG_INTERVAL = 60.0  # seconds between two summaries of a repeated failure
MAX_DISTINCT_FAILURES = 20   # distinct messages remembered per plugin and hook; beyond, only counted


def describe_error(exc: BaseException) -> str:
    """One line for status reports: the exception and where it was raised."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass
class Call:
    """One plugin's part in a hook call: what it returned (awaited), or how it failed."""

    plugin: str
    result: Any = None
    error: BaseException | None = None


@dataclass
class HookFailures:
    """The failures of one plugin in one hook, for the log and the node's `info`."""

    count: int = 0
    last_error: str = ""
    failing: bool = False
    seen: set[str] = field(default_factory=set)   # messages already logged
    unlogged: int = 0                             # repeats since the last log line
    next_summary: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "last_error": self.last_error, "failing": self.failing}


class HookRunner:
    """Calls hooks on one node's plugins: each plugin isolated, failures logged once and counted."""

    def __init__(self, manager: pluggy.PluginManager, log: logging.Logger | logging.LoggerAdapter,
                 on_first_failure: Callable[[str, str], None] | None = None):
        self.manager = manager
        self.log = log
        self.on_first_failure = on_first_failure  # (plugin, hook): a hook started failing
        self._callers: dict[tuple[str, str], pluggy.HookCaller] = {}
        self._failures: dict[str, dict[str, HookFailures]] = {}

    # ------------------------------------------------------------ calling

    def implementers(self, hook: str) -> list[str]:
        """The plugins that implement `hook`, in the order they were registered (configuration order)."""
        caller = getattr(self.manager.hook, hook, None)
        return [] if caller is None else [impl.plugin_name for impl in caller.get_hookimpls()]

    def call(self, hook: str, plugin: str, **kwargs) -> Any:
        """`plugin`'s implementation of `hook`, called through pluggy; its result (maybe awaitable).

        Raises what the implementation raises.
        """
        caller = self._callers.get((hook, plugin))
        if caller is None:
            others = [p for name, p in self.manager.list_name_plugin() if name != plugin]
            caller = self._callers[(hook, plugin)] = self.manager.subset_hook_caller(hook, others)
        results = caller(**kwargs)
        if caller.spec is not None and caller.spec.opts.get("firstresult"):
            return results
        return results[0] if results else None  # pluggy leaves out None results

    def each(self, hook: str, **kwargs) -> list[Call]:
        """Call every implementation in turn, synchronously; failures are reported and skipped."""
        calls = []
        for plugin in self.implementers(hook):
            try:
                calls.append(Call(plugin, self.call(hook, plugin, **kwargs)))
            except Exception as exc:
                self.failed(plugin, hook, exc)
                continue
            self.succeeded(plugin, hook)
        return calls

    async def each_awaited(self, hook: str, *, timeout: float | None = None, report: bool = True,
                           **kwargs) -> list[Call]:
        """Call every implementation in turn, awaiting each one's result (within `timeout` s each).

        With `report=False` failures are returned as `Call.error` for the caller
        to judge (a failed start-up) instead of being logged.
        """
        calls = []
        for plugin in self.implementers(hook):
            call = Call(plugin)
            try:
                call.result = await self.awaited(hook, plugin, self.call(hook, plugin, **kwargs), timeout)
            except Exception as exc:
                call.error = exc
            if call.error is None:
                self.succeeded(plugin, hook)
            elif report:
                self.failed(plugin, hook, call.error)
                continue
            calls.append(call)
        return calls

    async def awaited(self, hook: str, plugin: str, result: Any, timeout: float | None = None) -> Any:
        """`result` itself, or what it resolves to when it is awaitable (a coroutine hook)."""
        if not inspect.isawaitable(result):
            return result
        started = time.perf_counter()
        try:
            if timeout is None:
                return await result
            try:
                return await asyncio.wait_for(result, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"{hook} took longer than {timeout:g} s") from None
        finally:
            if self.tracing:
                self.log.info("trace: %s of plugin %s awaited in %.3f ms", hook, plugin,
                              (time.perf_counter() - started) * 1000)

    def forget(self, plugin: str) -> None:
        """The plugin was unregistered: drop the callers that left it out (they would now include others)."""
        self._callers.clear()

    # ------------------------------------------------------------ failures

    def failed(self, plugin: str, hook: str, exc: BaseException, what: str | None = None) -> None:
        """Report one failure: logged the first time, then counted and summed up at a bounded rate.

        `what` replaces "failed in HOOK" in the log line (e.g. "could not handle a message on TOPIC").
        """
        message = f'plugin "{plugin}" {what or "failed in " + hook}: {describe_error(exc)}'
        record = self._failures.setdefault(plugin, {}).setdefault(hook, HookFailures())
        first = record.count == 0
        record.count += 1
        record.last_error = message
        record.failing = True
        now = time.monotonic()
        if message not in record.seen and len(record.seen) < MAX_DISTINCT_FAILURES:
            record.seen.add(message)
            self.log.error("%s", message)
            record.next_summary = now + FAILURE_LOG_INTERVAL
        else:
            record.unlogged += 1
            if now >= record.next_summary:
                self._summarize(plugin, hook, record)
                record.next_summary = now + FAILURE_LOG_INTERVAL
        if first and self.on_first_failure is not None:
            self.on_first_failure(plugin, hook)

    def succeeded(self, plugin: str, hook: str) -> None:
        record = self._failures.get(plugin, {}).get(hook)
        if record is None or not record.failing:
            return
        record.failing = False
        if record.unlogged:
            self._summarize(plugin, hook, record)
        self.log.info('plugin "%s" works again in %s (%d failures so far)', plugin, hook, record.count)
        record.seen.clear()

    def _summarize(self, plugin: str, hook: str, record: HookFailures) -> None:
        self.log.error('plugin "%s" failed %d more times in %s (last: %s)', plugin, record.unlogged, hook,
                       record.last_error)
        record.unlogged = 0

    def failures(self, plugin: str) -> dict[str, dict[str, Any]]:
        """{hook: {"count", "last_error", "failing"}} for the node's `info` and `status()`."""
        return {hook: record.to_dict() for hook, record in sorted(self._failures.get(plugin, {}).items())}

    # ------------------------------------------------------------ tracing

    tracing = False

    def trace(self) -> None:
        """Log every hook call (plugins, arguments, duration): datasette's DATASETTE_TRACE_PLUGINS."""
        if self.tracing:
            return
        self.tracing = True
        started: list[float] = []

        def before(hook_name: str, hook_impls, kwargs: Mapping[str, Any]) -> None:
            started.append(time.perf_counter())

        def after(outcome, hook_name: str, hook_impls, kwargs: Mapping[str, Any]) -> None:
            duration = (time.perf_counter() - started.pop()) * 1000
            plugins = ", ".join(impl.plugin_name for impl in hook_impls) or "no plugin"
            arguments = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
            failure = outcome.exception
            self.log.info("trace: %s(%s) -> %s in %.3f ms%s", hook_name, arguments, plugins, duration,
                          f" raised {type(failure).__name__}" if failure else "")

        self.manager.add_hookcall_monitoring(before, after)


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(TRACE_ENVIRONMENT_VARIABLE, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
