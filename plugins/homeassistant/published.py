"""The discovery topics this node published, kept across restarts: to take back what it no longer offers.

Home Assistant keeps an entity as long as its retained discovery config
stays on the broker.  When a node stops offering one (telemetry entities
switched off, a relay removed or renamed, the speaker's plugin gone), the
node publishes an empty retained config on its topic, which deletes the
entity in Home Assistant and the retained message on the broker.  To know
which topics those are after a restart, the node writes the list of what it
published into its state directory.

A damaged or unreadable file is logged and taken as empty: the node then
cannot take back entities of an earlier run (remove them by hand: see the
plugin's documentation), but it keeps running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE_NAME = "homeassistant-discovery.json"
MAX_TOPICS = 10000


class PublishedTopics:
    def __init__(self, directory: Path, log):
        self.path = Path(directory) / FILE_NAME
        self.log = log
        self.topics: set[str] = self._load()

    def _load(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            self.log.warning("homeassistant: cannot read %s (%s): entities of an earlier run cannot be taken "
                             "back", self.path, exc)
            return set()
        topics = data.get("topics") if isinstance(data, dict) else None
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            self.log.warning("homeassistant: %s is not a list of topics: entities of an earlier run cannot be "
                             "taken back", self.path)
            return set()
        return set(topics[:MAX_TOPICS])

    def replace(self, topics: set[str]) -> None:
        """Remember `topics` as what this node offers now (written atomically)."""
        if topics == self.topics:
            return
        self.topics = set(topics)
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps({"topics": sorted(self.topics)}), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            self.log.warning("homeassistant: cannot write %s (%s): after a restart, entities this node no longer "
                             "offers may stay in Home Assistant", self.path, exc)
