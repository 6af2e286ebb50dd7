"""What the `http` plugin offers the node's other plugins, found with `node.lookup(HttpService)`.

Plugins add routes through the `pidaemon_http_routes` hook; this type lets a
plugin that serves routes check, in `pidaemon_configure`, that the node has
an HTTP server at all (and say so clearly when it has not).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class HttpService(ABC):
    @property
    @abstractmethod
    def url(self) -> str | None:
        """http://HOST:PORT/ once listening, else None."""
