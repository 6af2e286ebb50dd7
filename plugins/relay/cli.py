"""`pidaemon relay press NAME`: press a relay from the relay node itself, with no broker.

    pidaemon relay press reset -c /etc/pidaemon/relay.yaml
    pidaemon relay press power --duration 5 -c /etc/pidaemon/relay.yaml

The broker may run on the very server these relays reset, so this command
never needs it.  It reads the node's configuration (the relay plugin's
section: backend, relays and their bounds) and:

- when no daemon holds the relays, drives the configured backend itself,
  under the same rules as the plugin (max_press, min_interval from the last
  presses kept in the state directory, every relay idle before and after);
- when the daemon runs (it holds the lock file `relays.lock` in the state
  directory), asks it through its local socket (`relays.sock`), so that the
  press goes through the daemon's own board and is published as any other.

Exit status: 0 pressed; 1 refused (the reason is printed); 2 a usage or
configuration error; 3 the relays are held by a process that does not
answer; 4 the hardware cannot be used; 130 interrupted (the relay released).

It lives with the relay plugin, not beside the core's commands in
`pidaemon/`, because it is the plugin's domain: its settings, its board and
its socket; `pidaemon/cli.py` only names the module.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_BUSY, EXIT_HARDWARE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
PLUGIN_NAME = "relay"
MAX_WHO = 40   # characters of --by: with " (pidaemon relay press)" it stays within the 64 a press records


def add_commands(subparsers) -> None:
    from pidaemon.cli import add_config_arguments

    relay = subparsers.add_parser("relay", help="press this node's relays (the server's reset and power buttons)")
    actions = relay.add_subparsers(dest="relay_command", required=True, metavar="ACTION")
    press = actions.add_parser(
        "press", help="press a relay now, without the broker",
        description="Press a relay of this node for --duration seconds (default: its default_press), within its "
                    "max_press and min_interval. Needs no broker: drives the relays directly, or asks the "
                    "running daemon that holds them through its local socket.",
        epilog="exit status: 0 pressed, 1 refused, 2 usage or configuration, 3 relays held by a process that "
               "does not answer, 4 hardware unusable, 130 interrupted")
    press.add_argument("name", metavar="NAME", help="the relay's name in the configuration (reset, power...)")
    press.add_argument("--duration", type=float, metavar="SECONDS", help="how long to press (default: its default)")
    press.add_argument("--by", metavar="WHO", type=_who,
                       help="who presses, for the record (default: your login name)")
    add_config_arguments(press)
    press.set_defaults(func=cmd_press)


def _who(text: str) -> str:
    if not text or not text.isprintable() or len(text) > MAX_WHO:
        raise argparse.ArgumentTypeError(f"a name of 1 to {MAX_WHO} printable characters")
    return text


def cmd_press(args: argparse.Namespace) -> int:
    import getpass
    import logging
    from pathlib import Path

    from pidaemon.cli import config_from_args
    from pidaemon.logs import setup_logging

    from .backends import BackendError
    from .board import Refused, RelayBoard, RelaysBusy
    from .settings import RelayPluginSettings

    setup_logging("warning")
    config = config_from_args(args)   # a ConfigError is printed by pidaemon.cli.main
    section = config.plugin_sections.get(PLUGIN_NAME)
    if not section or not section["enabled"]:
        return _fail(f"{args.config} enables no relay plugin (plugins: {PLUGIN_NAME}: ...)", EXIT_USAGE)
    settings = RelayPluginSettings.from_mapping({k: v for k, v in section.items() if k not in ("enabled", "required")})
    state_dir = Path(config["node"]["state_dir"]).expanduser()
    by = f"{args.by or getpass.getuser()} (pidaemon relay press)"
    try:
        board = RelayBoard(settings, state_dir, logging.getLogger("pidaemon.relay"))
        board.open()
    except RelaysBusy as busy:
        return _ask_daemon(settings, state_dir, args, by, busy)
    except BackendError as exc:
        return _fail(str(exc), EXIT_HARDWARE)
    except OSError as exc:
        return _fail(f"cannot use the state directory {state_dir}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        with _released_on_sigterm():
            press = board.begin_press(args.name, args.duration, by)
            try:
                _sleep(press.duration)
            finally:
                record = board.end_press(press)
    except Refused as refusal:
        return _fail(f"refused: {refusal}", EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail(f"interrupted: {args.name} released", EXIT_INTERRUPTED)
    finally:
        board.close()
    print(f"pressed {record['relay']} for {record['duration']} s")
    return EXIT_OK


def _ask_daemon(settings, state_dir, args, by: str, busy: Exception) -> int:
    from .local import ask_daemon

    relay = settings.relay_settings().get(args.name)
    timeout = (relay.max_press if relay else 0) + 10
    try:
        answer = ask_daemon(state_dir, args.name, args.duration, by, timeout)
    except KeyboardInterrupt:   # the connection closes: the daemon cuts the press short
        return _fail(f"interrupted: the running daemon releases {args.name}", EXIT_INTERRUPTED)
    except OSError as exc:
        return _fail(f"{busy}; it does not answer on its local socket ({exc}): stop it, or wait for the press "
                     f"under way to end", EXIT_BUSY)
    if "pressed" in answer:
        print(f"pressed {answer['pressed']['relay']} for {answer['pressed']['duration']} s (by the running daemon)")
        return EXIT_OK
    return _fail(f"refused: {answer.get('refused', answer)}", EXIT_REFUSED)


def _sleep(seconds: float) -> None:
    import time
    time.sleep(seconds)


class _released_on_sigterm:
    """SIGTERM during a press ends it like Ctrl-C (the relay released), not by killing Python outright."""

    def __enter__(self):
        import signal

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        self.previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, *exc):
        import signal
        signal.signal(signal.SIGTERM, self.previous)
        return False


def _fail(message: str, code: int) -> int:
    print(f"pidaemon relay press: {message}", file=sys.stderr)
    return code
