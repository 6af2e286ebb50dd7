"""Home Assistant MQTT discovery for the cluster's lamp, relays, speaker and nodes.

- `plugin.py`: the `homeassistant` plugin (settings, when to announce, Home Assistant's birth message);
- `entities.py`: the entities a node offers, built from its own `info`, and their discovery payloads;
- `light_commands.py`: Home Assistant's JSON light commands into the lamp's `lights/set` commands, and back;
- `published.py`: what this node announced, kept across restarts, to take back what it no longer offers;
- `hookspecs.py`: `pidaemon_homeassistant_entities`, for plugins that add entities of their own.
"""

from .entities import Entity

__all__ = ["Entity"]
