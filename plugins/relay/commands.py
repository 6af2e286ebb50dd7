"""Reading relay commands from the network: every field hostile until checked here.

    <prefix>/relays/press  {"relay": "reset", "duration": 1.0, "user": "ada"}   duration optional
    <prefix>/relays/set    {"relay": "power", "state": "on" | "off", "user": "ada"}

Other fields (`job`, `node`...) are ignored.  A request that cannot be read
raises Refused with the reason the plugin publishes on `<prefix>/relays/refused`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .board import Refused

MAX_PAYLOAD = 4096        # bytes: a relay command is a few dozen
MAX_USER = 64             # characters of `user` kept
ECHO = 200                # characters of a refused request echoed back
UNKNOWN_USER = "unknown"


@dataclass(frozen=True)
class PressRequest:
    relay: str
    duration: float | None
    by: str


@dataclass(frozen=True)
class SetRequest:
    relay: str
    on: bool
    by: str


def echo(payload: bytes) -> str:
    """The request as sent, for the refusal: text, cut to ECHO characters."""
    text = payload[:ECHO * 4].decode("utf-8", errors="replace")
    return text if len(text) <= ECHO else text[:ECHO] + "…"


def requester(payload: bytes) -> str:
    """Who sent the request, for the refusal: its `user` if readable, else "unknown"."""
    try:
        request = json.loads(payload) if len(payload) <= MAX_PAYLOAD else None
    except (ValueError, RecursionError):
        return UNKNOWN_USER
    user = request.get("user") if isinstance(request, dict) else None
    return user[:MAX_USER] if isinstance(user, str) and user else UNKNOWN_USER


def read_press(payload: bytes) -> PressRequest:
    request = _object(payload)
    duration = request.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration)):
        raise Refused(f"duration must be a number of seconds, got {_show(duration)}")
    return PressRequest(_relay(request), None if duration is None else float(duration), _user(request))


def read_set(payload: bytes) -> SetRequest:
    request = _object(payload)
    state = request.get("state")
    if state not in ("on", "off"):
        raise Refused(f'state must be "on" or "off", got {_show(state)}')
    return SetRequest(_relay(request), state == "on", _user(request))


def _object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise Refused(f"the request is {len(payload)} bytes; at most {MAX_PAYLOAD}")
    try:
        request = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Refused(f"the request is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"the request is not JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the request is JSON this node will not read: {type(exc).__name__}") from None
    if not isinstance(request, dict):
        raise Refused(f"the request must be a JSON object, got {type(request).__name__}")
    return request


def _relay(request: dict[str, Any]) -> str:
    relay = request.get("relay")
    if not isinstance(relay, str) or not relay:
        raise Refused(f"relay must be a relay's name, got {_show(relay)}")
    return relay[:64]


def _user(request: dict[str, Any]) -> str:
    user = request.get("user")
    if user is None:
        return UNKNOWN_USER
    if not isinstance(user, str) or not user or not user.isprintable():
        raise Refused(f"user must be a name (printable text), got {_show(user)}")
    return user[:MAX_USER]


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:40] + "…"
