"""The names the cluster's protocol allows, defined once.

A node id, a server id or a cluster name becomes one level of an MQTT topic
(`picluster/nodes/<id>/status`), so it is 1-64 letters, digits, `_`, `.` or
`-`, starting with a letter or digit: no `/`, no wildcard, nothing a shell or
a topic could misread.  A topic prefix is such words joined by `/`.

A topic the daemon publishes to must be a valid MQTT topic name, strictly: a
broker closes the connection of a client that publishes to a topic with a
control character or a Unicode non-character in it (mosquitto does), so one
hostile `reply_to` could otherwise knock a node off the broker.
"""

from __future__ import annotations

import re

NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
NAME_DOC = "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
TOPIC_WORD = r"[A-Za-z0-9_.\-]+"
TOPIC_PREFIX = TOPIC_WORD + r"(?:/" + TOPIC_WORD + r")*"
TOPIC_PREFIX_DOC = "topic levels of letters, digits, '_', '-', '.' joined by '/'"

_NAME = re.compile(NAME)
_TOPIC_PREFIX = re.compile(TOPIC_PREFIX)

MAX_TOPIC_BYTES = 65535  # MQTT's limit on a topic's UTF-8 length
# Wildcards, C0 and C1 controls (NUL included), lone surrogates, and the non-characters
# (U+FDD0..U+FDEF and the last two code points of every plane).
_NOT_IN_A_TOPIC_NAME = re.compile(
    "[+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"\\U{plane:04x}fffe\\U{plane:04x}ffff" for plane in range(17)) + "]")


def is_name(value: object) -> bool:
    """A valid node id, server id or cluster name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_topic_prefix(value: object) -> bool:
    return isinstance(value, str) and _TOPIC_PREFIX.fullmatch(value) is not None


def topic_name_problem(topic: object) -> str | None:
    """Why `topic` may not be published to (None when it may): MQTT's topic-name rules, strictly."""
    if not isinstance(topic, str):
        return f"not a string but {type(topic).__name__}"
    if not topic:
        return "empty"
    bad = _NOT_IN_A_TOPIC_NAME.search(topic)
    if bad is not None:
        char = bad.group()
        return "a wildcard (+ or #)" if char in "+#" else f"the character U+{ord(char):04X}, not allowed in a topic"
    if len(topic) * 4 > MAX_TOPIC_BYTES and len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"longer than {MAX_TOPIC_BYTES} bytes"
    return None
