"""Declarative configuration schemas.

Each plugin declares the shape of its own config section with these field
types; the core declares its sections the same way.  Validation never stops at
the first problem: it collects every error with the dotted path of the value,
so that `pidaemon config check` can print them all at once with file and line.

    from pidaemon.schema import Section, Number, String

    config_schema = Section({
        "interval": Number(default=5, min=1, doc="seconds between readings"),
        "topic": String(default="readings"),
    })
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, TypeVar, dataclass_transform

REQUIRED = object()  # marker: the field has no default and must be given
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One validation error: where (dotted path) and what."""

    path: tuple[str, ...]
    message: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def describe(value: Any) -> str:
    """Render a user's value for an error message: strings quoted, YAML names."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


class Field:
    """Base of all field types: a default, a one-line doc, `nullable`."""

    expected = "a value"

    def __init__(self, *, default: Any = REQUIRED, doc: str = "", nullable: bool = False):
        self.default = default
        self.doc = doc
        self.nullable = nullable or default is None

    def validate(self, value: Any, path: tuple[str, ...], problems: list[Problem]) -> Any:
        if value is None and self.nullable:
            return None
        return self.check(value, path, problems)

    def check(self, value: Any, path: tuple[str, ...], problems: list[Problem]) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, path: tuple[str, ...], problems: list[Problem], expected: str | None = None) -> Any:
        problems.append(Problem(path, f"expected {expected or self.expected}, got {describe(value)}"))
        return None

    def default_value(self) -> Any:
        return self.default


class Any_(Field):
    expected = "any value"

    def check(self, value, path, problems):
        return value


class Boolean(Field):
    expected = "true or false"

    def check(self, value, path, problems):
        if isinstance(value, bool):
            return value
        return self.fail(value, path, problems)


class Number(Field):
    """A number, optionally bounded; `integer=True` accepts whole numbers only."""

    def __init__(self, *, min: float | None = None, max: float | None = None, integer: bool = False, **kw):
        super().__init__(**kw)
        self.min, self.max, self.integer = min, max, integer
        noun = "a whole number" if integer else "a number"
        bounds = []
        if min is not None:
            bounds.append(f">= {_fmt(min)}")
        if max is not None:
            bounds.append(f"<= {_fmt(max)}")
        self.expected = noun + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value, path, problems):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.fail(value, path, problems)
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return self.fail(value, path, problems)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return self.fail(value, path, problems)
        return int(value) if self.integer else value


def Integer(**kw) -> Number:
    return Number(integer=True, **kw)


def _fmt(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


class String(Field):
    """A string; `choices` limits it to a set, `pattern` to a regular expression."""

    def __init__(self, *, choices: Iterable[str] | None = None, pattern: str | None = None,
                 pattern_doc: str = "", **kw):
        super().__init__(**kw)
        self.choices = list(choices) if choices is not None else None
        self.pattern = re.compile(pattern) if pattern else None
        if self.choices:
            self.expected = "one of " + ", ".join(f'"{c}"' for c in self.choices)
        elif self.pattern:
            self.expected = pattern_doc or f"a string matching {pattern}"
        else:
            self.expected = "a string"

    def check(self, value, path, problems):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.choices:
            value = str(value)  # `protocol: 5` means "5"
        if not isinstance(value, str):
            return self.fail(value, path, problems)
        if self.choices is not None and value not in self.choices:
            problems.append(Problem(path, f"expected {self.expected}, got {describe(value)}"
                                    + did_you_mean(value, self.choices)))
            return None
        if self.pattern is not None and not self.pattern.fullmatch(value):
            return self.fail(value, path, problems)
        return value


class Checked(Field):
    """A field whose value passes through `convert`, which raises ValueError with the reason."""

    def __init__(self, convert: Callable[[Any], Any], *, expected: str, **kw):
        super().__init__(**kw)
        self.convert = convert
        self.expected = expected

    def check(self, value, path, problems):
        try:
            return self.convert(value)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(path, f"expected {self.expected}, got {describe(value)} ({exc})"))
            return None

    def default_value(self):
        """The default, converted like a given value (a default of "127.0.0.1:8080" is a (host, port) too)."""
        return None if self.default is None or self.default is REQUIRED else self.convert(self.default)


class ListOf(Field):
    def __init__(self, item: Field, **kw):
        kw.setdefault("default", [])
        super().__init__(**kw)
        self.item = item
        self.expected = f"a list of {item.expected}"

    def check(self, value, path, problems):
        if not isinstance(value, list):
            return self.fail(value, path, problems)
        return [self.item.validate(v, path + (str(i),), problems) for i, v in enumerate(value)]

    def default_value(self):
        return list(self.default) if isinstance(self.default, list) else self.default


class MapOf(Field):
    """A mapping with free keys (names chosen by the user) and one value type."""

    def __init__(self, value: Field, **kw):
        kw.setdefault("default", {})
        super().__init__(**kw)
        self.value = value
        self.expected = "a mapping"

    def check(self, value, path, problems):
        if not isinstance(value, dict):
            return self.fail(value, path, problems)
        return {str(k): self.value.validate(v, path + (str(k),), problems) for k, v in value.items()}

    def default_value(self):
        return dict(self.default) if isinstance(self.default, dict) else self.default


class Section(Field):
    """A mapping with known keys; unknown keys are errors with a "did you mean" hint.

    A missing or null section counts as empty, so every default applies.
    `whole(values, path, problems)`, if given, checks what no field can judge
    alone (one setting against another), once every field is valid.
    `warn(config, path)`, if given, says what a valid whole configuration
    should still hear (`warnings`: reported by `config check` and at start).
    """

    expected = "a mapping"

    def __init__(self, fields: Mapping[str, Field], whole: Callable[..., None] | None = None,
                 warn: Callable[..., list[Problem]] | None = None, **kw):
        kw.setdefault("default", None)
        super().__init__(**kw)
        self.fields = dict(fields)
        self.whole = whole
        self.warn = warn
        self.nullable = False

    def warnings(self, config: Mapping[str, Any], path: tuple[str, ...]) -> list[Problem]:
        return self.warn(config, path) if self.warn is not None else []

    def check(self, value, path, problems):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return self.fail(value, path, problems)
        before = len(problems)
        result: dict[str, Any] = {}
        for key in value:
            if key not in self.fields:
                problems.append(Problem(path + (str(key),), "unknown key" + did_you_mean(str(key), self.fields)))
        for name, field in self.fields.items():
            if name in value:
                result[name] = field.validate(value[name], path + (name,), problems)
            elif field.default is REQUIRED:
                problems.append(Problem(path + (name,), f"missing; expected {field.expected}"))
            else:
                result[name] = field.default_value()
                if isinstance(field, Section):
                    result[name] = field.validate({}, path + (name,), problems)
        if self.whole is not None and len(problems) == before:
            self.whole(result, path, problems)
        return result

    def default_value(self):
        return self.validate({}, (), [])

    def extended(self, more: Mapping[str, Field]) -> "Section":
        return Section({**self.fields, **more}, whole=self.whole, warn=self.warn)


# ---------------------------------------------------------------- typed settings

SETTINGS_SECTION = "__pidaemon_section__"


@dataclass_transform(kw_only_default=True, frozen_default=True,
                     field_specifiers=(Field, Any_, Boolean, Number, Integer, String, Checked, ListOf, MapOf))
def settings(cls: type[T]) -> type[T]:
    """Make a class a plugin's typed, read-only settings, declared once with the field types above.

        @settings
        class TelemetrySettings:
            interval: float = Number(min=0.1, default=5, doc="seconds between two publications")

        class TelemetryPlugin:
            config_schema = TelemetrySettings

            def __init__(self, node, config: TelemetrySettings):
                self.config = config          # config.interval is a float

    The class becomes a frozen dataclass; its `Section` (what `config check`
    validates, with file:line errors) is built from the fields.  A field
    annotated with another `@settings` class and given no value is a nested
    section.  Lists become tuples and mappings read-only, so nothing a plugin
    holds changes under another one.  A `@settings` class may extend another
    (fields shared by two plugins are declared once).  A static method
    `check_whole(values, path, problems)` on the class checks the settings
    taken together, and a static method `config_warnings(config, path)` says
    what a valid configuration should still hear (see `Section`).
    """
    fields: dict[str, Field] = {}
    nested: dict[str, type] = {}
    for base in reversed(cls.__mro__[1:]):  # fields of @settings base classes come first
        if is_settings(base):
            fields.update(section_of(base).fields)
            nested.update(base._nested_settings)
    inherited = set(fields)
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if isinstance(value, Field):
            fields[name] = value
            continue
        kind = typing.get_type_hints(cls).get(name) if value is dataclasses.MISSING else None
        if not is_settings(kind):
            raise TypeError(f"{cls.__name__}.{name}: give a field type (Number(...), String(...), ...) "
                            f"or annotate it with a @settings class")
        nested[name] = kind
        fields[name] = section_of(kind)
    for name, spec in fields.items():
        if name in inherited:
            continue
        if name in nested:
            setattr(cls, name, dataclasses.field(default_factory=nested[name].defaults))
        elif spec.default is REQUIRED:
            delattr(cls, name)
        elif isinstance(spec.default_value(), (list, dict)):
            setattr(cls, name, dataclasses.field(default_factory=lambda spec=spec: _read_only(spec.default_value())))
        else:
            setattr(cls, name, spec.default_value())
    setattr(cls, SETTINGS_SECTION, Section(fields, whole=cls.__dict__.get("check_whole"),
                                           warn=cls.__dict__.get("config_warnings")))
    cls._nested_settings = nested
    cls.from_mapping = classmethod(_from_mapping)
    cls.defaults = classmethod(lambda kind: kind.from_mapping(section_of(kind).default_value()))
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def is_settings(kind: Any) -> bool:
    return isinstance(kind, type) and SETTINGS_SECTION in kind.__dict__


def section_of(schema: Any) -> "Section":
    """The Section of a `@settings` class, or the Section itself."""
    if is_settings(schema):
        return getattr(schema, SETTINGS_SECTION)
    if isinstance(schema, Section):
        return schema
    raise TypeError("a plugin's config_schema must be a @settings class or a pidaemon.schema.Section")


def _from_mapping(kind, values: Mapping[str, Any]):
    """An instance from a validated section (a mapping of every field)."""
    arguments = {}
    for name in section_of(kind).fields:
        value = values[name]
        if name in kind._nested_settings:
            value = kind._nested_settings[name].from_mapping(value)
        arguments[name] = _read_only(value)
    return kind(**arguments)


def _read_only(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_read_only(v) for v in value)
    if isinstance(value, dict):
        return types.MappingProxyType({k: _read_only(v) for k, v in value.items()})
    return value
