"""The server's telemetry sink: readings into SQLite (`database.py`), optionally forwarded (`forwarder.py`)."""
