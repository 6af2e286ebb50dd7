"""Every limit a Warble run is held to, with defaults fit for a public cluster.

`Limits.from_mapping` is the door for the YAML config section: it takes plain
values, converts them to the field types and rejects unknown keys.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

# The names PLAYSOUND accepts by default: the speaker's default library, which the
# sound plugin synthesizes (pidaemon_plugins/sound/default_sounds.py), has exactly these.
DEFAULT_SOUNDS = ("beep", "bell", "chime", "applause", "drum", "whistle")


@dataclass(frozen=True)
class Limits:
    # Program text
    max_program_length: int = 280      # characters, wrapper included
    max_depth: int = 40                # nesting of blocks, parentheses, unary and ^ chains
    # Running
    max_steps: int = 10_000_000        # loop iterations + built-in calls
    time_limit: float = 30.0           # seconds of wall time, SLEEP included
    max_output_chars: int = 65_536     # all PRINTed text, newlines included
    max_output_lines: int = 2_000
    # Value sizes, checked before the value is made
    max_string_length: int = 100_000   # characters
    max_number_digits: int = 10_000    # decimal digits of an integer
    max_precision: int = 10_000        # SETPRECISION cap (significant digits)
    # SAVE / LOAD
    max_saved_keys: int = 100          # names per user
    max_saved_value_length: int = 4_096  # characters of a saved value (numbers as text)
    max_saved_name_length: int = 64
    max_store_writes: int = 1_000      # SAVE calls per run
    # Child-process runner
    memory_mb: int = 256               # address space a child may add to the warm interpreter
    kill_grace: float = 0.5            # seconds after time_limit before the hard kill
    # Effects
    max_effects: int = 10_000          # LIGHTS, PLAYSOUND and plugin effects per run
    light_count: int = 24              # LIGHTS index is 0 .. light_count-1
    sounds: tuple[str, ...] = field(default=DEFAULT_SOUNDS)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sounds":
                if isinstance(value, str) or not all(isinstance(s, str) and s for s in value):
                    raise ValueError("Warble limit 'sounds' must be a list of non-empty names")
                object.__setattr__(self, "sounds", tuple(value))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Warble limit {f.name!r} must be a number, got {value!r}")
            if f.name == "kill_grace":
                if not value >= 0:
                    raise ValueError("Warble limit 'kill_grace' must be 0 or more")
            elif not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"Warble limit {f.name!r} must be a positive number, got {value!r}")
        if self.max_number_digits < 400:
            # floats go up to 1.8e308: FLOOR(1e308) must still be a valid integer
            raise ValueError("Warble limit 'max_number_digits' must be at least 400")

    @property
    def max_int_bits(self) -> int:
        """Bit length that corresponds to max_number_digits decimal digits."""
        return math.ceil(self.max_number_digits * math.log2(10))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "Limits":
        """Build Limits from a config mapping; unknown keys are an error."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise ValueError(f"Warble limits must be a mapping, got {type(mapping).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown Warble limit(s): {', '.join(map(str, unknown))} "
                f"(known: {', '.join(sorted(fields))})"
            )
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            default = getattr(cls, key) if key != "sounds" else DEFAULT_SOUNDS
            if key == "sounds":
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise ValueError("Warble limit 'sounds' must be a list of names")
                values[key] = tuple(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"Warble limit {key!r} must be a number, got {value!r}")
                values[key] = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"Warble limit {key!r} must be an integer, got {value!r}")
                values[key] = value
        return cls(**values)

    @classmethod
    def problems_in(cls, mapping: Mapping[Any, Any]) -> dict[str, str]:
        """Every key of a config mapping that `from_mapping` would refuse, with the reason
        (a configuration checker reports them all at once, each at its own line)."""
        problems = {}
        for key, value in mapping.items():
            try:
                cls.from_mapping({key: value})
            except ValueError as exc:
                problems[str(key)] = str(exc)
        return problems

    def replace(self, **changes: Any) -> "Limits":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sounds"] = list(self.sounds)
        return d
