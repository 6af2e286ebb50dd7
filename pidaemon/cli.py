"""The `pidaemon` command line.

Each command's parser sets `func(args) -> exit code`.  Commands that talk to a
broker take `--broker mqtt://HOST:PORT` (or `mqtts://`).  Each command imports
what it needs when it runs, so that `--help`, `status` and `warble run` do not
pay for the daemon, the plugins or YAML.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import logging

    from .config import Config, ConfigError
    from .plugins import PluginCatalog

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def add_config_arguments(parser: argparse.ArgumentParser, *, config_required: bool = True) -> None:
    parser.add_argument("--config", "-c", required=config_required, metavar="FILE",
                        help="the role's YAML file (e.g. config/worker.yaml)")
    add_layer_arguments(parser)


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    """The layers over a role file: a node-local file and single values."""
    parser.add_argument("--local", metavar="FILE", help="node-local override file")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. --set plugins.ping.enabled=false (repeatable)")


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", metavar="URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT")


def config_from_args(args: argparse.Namespace, path: str | None = None,
                     catalog: PluginCatalog | None = None) -> Config:
    """Load the configuration with the command line as the top layer."""
    from .config import ConfigError, load_config, parse_assignment, parse_broker_url
    from .plugins import PluginCatalog

    overrides = [parse_assignment(a) for a in args.assignments]
    if getattr(args, "broker", None):
        try:
            parse_broker_url(args.broker)
        except ValueError as exc:
            raise ConfigError([f"--broker {args.broker}: {exc}"]) from None
        overrides.append((("mqtt", "broker"), args.broker, "--broker"))
    if getattr(args, "node_id", None):
        overrides.append((("node", "id"), args.node_id, "--node-id"))
    for option in ("log_level", "log_format"):
        if getattr(args, option, None):
            overrides.append((("logging", option.split("_")[1]), getattr(args, option), "--" + option.replace("_", "-")))
    catalog = catalog or PluginCatalog()
    return load_config(path or args.config, local=args.local, overrides=overrides, plugin_schema=catalog.schema)


def print_config_errors(error: ConfigError) -> None:
    for warning in error.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for message in error.messages:
        print(message, file=sys.stderr)
    print(f"{len(error.messages)} error{'s' if len(error.messages) != 1 else ''} in the configuration",
          file=sys.stderr)


# ---------------------------------------------------------------- run

def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .config import ConfigError
    from .logs import setup_logging
    from .plugins import PluginCatalog

    catalog = PluginCatalog()
    try:
        config = config_from_args(args, catalog=catalog)
    except ConfigError as error:
        setup_logging()
        print_config_errors(error)
        return EXIT_CONFIG
    setup_logging(config["logging"]["level"], config["logging"]["format"])
    log = logging.getLogger("pidaemon")
    log.info("configuration read from %s", ", ".join(config.sources))
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return asyncio.run(_run_daemon(config, catalog, log, trace_plugins=args.trace_plugins or None))


async def _run_daemon(config: Config, catalog: PluginCatalog, log: logging.Logger,
                      trace_plugins: bool | None = None) -> int:
    import asyncio
    import signal

    from . import __version__
    from .daemon import Daemon, DaemonError

    try:
        daemon = Daemon(config, catalog=catalog, trace_plugins=trace_plugins)
    except (DaemonError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop)
    log.info("pidaemon %s starting node %s (role %s)", __version__, daemon.id, daemon.role)
    try:
        await daemon.run()
    except DaemonError as exc:
        log.error("cannot run: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- config

def cmd_config_check(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .plugins import PluginCatalog

    status = EXIT_OK
    catalog = PluginCatalog()
    for path in args.files:
        try:
            config = config_from_args(args, path, catalog)
        except ConfigError as error:
            print_config_errors(error)
            status = EXIT_CONFIG
            continue
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{path}: ok")
    return status


def cmd_config_show(args: argparse.Namespace) -> int:
    from .config import ConfigError, dump_config

    try:
        config = config_from_args(args, args.file)
    except ConfigError as error:
        print_config_errors(error)
        return EXIT_CONFIG
    sys.stdout.write(dump_config(config))
    return EXIT_OK


# ---------------------------------------------------------------- plugins

def cmd_plugins(args: argparse.Namespace) -> int:
    """List installed plugins (or, with --config, the ones that configuration loads)."""
    from .config import ConfigError
    from .plugins import PluginCatalog, implemented_hooks

    catalog = PluginCatalog()
    names = catalog.names()
    configured: dict[str, dict] = {}
    if args.config:
        try:
            config = config_from_args(args, catalog=catalog)
        except ConfigError as error:
            print_config_errors(error)
            return EXIT_CONFIG
        configured = config.plugin_sections
        names = list(configured)
    rows = [("PLUGIN", "VERSION", "DISTRIBUTION", "STATE", "HOOKS")]
    for name in names:
        state = "installed"
        hooks: list[str] = []
        distribution, version = catalog.version(name) if name in catalog.entry_points else ("-", "-")
        if configured and not configured[name]["enabled"]:
            state = "disabled"
        else:
            try:
                plugin_class = catalog.load(name)
                hooks = implemented_hooks(plugin_class)
                catalog.check_hooks(name, plugin_class)
                state = "loads" if configured else state
            except Exception as exc:
                state = f"failed: {exc}"
        rows.append((name, version, distribution, state, ", ".join(h.removeprefix("pidaemon_") for h in hooks)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    return EXIT_OK


def cmd_plugins_new(args: argparse.Namespace) -> int:
    """Write a plugin package skeleton (see pidaemon.scaffold)."""
    from .scaffold import ScaffoldError, summary, write_plugin_package

    try:
        written = write_plugin_package(args.name, args.directory)
    except ScaffoldError as exc:
        print(f"pidaemon plugins new: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary(args.name, written))
    return EXIT_OK


# ---------------------------------------------------------------- sim

def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from .config import parse_broker_url, parse_listen_address
    from .daemon import DaemonError
    from .embedded_broker import BrokerPortTaken
    from .logs import setup_logging
    from .sim import SimulatedCluster, roles_with

    setup_logging(args.log_level)
    log = logging.getLogger("pidaemon.sim")
    try:
        broker = parse_broker_url(args.broker) if args.broker else None
        parse_listen_address(args.listen)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    # --http is a shorthand for the server's HTTP server (sim.yaml names it): off, so are the plugins it serves.
    http = ({name: {"enabled": False} for name in ("http", "warble_http", "dashboard")} if args.http == "off"
            else {"http": {"listen": args.http}})
    roles, locations = roles_with(args.config, args.plugin, {"server": {"plugins": http}})
    cluster = SimulatedCluster(args.workers, broker=broker, listen=args.listen, prefix=args.prefix, roles=roles,
                               state_dir=args.state_dir, fresh=args.fresh, locations=locations)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        async def unless_stopped(awaitable):
            """`awaitable`'s result, or None at once when Ctrl-C (or SIGTERM) comes first."""
            task = asyncio.ensure_future(awaitable)
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None
            return task.result()

        where = broker.url if broker else f"mqtt://{args.listen} (embedded broker, MQTT 3.1.1)"
        try:
            try:
                await unless_stopped(cluster.start())
            except DaemonError as exc:
                cause = exc.__cause__
                log.error("%s", cause if isinstance(cause, BrokerPortTaken) else exc)
                return EXIT_FAILURE
            online = None if stop.is_set() else await unless_stopped(cluster.wait_online(30))
            if online:
                devices = ", ".join(node.id for node in cluster.devices)
                log.info("cluster online: 1 server, %d workers%s on %s", len(cluster.workers),
                         f" and {devices}" if devices else "", where)
                host, _, port = (broker.url.split("//")[1] if broker else args.listen).rpartition(":")
                log.info("watch it with: mosquitto_sub -h %s -p %s -t '%s/#' -v", host, port, args.prefix)
                broker_flag = "" if (host, port) == ("127.0.0.1", "1883") else f" --broker mqtt://{host}:{port}"
                if args.prefix != "picluster":
                    broker_flag += f" --prefix {args.prefix}"
                log.info("run a program with: pidaemon submit 'PRINT(\"hello cluster\")' --wait%s", broker_flag)
            elif online is False:
                log.warning("not every node came online within 30 s; still trying (Ctrl-C stops)")
            await stop.wait()
        finally:
            await cluster.shutdown()
        if not any(node.bus is not None and node.bus.stats["connects"] for node in cluster.nodes):
            log.error("stopped without ever reaching the broker %s", where)
            return EXIT_FAILURE
        return EXIT_OK

    return asyncio.run(run())


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pidaemon", description="One daemon for every node of a Pi cluster.")
    parser.add_argument("--version", action=VersionAction, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a node")
    add_config_arguments(run)
    add_broker_argument(run)
    run.add_argument("--node-id", metavar="ID", help="node id or template ({hostname}, {mac}, {mac6})")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["text", "json"])
    run.add_argument("--trace-plugins", action="store_true",
                     help="log every hook call with its plugins, arguments and duration (or PIDAEMON_TRACE_PLUGINS=1)")
    run.set_defaults(func=cmd_run)

    config = commands.add_parser("config", help="check or show a configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser("check", help="validate; exit non-zero on any error")
    check.add_argument("files", nargs="+", metavar="FILE")
    add_layer_arguments(check)
    check.set_defaults(func=cmd_config_check)
    show = config_commands.add_parser("show", help="print the effective merged configuration")
    show.add_argument("file", metavar="FILE")
    add_layer_arguments(show)
    add_broker_argument(show)
    show.set_defaults(func=cmd_config_show)

    sim = commands.add_parser("sim", help="a server and N simulated workers in one process")
    sim.add_argument("--workers", type=int, default=2, metavar="N",
                     help="simulated worker Pis (default 2; 1050 fill the dashboard's box)")
    add_broker_argument(sim)
    sim.add_argument("--listen", default="127.0.0.1:1883", metavar="HOST:PORT",
                     help="where the embedded broker listens when no --broker is given")
    sim.add_argument("--prefix", default="picluster", help="MQTT topic prefix of the cluster (default picluster)")
    sim.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="where the server's HTTP server (the Warble API, the dashboard) listens ('off': no HTTP)")
    sim.add_argument("--config", metavar="FILE",
                     help="roles and plugins merged over the built-in desk cluster (the shape of pidaemon/sim.yaml)")
    sim.add_argument("--plugin", action="append", default=[], metavar="NAME[:ROLE]",
                     help="add an installed plugin to a role (default: worker); repeatable")
    sim.add_argument("--state-dir", metavar="DIR",
                     help="where the nodes keep their state (default: $XDG_STATE_HOME/pidaemon/sim)")
    sim.add_argument("--fresh", action="store_true", help="start with no state left from an earlier run")
    sim.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="default info")
    sim.set_defaults(func=cmd_sim)

    completion = commands.add_parser(
        "completion", help="print the shell code that completes pidaemon's commands and options",
        description="Completion for bash, zsh or fish, e.g. in ~/.bashrc: eval \"$(pidaemon completion bash)\"; "
                    "fish: pidaemon completion fish > ~/.config/fish/completions/pidaemon.fish")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    completion.set_defaults(func=cmd_completion)

    plugins = commands.add_parser("plugins", help="list plugins, their versions and hooks")
    add_config_arguments(plugins, config_required=False)
    plugins.set_defaults(func=cmd_plugins)
    plugin_actions = plugins.add_subparsers(dest="plugins_action", metavar="ACTION",
                                             description="without an ACTION: list the plugins")
    new = plugin_actions.add_parser("new", help="write a plugin package (pidaemon-NAME/) that passes its own test")
    new.add_argument("name", metavar="NAME", help="the plugin's name: lower-case letters, digits, underscores")
    new.add_argument("--directory", default=".", metavar="DIR", help="where to write pidaemon-NAME/ (default: .)")
    new.set_defaults(func=cmd_plugins_new)

    for module in ("pidaemon.warble.cli", "pidaemon.status_cli", "pidaemon.submit_cli", "pidaemon.nodes_cli",
                   "pidaemon_plugins.relay.cli"):
        importlib.import_module(module).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()   # Ctrl-C while its imports load: no traceback either
        offer_completions(parser)
        args = parser.parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # here, where a reader that went away is handled, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`pidaemon ... | head`): stop quietly, as Unix tools do, with 128 + SIGPIPE;
        # stdout goes to /dev/null so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        from .config import ConfigError  # imported by then if the command read a configuration
        if not isinstance(error, ConfigError):
            raise
        print_config_errors(error)
        return EXIT_CONFIG


class VersionAction(argparse.Action):
    """`--version`, with the version read only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__
        print(f"pidaemon {__version__}")  # on standard output, as `--version` goes everywhere
        parser.exit()


# ---------------------------------------------------------------- shell completion

def offer_completions(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete's protocol), if this run is one."""
    import os
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete
        argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete
    sys.stdout.write(argcomplete.shellcode(["pidaemon"], shell=args.shell))
    return EXIT_OK
