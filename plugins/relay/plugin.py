"""The relay plugin: solenoids that press the server's reset and power buttons, on command.

Commands (JSON, QoS 1, never retained: a retained one is refused, since it
would press again at every start):

- `<prefix>/relays/press` `{"relay": "reset", "duration": 1.0}`: a button
  relay energised for `duration` s (default: its `default_press`), refused
  over its `max_press`, within its `min_interval`, or while it is pressed;
- `<prefix>/relays/set` `{"relay": "power", "state": "on" | "off"}`: a
  relay configured as a switch.

Published: `<prefix>/relays/state` (retained, on every change and
connection), `<prefix>/relays/pressed` for every press with its measured
duration, `<prefix>/relays/refused` with the reason for every refusal.

Every relay is set idle when the plugin is created (before the other
plugins are configured and the node subscribes to anything: a relay a
killed daemon left energised is released first; if a `pidaemon relay press`
holds the relays then, once it is done, in `pidaemon_configure`), when a
press outlives its duration (the board's watchdog), and at shutdown.

`pidaemon relay press` on the node needs no broker: it drives the board
itself when no daemon runs, or asks this plugin through a local socket
(`pidaemon_plugins.relay.local`).

The board's calls run in a worker thread (`asyncio.to_thread`): a serial
board answers within its timeout, not at once, and the event loop never
waits on hardware.  A backend on a board (`arduino`) adds its presence and
version to the node's `info` and its connection to the telemetry, and tells
the plugin when the board set every relay idle by itself (it reconnected or
restarted): the state is published again.
"""

from __future__ import annotations

import asyncio

from pidaemon import hookimpl
from pidaemon.bus import RETAINED_COMMAND, Message, Subscription

from .board import Press, Refused, RelayBoard, RelaysBusy
from .local import LocalControl
from .commands import echo, read_press, read_set, requester
from .settings import RelayPluginSettings


class RelayPlugin:
    config_schema = RelayPluginSettings

    def __init__(self, node, config: RelayPluginSettings):
        self.node = node
        self.config = config
        self.board = RelayBoard(config, node.state_dir, node.log)
        self.board.backend.on_idle_forced = self._hardware_idle
        self.board.backend.on_status_changed = self._hardware_status
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:   # created outside a running daemon: the hardware's news is not published
            self.loop = None
        self.local = LocalControl(self, node.state_dir)
        self.pressed: list[dict] = []   # what was published on relays/pressed (for tools and tests)
        self.refused: list[dict] = []
        try:
            # First thing, before the other plugins are configured and the node subscribes: every
            # relay idle (one left energised by a killed daemon included).
            self.board.open()
        except RelaysBusy:
            pass   # a `pidaemon relay press` under way: waited for in pidaemon_configure

    @property
    def _longest_press(self) -> float:
        return max((relay.max_press for relay in self.board.relays.values()), default=0.0)

    @hookimpl
    async def pidaemon_configure(self, node):
        if not self.board.is_open:
            # A `pidaemon relay press` under way holds the relays for at most its max_press.
            await asyncio.to_thread(self.board.open, self._longest_press + 2)

    @hookimpl
    async def pidaemon_startup(self, node):
        await self.local.start()

    @hookimpl
    async def pidaemon_shutdown(self, node):
        await asyncio.to_thread(self.board.close)
        self._publish_state()
        await self.local.stop()

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["relay"],
                "relays": [{"name": name, "mode": relay.mode} for name, relay in self.board.relays.items()],
                **self.board.backend.info()}

    @hookimpl
    def pidaemon_telemetry(self):
        return self.board.backend.telemetry()

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("relays", "press"), retain_as_published=True),
                Subscription(node.topic("relays", "set"), retain_as_published=True)]

    @hookimpl
    def pidaemon_connected(self, node):
        self._publish_state()

    @hookimpl
    async def pidaemon_message(self, node, message: Message):
        if message.retain and not message.payload:
            return   # a retained command being cleared: nothing to do
        try:
            if message.retain:
                raise Refused(RETAINED_COMMAND)
            if message.topic == node.topic("relays", "press"):
                request = read_press(message.payload)
                await self.press(request.relay, request.duration, request.by)
            else:
                switch = read_set(message.payload)
                if await asyncio.to_thread(self.board.set_switch, switch.relay, switch.on, switch.by):
                    self._publish_state()
        except Refused as refusal:
            self._refuse(message, str(refusal))

    async def press(self, relay: str, duration: float | None, by: str) -> dict:
        """Press `relay` (raise Refused saying why); return the press as published, once it has ended."""
        return await asyncio.shield(await self.start_press(relay, duration, by))   # a caller giving up: no effect

    async def start_press(self, relay: str, duration: float | None, by: str) -> asyncio.Task:
        """Begin a press (raise Refused saying why): the task that holds it, which ends with the press as
        published.  Cancelling the task releases the relay at once (`pidaemon relay press` interrupted)."""
        press = await asyncio.to_thread(self.board.begin_press, relay, duration, by)
        task = self.node.spawn(self._hold(press), name=f"relay-press-{relay}")
        self._publish_state()
        return task

    async def _hold(self, press: Press) -> dict:
        """Keep the relay energised for the press's duration; release it however the wait ends."""
        try:
            await asyncio.sleep(press.duration)
        finally:
            # In a thread: a board may take a moment to confirm the release.  Shielded, so that the
            # daemon cancelling this task at shutdown still waits for the release to be recorded.
            record = await asyncio.shield(asyncio.to_thread(self.board.end_press, press))
            self.pressed.append(record)
            self.node.publish(self.node.topic("relays", "pressed"), record, qos=1)
            self._publish_state()
        return record

    # ------------------------------------------------------------ the hardware changing on its own

    def _hardware_idle(self, at: float) -> None:
        """From the backend's thread: every relay went idle at `at` (a board reconnected or restarted)."""
        self._call_soon(lambda: self.node.spawn(self._forced_idle(at), name="relay-forced-idle"))

    def _hardware_status(self) -> None:
        """From the backend's thread: its info (a board's presence, version) changed."""
        self._call_soon(self._publish_info)

    def _call_soon(self, callback) -> None:
        if self.loop is None:
            return
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:
            pass   # the loop has closed: the node has stopped

    async def _forced_idle(self, at: float) -> None:
        if await asyncio.to_thread(self.board.force_idle, at):
            self._publish_state()

    def _publish_info(self) -> None:
        if self.node.status()["connected"]:   # otherwise the node publishes its info when it connects
            self.node.publish(self.node.topics.info(self.node.id), self.node.info(), qos=1, retain=True)

    def _refuse(self, message: Message, reason: str) -> None:
        refusal = {"request": echo(message.payload), "reason": reason, "by": requester(message.payload)}
        self.refused.append(refusal)
        self.node.log.warning("relay: refused %s from %s: %s", message.topic, refusal["by"], reason)
        self.node.publish(self.node.topic("relays", "refused"), refusal, qos=1)

    def _publish_state(self) -> None:
        self.node.publish(self.node.topic("relays", "state"), self.board.state(), qos=1, retain=True)
