"""What the speaker reads from a command message, checked where it enters.

Every field of `sound/play`, `sound/stop` and `sound/volume` comes from the
network: a name must be a plain name of the library (looked up in its table,
never joined to a path), a volume a number from 0 to 1, and `user` and `job`
are echoed only when they are short strings.  A refused request raises
RequestRefused with the reason that `sound/refused` carries.
"""

from __future__ import annotations

from typing import Any, Mapping

from pidaemon.bus import Message, PayloadError

MAX_ECHOED = 64        # characters of `user` and `job` echoed in replies (Warble's user names are at most 64)
MAX_SHOWN_REQUEST = 200  # characters of a refused payload quoted in its reply


class RequestRefused(Exception):
    """A command that is malformed or asks for what the speaker will not do; the message says why."""


def read_request(message: Message, empty_allowed: bool = False) -> dict[str, Any]:
    """The command's JSON object (`{}` for an empty payload where `empty_allowed`)."""
    if not message.payload and empty_allowed:
        return {}
    try:
        request = message.json()
    except PayloadError as exc:
        raise RequestRefused(str(exc).removeprefix(f"{message.topic}: ")) from None
    if not isinstance(request, dict):
        raise RequestRefused(f"expected a JSON object, got {type(request).__name__}")
    return request


def shown_payload(message: Message) -> str:
    """The payload as text, cut to MAX_SHOWN_REQUEST characters, for a refusal's `request`."""
    text = message.payload.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_SHOWN_REQUEST else text[:MAX_SHOWN_REQUEST - 3] + "..."


def echoed(request: Mapping[str, Any], key: str) -> str | None:
    """`user` or `job` as given, if a string of at most MAX_ECHOED characters; else None."""
    value = request.get(key)
    return value if isinstance(value, str) and len(value) <= MAX_ECHOED else None


def requested_name(request: Mapping[str, Any], library, default: str) -> str:
    """The library name a play request asks for; `""` is the default sound."""
    if "name" not in request:
        raise RequestRefused('a play request needs "name": a sound of the library, or "" for the default')
    name = request["name"]
    if not isinstance(name, str):
        raise RequestRefused(f'"name" must be a string, got {type(name).__name__}')
    if name == "":
        return default
    if name not in library:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise RequestRefused(f"{shown!r} is not in the sound library (sounds: {', '.join(library)}; "
                             "a sound is a plain name of the library, never a path or URL)")
    return name


def requested_volume(request: Mapping[str, Any]) -> float:
    value = request.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails too
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise RequestRefused(f'"value" must be a number from 0.0 to 1.0, got {shown}')
    return float(value)
