"""The relay plugin: the solenoids that press the server's reset and power buttons.

- `plugin`: the plugin (MQTT commands, state, presses and refusals published);
- `board`: the relays and their safety rules (bounds, intervals, lock, watchdog),
  shared by the plugin and the command line;
- `backends`: what drives the outputs (`sim`, `gpio`, or another distribution's);
- `arduino_backend`: the `arduino` backend, the relay board on USB serial
  (through `pidaemon.serial_board`, shared with the lamp);
- `settings`: the plugin's section; `commands`: reading commands from the network;
- `local`: the daemon's local socket; `cli`: `pidaemon relay press`.
"""
