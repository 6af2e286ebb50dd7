"""The cluster's live dashboard: a model of the cluster from the bus, pushed to pages over a WebSocket.

The page itself is `static/` (plain HTML, CSS and JavaScript); the messages it
gets are described in docs/dashboard.md.
"""
