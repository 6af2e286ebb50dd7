"""Named events between the plugins of one node (Moonraker's `register_event_handler`).

A plugin that has news declares its event once and emits it; any plugin of the
same node may listen, without reaching into the emitter's attributes:

    # the registry plugin
    node.events.declare(NODE_STATE, "a node's health state changed: record, old_state")
    node.events.emit(NODE_STATE, record=rec, old_state="online")

    # the Warble server
    node.events.on(NODE_STATE, self._node_changed)     # called as _node_changed(record=..., old_state=...)

Names are namespaced, `plugin:event`.  Handlers run on the event loop, in the
order they were added; one that raises is logged with the event's name and
never stops the others nor the emitter; a coroutine handler runs as its own
task.  `on` may come before the emitter has declared the event (plugins are
created in configuration order); `undeclared()` lists the events listened to
that nobody declared, which the daemon reports after start-up, with a "did you
mean".
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from typing import Any, Awaitable, Callable

from .hooks import describe_error

EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*")

Handler = Callable[..., Any]


class EventError(ValueError):
    """An event name that is malformed, emitted without being declared, or declared twice."""


class Events:
    def __init__(self, log: logging.Logger | logging.LoggerAdapter,
                 spawn: Callable[[Awaitable, str], Any] | None = None):
        self.log = log
        self.spawn = spawn
        self.declared: dict[str, str] = {}          # name: what it means and carries
        self.handlers: dict[str, list[Handler]] = {}

    def declare(self, name: str, doc: str) -> None:
        """Announce an event this plugin emits; `doc` says when and with which keyword arguments."""
        _check_name(name)
        if name in self.declared:
            raise EventError(f'event "{name}" is declared twice')
        self.declared[name] = doc

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(**payload)` on every `emit(name, ...)`; returns a function that removes it."""
        _check_name(name)
        handlers = self.handlers.setdefault(name, [])
        handlers.append(handler)
        return lambda: handlers.remove(handler) if handler in handlers else None

    def emit(self, event: str, /, **payload: Any) -> None:
        """Call every handler of `event` with `payload` as keyword arguments."""
        if event not in self.declared:
            raise EventError(f'event "{event}" is emitted but was never declared')
        for handler in list(self.handlers.get(event, ())):
            try:
                result = handler(**payload)
                if inspect.isawaitable(result) and self.spawn is not None:
                    self.spawn(self._await(event, result), f"event:{event}")
            except Exception as exc:
                self._failed(event, handler, exc)

    async def _await(self, name: str, awaitable: Awaitable) -> None:
        try:
            await awaitable
        except Exception as exc:
            self._failed(name, awaitable, exc)

    def _failed(self, name: str, handler: Any, exc: Exception) -> None:
        who = getattr(handler, "__qualname__", None) or repr(handler)
        self.log.error('a handler of event "%s" (%s) failed: %s', name, who, describe_error(exc))

    def undeclared(self) -> list[str]:
        """One line per event that has handlers but no emitter, with the closest declared name."""
        lines = []
        for name in sorted(set(self.handlers) - set(self.declared)):
            close = difflib.get_close_matches(name, list(self.declared), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            lines.append(f'event "{name}" has handlers but no plugin of this node declares it{hint}')
        return lines

    def clear(self) -> None:
        self.handlers.clear()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise EventError(f"event name {name!r} must look like plugin:event (lower case, digits, _)")
