"""Discovery: the server announces where the broker is; a node with no broker configured finds it.

- `announce` (`announce.py`): the server's UDP broadcast and mDNS service;
- `discovery` (`discover.py`): a node listens for them (`pidaemon_find_broker`);
- `datagram.py`: the announcement's bytes, encoded and validated;
- `secret.py`: the shared secret both sides sign and check with.
"""
