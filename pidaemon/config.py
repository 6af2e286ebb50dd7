"""Load, layer and validate a node's configuration.

Layers, later ones winning: the role file (shared by every node of a role, on
the read-only NFS root), an optional node-local override file, `PIDAEMON_*`
environment variables, then command-line flags.  Every value remembers where it
came from, so that each validation error reads
`config/worker.yaml:12: plugins.telemetry.interval: expected a number >= 1, got "fast"`.
Nothing starts until the whole configuration, plugin sections included, is valid.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import yaml

from .names import NAME_DOC, TOPIC_PREFIX, TOPIC_PREFIX_DOC, is_name
from .schema import Boolean, Checked, Integer, Number, Problem, Section, String, did_you_mean

ENV_PREFIX = "PIDAEMON_"
ENV_SEPARATOR = "__"
# Environment variables of ours that are not configuration values.
ENV_RESERVED = frozenset({"PIDAEMON_CONFIG", "PIDAEMON_LOCAL_CONFIG"})


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_broker_url(value: Any) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]` (1883 and 8883 by default)."""
    if isinstance(value, BrokerAddress):
        return value
    if not isinstance(value, str):
        raise ValueError("not a string")
    parts = urlsplit(value if "://" in value else "mqtt://" + value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"unknown scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("no host")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("a broker address has no path")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, parts.port or (8883 if tls else 1883), tls)


def parse_listen_address(value: Any) -> tuple[str, int]:
    """`HOST:PORT` (or an already parsed (host, port)) -> (host, port)."""
    if isinstance(value, tuple) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("use HOST:PORT")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("bad port")
    return host.strip("[]") or "0.0.0.0", int(port)


CORE_SCHEMA = Section({
    "node": Section({
        "role": String(pattern=r"[a-z][a-z0-9_\-]*", pattern_doc="a lower-case role name such as worker",
                       doc="server, worker, audio, lights, relay... (what the node is for)"),
        "id": String(default="{hostname}",
                     doc="node id template: {hostname}, {mac} and {mac6} (last 6 hex digits of the MAC)"),
        "state_dir": String(default="/var/lib/pidaemon", doc="writable directory for the node's state"),
        "local_config": String(default=None, doc="node-local override file, read if it exists"),
    }),
    "mqtt": Section({
        "broker": Checked(parse_broker_url, default=None, expected="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
                          doc="null: found by a discovery plugin"),
        "prefix": String(default="picluster", pattern=TOPIC_PREFIX, pattern_doc=TOPIC_PREFIX_DOC),
        "protocol": String(choices=["5", "3.1.1"], default="5"),
        "client_id": String(default=None, doc="defaults to the node id"),
        "keepalive": Integer(min=2, max=65535, default=30),
        "username": String(default=None),
        "password": String(default=None),
        "password_file": String(default=None, doc="read the password from this file"),
        "tls": Section({
            "ca_file": String(default=None),
            "cert_file": String(default=None),
            "key_file": String(default=None),
            "insecure": Boolean(default=False, doc="skip host name verification"),
        }),
        "session_expiry": Integer(min=0, default=0,
                                  doc="seconds the broker keeps this node's session; 0: a clean session"),
        "queue_limit": Integer(min=0, default=10000,
                               doc="QoS 1 messages kept while disconnected; beyond, new ones are refused"),
        "reconnect": Section({
            "min_delay": Number(min=0.01, default=0.5),
            "max_delay": Number(min=0.1, default=60),
        }),
    }),
    "broker": Section({
        "embedded": Boolean(default=False, doc="host an amqtt broker in this process"),
        "listen": Checked(parse_listen_address, default="127.0.0.1:1883", expected="HOST:PORT"),
    }),
    "logging": Section({
        "level": String(choices=["debug", "info", "warning", "error"], default="info"),
        "format": String(choices=["text", "json"], default="text"),
    }),
    "lifecycle": Section({
        "shutdown_timeout": Number(min=0.5, max=60, default=3,
                                   doc="seconds for the plugins' shutdown before the node goes offline"),
        "startup_timeout": Number(min=0.5, default=30),
    }),
    "plugins": Checked(lambda v: v, default=None, expected="a mapping of plugin names to sections"),
})

PLUGIN_COMMON_FIELDS = {
    "enabled": Boolean(default=True),
    "required": Boolean(default=False, doc="a required plugin's failure stops the daemon"),
}


class ConfigError(Exception):
    """Every problem of a configuration, each formatted `file:line: path: message`."""

    def __init__(self, messages: list[str], warnings: list[str] | None = None):
        super().__init__("\n".join(messages))
        self.messages = messages
        self.warnings = warnings or []  # found beside the errors (a plugin not installed...)


@dataclass
class Config:
    data: dict[str, Any]
    sources: list[str]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def plugin_sections(self) -> dict[str, dict[str, Any]]:
        return self.data["plugins"]


# ---------------------------------------------------------------- YAML with lines

class _LocatedDict(dict):
    """A mapping loaded from YAML that remembers the line of each key."""

    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_located_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LocatedDict:
    loader.flatten_mapping(node)
    mapping = _LocatedDict()
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_located_mapping)


