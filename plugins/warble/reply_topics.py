"""Where the Warble service may answer a client besides `<prefix>/warble/results/<id>`: the `reply_topics` policy.

A submission (or a history request) may name a reply topic: an MQTT v5
response topic, or `"reply_to"` in the JSON.  Anyone may submit, so a topic a
client names is an attempt to make the server publish there.  Answers go only
where a `reply_topics` filter matches, and never onto the cluster's own topics
(a job topic, a node's status): under the prefix, only below `<prefix>/replies/`.
"""

from __future__ import annotations

from typing import Any, Iterable

from pidaemon.bus import topic_matches
from pidaemon.names import topic_name_problem
from pidaemon.topics import Topics

MAX_REPLY_TOPIC = 512        # characters of a reply topic
PREFIX_PLACEHOLDER = "{prefix}"


def reply_topic_filter(value: Any) -> str:
    """A `reply_topics` entry: an MQTT topic filter, in which `{prefix}` stands for `mqtt.prefix`."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    levels = value.replace(PREFIX_PLACEHOLDER, "prefix").split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError("'#' must be a whole level, the last one")
        if "+" in level and level != "+":
            raise ValueError("'+' must be a whole level")
    problem = topic_name_problem("/".join("x" if level in ("+", "#") else level for level in levels))
    if problem:
        raise ValueError(problem)
    return value


class ReplyTopics:
    """The `reply_topics` filters of one node, `{prefix}` replaced by its MQTT prefix."""

    def __init__(self, topics: Topics, filters: Iterable[str]):
        self.filters = [f.replace(PREFIX_PLACEHOLDER, topics.prefix) for f in filters]
        self._own = topics.join("")
        self._replies = topics.join("replies", "")

    def check(self, topic: Any) -> tuple[str | None, str | None]:
        """(the topic, None) if answers may go to `topic`; (None, why not) otherwise; (None, None) if none given."""
        if topic is None or topic == "":
            return None, None
        if not isinstance(topic, str):
            problem = f"not a string but {type(topic).__name__}"
        elif (problem := topic_name_problem(topic)) is None:
            if len(topic) > MAX_REPLY_TOPIC:
                problem = f"longer than {MAX_REPLY_TOPIC} characters"
            elif not self._permitted(topic):
                problem = (f"not allowed: answers go only to {' or '.join(self.filters)}"
                           if self.filters else "not allowed: reply_topics is empty")
        if problem is None:
            return topic, None
        return None, f"reply topic {str(topic)[:80]!r} refused ({problem})"

    def allows(self, topic: str) -> bool:
        """Whether an answer may go to `topic` now.

        Asked again at every answer: a job queued before `reply_topics`
        changed may name a topic no longer allowed.
        """
        return topic_name_problem(topic) is None and self._permitted(topic)

    def _permitted(self, topic: str) -> bool:
        if topic.startswith(self._own) and not topic.startswith(self._replies):
            return False
        return any(topic_matches(topic_filter, topic) for topic_filter in self.filters)
