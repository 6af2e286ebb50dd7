"""Discovery: the server announces where the broker is; a node with no broker configured finds it.

- `announce` (`announce.py`): the server's UDP broadcast and mDNS service, and its answers to queries;
- `discovery` (`discover.py`): a node listens for them (`pidaemon_find_broker`), follows and goes back;
- `datagram.py`: the announcement's and the query's bytes, encoded and validated;
- `freshness.py`: what a node remembers of each server, to refuse what is replayed, stale or from the future;
- `counter.py`: the server's counter, which never goes back;
- `secret.py`: the shared secret both sides sign and check with (or `insecure: true`).
"""