def load_yaml_file(path: str | Path) -> tuple[dict, dict[tuple, str]]:
    """Load a YAML mapping; return it with the `file:line` of every dotted path."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError([f"{name}{line}: YAML syntax error: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML error: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the file must hold a mapping (key: value lines), not {type(data).__name__}"])
    locations: dict[tuple, str] = {(): f"{name}:1"}
    _collect_locations(data, (), name, locations)
    return data, locations


def _collect_locations(data: Any, prefix: tuple, name: str, out: dict[tuple, str]) -> None:
    if isinstance(data, _LocatedDict):
        for key, value in data.items():
            path = prefix + (str(key),)
            out[path] = f"{name}:{data.lines[key]}"
            _collect_locations(value, path, name, out)


# ---------------------------------------------------------------- layering

def deep_merge(base: dict, top: Mapping) -> dict:
    """Merge `top` over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def set_path(data: dict, path: tuple[str, ...], value: Any) -> dict:
    nested: dict = {}
    cursor = nested
    for key in path[:-1]:
        cursor[key] = {}
        cursor = cursor[key]
    cursor[path[-1]] = value
    return deep_merge(data, nested)


def parse_scalar(text: str) -> Any:
    """A value from the environment or the command line, read as YAML (`5`, `true`, `null`, `[a, b]`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def environment_overrides(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """`PIDAEMON_MQTT__BROKER=mqtt://h:1883` sets mqtt.broker (`__` separates levels)."""
    overrides = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split(ENV_SEPARATOR))
        if all(path):
            overrides.append((path, parse_scalar(environ[name]), f"environment {name}"))
    return overrides


def parse_assignment(text: str, origin: str = "--set") -> tuple[tuple[str, ...], Any, str]:
    """`plugins.telemetry.interval=10` from a `--set` flag."""
    key, sep, value = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise ConfigError([f"{origin} {text}: expected KEY.PATH=VALUE"])
    return path, parse_scalar(value), f"{origin} {key.strip()}"


# ---------------------------------------------------------------- validation

PluginSchemaLookup = Callable[[str, Mapping[str, Any]], Section]


class PluginUnavailable(Exception):
    """Raised by a plugin schema lookup: the plugin is not installed or cannot be imported."""

    def __init__(self, message: str, *, installed: Iterable[str] = ()):
        super().__init__(message)
        self.installed = list(installed)


def load_config(
    path: str | Path,
    *,
    local: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[tuple[tuple[str, ...], Any, str]] = (),
    plugin_schema: PluginSchemaLookup | None = None,
) -> Config:
    """Read every layer, validate the whole, and return the effective configuration.

    Raises ConfigError with every problem found.  `plugin_schema(name, section)`
    returns the Section a plugin declares (or raises PluginUnavailable).
    """
    data, locations = load_yaml_file(path)
    sources = [str(path)]
    local_path = local or _raw_get(data, ("node", "local_config"))
    if local_path:
        if Path(str(local_path)).exists() or local:
            top, top_locations = load_yaml_file(local_path)
            data = deep_merge(data, top)
            locations.update({k: v for k, v in top_locations.items() if k})
            sources.append(str(local_path))
    for key_path, value, origin in [*environment_overrides(os.environ if environ is None else environ), *overrides]:
        data = set_path(data, key_path, value)
        locations[key_path] = origin
        for depth in range(1, len(key_path)):  # a key the override creates is the override's, too
            locations.setdefault(key_path[:depth], origin)
    return validate(data, locations, sources, plugin_schema)


def config_from_mapping(data: dict, *, origin: str = "<built-in>",
                        plugin_schema: PluginSchemaLookup | None = None,
                        locations: Mapping[tuple, str] | None = None) -> Config:
    """Validate a configuration given as a Python mapping (the simulator and tests build them);
    `locations` says where some of its settings were written (`file:line`), for the errors."""
    return validate(data, {(): origin, **(locations or {})}, [origin], plugin_schema)


def validate(data: dict, locations: dict[tuple, str], sources: list[str],
             plugin_schema: PluginSchemaLookup | None) -> Config:
    problems: list[Problem] = []
    warnings: list[str] = []
    result = CORE_SCHEMA.validate(data, (), problems)
    schemas: dict[str, Section] = {}
    result["plugins"] = _validate_plugins(data.get("plugins"), plugin_schema, problems, warnings, locations, schemas)
    if not problems:
        problems.extend(_cross_checks(result))
        warnings.extend(_plugin_warnings(result, schemas))
    if problems:
        raise ConfigError([_locate(p, locations, sources[0]) for p in problems],
                          [_locate(w, locations, sources[0]) for w in warnings])
    return Config(result, sources, [_locate(w, locations, sources[0]) for w in warnings])


def _validate_plugins(raw: Any, plugin_schema, problems, warnings, locations, schemas=None) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem(("plugins",), "expected a mapping of plugin names to sections"))
        return {}
    sections = {}
    for name, section in raw.items():
        path = ("plugins", str(name))
        if section is None:
            section = {}
        if not isinstance(section, dict):
            problems.append(Problem(path, f"expected a mapping (the plugin's settings), got {section!r}"))
            continue
        required = section.get("required", False) is True
        schema = Section({})
        if section.get("enabled", True) is False:
            # A disabled plugin is not loaded: its own settings stay as written, unchecked.
            section = {k: v for k, v in section.items() if k in PLUGIN_COMMON_FIELDS}
        elif plugin_schema is not None:
            try:
                schema = plugin_schema(str(name), section)
            except PluginUnavailable as exc:
                hint = did_you_mean(str(name), exc.installed)
                (problems if required else warnings).append(Problem(path, f"{exc}{hint}"))
                # Still check the common keys, and keep the section for status reports.
                schema = Section({}, )
                section = {k: v for k, v in section.items() if k in PLUGIN_COMMON_FIELDS}
        schema = schema.extended(PLUGIN_COMMON_FIELDS)
        sections[str(name)] = schema.validate(section, path, problems)
        if schemas is not None:
            schemas[str(name)] = schema
    return sections


def _plugin_warnings(config: dict, schemas: Mapping[str, Section]) -> list[Problem]:
    """What each plugin's section says of the whole valid configuration: a Section may offer
    `warnings(config, path) -> [Problem]` (the relay plugin warns when configured on the server)."""
    found = []
    for name, schema in schemas.items():
        judge = getattr(schema, "warnings", None)
        if judge is not None and config["plugins"][name]["enabled"]:
            found.extend(judge(config, ("plugins", name)))
    return found


def _cross_checks(config: dict) -> list[Problem]:
    problems = []
    mqtt, broker = config["mqtt"], config["broker"]
    if broker["embedded"] and mqtt["protocol"] == "5":
        problems.append(Problem(("mqtt", "protocol"),
                                'the embedded broker (amqtt) speaks MQTT 3.1.1 only: set mqtt.protocol: "3.1.1"'))
    if mqtt["password"] and mqtt["password_file"]:
        problems.append(Problem(("mqtt", "password_file"), "give password or password_file, not both"))
    if mqtt["reconnect"]["min_delay"] > mqtt["reconnect"]["max_delay"]:
        problems.append(Problem(("mqtt", "reconnect", "min_delay"), "must not exceed max_delay"))
    try:
        render_node_id(config["node"]["id"], hostname="h", mac="00:00:00:00:00:00")
    except ValueError as exc:
        problems.append(Problem(("node", "id"), str(exc)))
    return problems


def _locate(problem: Problem, locations: dict[tuple, str], default_file: str) -> str:
    path = problem.path
    while path and path not in locations:
        path = path[:-1]
    where = locations.get(path, default_file)
    return f"{where}: {problem.dotted}: {problem.message}" if problem.path else f"{where}: {problem.message}"


def _raw_get(data: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


# ---------------------------------------------------------------- node id


def render_node_id(template: str, *, hostname: str, mac: str) -> str:
    """Expand `{hostname}`, `{mac}` and `{mac6}`; the result must be a safe topic level.

    What the machine supplies is made safe (a hostname with a space gets a dash); what the
    operator wrote is not rewritten: `bad id!` is an error, not silently `bad-id-`.
    """
    hexmac = re.sub(r"[^0-9a-f]", "", mac.lower())
    short_hostname = re.sub(r"[^A-Za-z0-9_.\-]", "-", hostname.split(".")[0])
    try:
        node_id = template.format(hostname=short_hostname, mac=hexmac, mac6=hexmac[-6:])
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad template {template!r}: use {{hostname}}, {{mac}} or {{mac6}} ({exc})") from None
    if not is_name(node_id):
        raise ValueError(f"node id {node_id!r} is not {NAME_DOC}")
    return node_id


def dump_config(config: Config) -> str:
    """The effective configuration as YAML (what `pidaemon config show` prints)."""
    def plain(value):
        """What YAML can show: a converted value back in the form a user writes it."""
        if isinstance(value, BrokerAddress):
            return value.url
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            return f"{value[0]}:{value[1]}"  # a listen address
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return plain(dataclasses.asdict(value))
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return str(value)
    data = plain(config.data)
    if data["mqtt"].get("password"):
        data["mqtt"]["password"] = "********"
    header = "# effective configuration from: " + ", ".join(config.sources) + "\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
