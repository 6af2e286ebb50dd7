"""Posts from a social feed: the Mastodon poller against a local stand-in of a Mastodon instance.

The real service is on the internet, which tests may not reach; this HTTP server
answers `/api/v1/timelines/tag/<tag>` with statuses shaped like Mastodon's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pidaemon_plugins.warble.mastodon_feed import html_to_text

from tests.support.warble_cluster import InProcessCluster, wait_until

STATUSES = [
    {"id": "1001", "account": {"acct": "ada"},
     "content": "<p>Who has more digits? <a href=\"https://x/tags/pi\">#pi</a>{SETPRECISION(20);PRINT(2*ACOS(0))}</p>"},
    {"id": "1002", "account": {"acct": "bob@other.social"}, "content": "<p>#pi{PRINT(&quot;hi&quot;)}</p>"},
    {"id": "1003", "account": {"acct": "eve"}, "content": "<p>no program here, just #pi love</p>"},
]


class FakeMastodon(BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        FakeMastodon.requests.append(self.path)
        body = json.dumps(STATUSES).encode()  # always the whole timeline: re-reads must be harmless
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_html_to_text():
    assert html_to_text("<p>a &amp; b<br>c</p><p>#pi{PRINT(&quot;x&quot;)}</p>") == 'a & b\nc\n#pi{PRINT("x")}'


def test_feed_posts_are_queued_once_per_post(broker, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMastodon)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    instance = f"http://{host}"

    async def scenario():
        feed = {"mastodon_feed": {"instance": instance, "hashtag": "pi", "interval": 1}}
        async with InProcessCluster(broker.url, tmp_path, more_plugins=feed) as cluster:
            service = cluster.service
            await wait_until(lambda: len(FakeMastodon.requests) >= 3)  # the same posts read three times
            ada = f"ada@{host}"  # a local account is named after its instance
            await wait_until(lambda: len(service.history(ada)) == 1 and service.history(ada)[0]["state"] == "done")
            return service.history(ada), service.history("bob@other.social"), service.history(f"eve@{host}")

    try:
        ada, bob, eve = asyncio.run(scenario())
    finally:
        server.shutdown()
    assert len(ada) == 1 and ada[0]["result"]["output"] == ["3.1415926535897932385"]
    assert len(bob) == 1 and bob[0]["source"] == 'PRINT("hi")'
    assert len(eve) == 1 and eve[0]["state"] == "rejected"
    assert "since_id=1003" in FakeMastodon.requests[-1]
