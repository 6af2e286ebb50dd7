"""Feeds Warble posts from a Mastodon hashtag timeline into the Warble service.

Polls `GET <instance>/api/v1/timelines/tag/<hashtag>?since_id=...` (public; a
token is optional) every `interval` seconds, turns each status's HTML into
text and hands it to the service through `pidaemon_warble_intake`.  The post id
(`mastodon:<host>:<status id>`) makes a re-read post count once; the last id
seen is kept in the node's state directory across restarts.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from html import unescape
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

from pidaemon import hookimpl
from pidaemon.schema import Integer, Number, String, settings

from . import hookspecs


class _TextOfHtml(HTMLParser):
    """Mastodon sends HTML: keep the text, turn <br> and </p> into newlines."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "p":
            self.parts.append("\n")

    def handle_data(self, data):
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return unescape("".join(parser.parts)).strip()


@settings
class MastodonFeedSettings:
    instance: str = String(pattern=r"https?://[^/\s]+", pattern_doc="an http(s)://host URL")
    hashtag: str = String(default="pi", pattern=r"[A-Za-z0-9_]+", pattern_doc="a hashtag without #")
    interval: float = Number(min=1, default=30, doc="seconds between two polls")
    limit: int = Integer(min=1, max=40, default=40, doc="statuses per poll")
    access_token: str | None = String(default=None)
    timeout: float = Number(min=1, default=15)


class MastodonFeed:
    config_schema = MastodonFeedSettings
    hookspecs = hookspecs

    def __init__(self, node, config: MastodonFeedSettings):
        self.node = node
        self.config = config
        self.host = urlsplit(config.instance).netloc
        self.state_file = node.state_dir / f"mastodon-{self.host}-{config.hashtag}.json"
        self.submit_post = None
        self.since_id: str | None = None
        self.stats = {"polls": 0, "posts": 0, "errors": 0}

    @hookimpl
    def pidaemon_warble_intake(self, node, submit_post):
        self.submit_post = submit_post
        self.since_id = self._load_since_id()
        node.spawn(self._poll_forever(), name="mastodon-feed")

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"mastodon_feed": dict(self.stats)}

    async def _poll_forever(self) -> None:
        while True:
            try:
                statuses = await asyncio.to_thread(self._fetch)
                self.stats["polls"] += 1
                for status in sorted(statuses, key=lambda s: int(s["id"])):
                    self._take(status)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.stats["errors"] += 1
                self.node.log.warning("mastodon feed %s #%s: %s", self.host, self.config.hashtag, exc)
            await asyncio.sleep(self.config.interval)

    def _fetch(self) -> list[dict]:
        url = (f"{self.config.instance.rstrip('/')}/api/v1/timelines/tag/{quote(self.config.hashtag)}"
               f"?limit={self.config.limit}" + (f"&since_id={quote(self.since_id)}" if self.since_id else ""))
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.config.access_token:
            request.add_header("Authorization", f"Bearer {self.config.access_token}")
        with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
            statuses = json.loads(response.read())
        if not isinstance(statuses, list):
            raise ValueError("the timeline is not a list of statuses")
        return statuses

    def _take(self, status: dict) -> None:
        status_id = str(status["id"])
        user = f"{status['account']['acct']}@{self.host}" if "@" not in status["account"]["acct"] \
            else status["account"]["acct"]
        answer = self.submit_post(f"mastodon:{self.host}:{status_id}", user, html_to_text(status["content"]))
        self.stats["posts"] += 1
        self.node.log.info("post %s by %s: %s", status_id, user, answer.get("status"))
        if self.since_id is None or int(status_id) > int(self.since_id):
            self.since_id = status_id
            self._save_since_id()

    def _load_since_id(self) -> str | None:
        try:
            return json.loads(self.state_file.read_text())["since_id"]
        except (OSError, ValueError, KeyError):
            return None

    def _save_since_id(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"since_id": self.since_id}))
