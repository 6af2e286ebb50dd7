"""The Warble service's extension points: hooks that other plugins may implement.

The `warble_server`, `warble_worker` and `mastodon_feed` plugins declare them
(`hookspecs = pidaemon_plugins.warble.hookspecs`), so the daemon knows them on
any node that loads one of those.  A plugin implements them like core hooks,
with `from pidaemon import hookimpl`; they are documented in docs/plugins.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from pidaemon import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from pidaemon.daemon import Daemon
    from pidaemon.warble import Builtin


@hookspec
def pidaemon_warble_builtins(node: "Daemon") -> Iterable["Builtin"] | None:
    """Warble built-in functions this plugin provides, as `pidaemon.warble.Builtin`s.

    Collected on a worker for every job it runs.  The `warble_worker` plugin
    adds `LIGHTS` and `PLAYSOUND` this way (as MQTT commands to the lamp and
    the speaker); a sensor plugin could add `TEMPERATURE()`.  `validate` runs
    in the sandbox and must be picklable; an effect built-in's `perform` runs
    in the daemon, and what it returns is the call's value in the program (see
    docs/warble.md).  Synchronous.
    """


@hookspec
def pidaemon_warble_intake(node: "Daemon", submit_post: Callable[[str, str, str], dict[str, Any]]) -> None:
    """The Warble service on this node takes posts from feeds (social networks, chats).

    Fires once on the server, when the `warble_server` plugin has started.
    Keep `submit_post(post_id, user, text) -> dict` and call it (on the event
    loop) for every post that arrives: it finds the `#pi{...}` program in the
    text, queues it and returns the acknowledgement or the rejection.  A
    `post_id` seen before is taken once, so re-reading a timeline is harmless.
    Synchronous: start long-running work with `node.spawn(...)`.
    """


class WarbleHooks:
    """The service's hooks, one typed method each, called through pluggy one plugin at a time."""

    def __init__(self, node: "Daemon"):
        self.node = node

    def builtins(self) -> list["Builtin"]:
        builtins: list[Any] = []
        for call in self.node.hook_runner.each("pidaemon_warble_builtins", node=self.node):
            builtins.extend(call.result or ())
        return builtins

    def intake(self, submit_post: Callable[[str, str, str], dict[str, Any]]) -> None:
        self.node.hook_runner.each("pidaemon_warble_intake", node=self.node, submit_post=submit_post)
