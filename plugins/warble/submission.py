"""The envelope of a Warble submission, whatever the intake (MQTT, HTTP, a feed), checked before any parsing.

What is checked: the id, the user name, the origin and the length of the
text; the program itself is parsed afterwards, by the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_NAME = 64  # characters of a user name (and of what a rejection keeps of an oversized post)
MAX_ORIGIN = 160  # characters of an origin ("mqtt:" + a client id, "http:" + an address)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Submission:
    """A submission as it entered, whatever the intake (MQTT, HTTP, a feed)."""

    user: str
    source: str
    job_id: str | None = None
    post_id: str | None = None
    reply_to: str | None = None        # allowed by `reply_topics`, or None
    correlation: bytes | None = None
    origin: str | None = None
    reply_refused: str | None = None   # why the reply topic asked for is not used

    def without_identity(self) -> "Submission":
        """For an envelope that is wrong itself: neither the client's id nor oversized text goes anywhere."""
        return replace(self, user=str(self.user)[:MAX_NAME], source=str(self.source)[:MAX_NAME], job_id=None,
                       post_id=None, origin=None)


def envelope_problem(user: Any, source: Any, job_id: str | None, origin: str | None, max_length: int) -> str | None:
    """What is wrong with a submission's envelope, before any parsing; None if nothing."""
    if job_id is not None and not ID_PATTERN.fullmatch(job_id):
        return "an id is 1-64 letters, digits, '_', '-' or '.'"
    if not isinstance(user, str) or not 0 < len(user) <= MAX_NAME or any(c in user for c in "+#/\0"):
        return f"a user name is 1-{MAX_NAME} characters without '/', '+', '#'"
    if origin is not None and (not isinstance(origin, str) or len(origin) > MAX_ORIGIN or _CONTROL.search(origin)
                               or origin.endswith(":")):
        return "a client_id is 1-128 characters without control characters"
    if len(source) > max_length:
        return f"the submission is {len(source)} characters long; at most {max_length} are read"
    return None
