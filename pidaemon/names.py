"""The names the cluster's protocol allows, defined once.

A node id, a server id or a cluster name becomes one level of an MQTT topic
(`picluster/nodes/<id>/status`), so it is 1-64 letters, digits, `_`, `.` or
`-`, starting with a letter or digit: no `/`, no wildcard, nothing a shell or
a topic could misread.  A topic prefix is such words joined by `/`.
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


def is_name(value: object) -> bool:
    """A valid node id, server id or cluster name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_topic_prefix(value: object) -> bool:
    return isinstance(value, str) and _TOPIC_PREFIX.fullmatch(value) is not None
